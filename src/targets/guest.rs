//! What every VM target does inside a Linux guest over a communicator, whatever started the
//! VM (QEMU, EC2): the `[[service]]`s as systemd units and waiting for their ports, waiting for
//! cloud-init, and sealing a build machine before it becomes a layer.

use std::time::Duration;

use crate::communicators::{Collect, Communicator, ExecRequest};
use crate::error::{Error, Result};
use crate::services::{self, RUN_DIR, RenderedService};

/// Installs each service as `pipe-<name>.service` with its environment in `/run/pipe/env`,
/// and (re)starts them all.
pub fn deliver_units(comm: &dyn Communicator, rendered: &[RenderedService]) -> Result<()> {
    install_units(
        comm,
        rendered,
        &format!("{RUN_DIR}/env"),
        Steps {
            systemctl: "enable --quiet {u} && systemctl restart {u}",
            doing: "delivering services to",
            failed: "starting the services on",
        },
    )
}

/// Bakes the services into the machine for an image that starts them at boot by itself (an
/// AMI an Auto Scaling group launches): units enabled (not started), each with its
/// environment in [`services::BAKED_ENV_DIR`], leaving out every variable whose value holds a
/// secret (those come at boot, into `/run/pipe/env/<name>`, or not at all). Returns the names
/// of the variables left out.
pub fn bake_units(
    comm: &dyn Communicator,
    rendered: &[RenderedService],
    secrets: &[&str],
) -> Result<Vec<String>> {
    let mut left_out = Vec::new();
    let kept: Vec<RenderedService> = rendered
        .iter()
        .map(|s| {
            let mut kept = s.clone();
            kept.env.retain(|k, v| {
                let secret = secrets.iter().any(|x| !x.is_empty() && v.contains(x));
                if secret {
                    left_out.push(format!("{}.{k}", s.name));
                }
                !secret
            });
            kept
        })
        .collect();
    install_units(
        comm,
        &kept,
        services::BAKED_ENV_DIR,
        Steps {
            systemctl: "enable --quiet {u}",
            doing: "baking the services into",
            failed: "enabling the services on",
        },
    )?;
    Ok(left_out)
}

/// What [`install_units`] runs after `daemon-reload` (`{u}`: the units) and how its errors
/// read.
struct Steps {
    systemctl: &'static str,
    doing: &'static str,
    failed: &'static str,
}

/// Writes each service's environment file into `env_dir` (0600) and its unit, then runs
/// `systemctl daemon-reload && systemctl <steps.systemctl>`.
fn install_units(
    comm: &dyn Communicator,
    rendered: &[RenderedService],
    env_dir: &str,
    steps: Steps,
) -> Result<()> {
    if rendered.is_empty() {
        return Ok(());
    }
    let io = |e: crate::communicators::ExecError| match e {
        crate::communicators::ExecError::Interrupted => Error::Interrupted,
        e => Error::runtime(format!("{} {}: {e}", steps.doing, comm.describe()), None),
    };
    let mut units = Vec::new();
    for s in rendered {
        comm.upload_bytes(
            services::systemd_env_file(s).as_bytes(),
            &format!("{env_dir}/{}", s.name),
            0o600,
        )
        .map_err(io)?;
        let unit = services::systemd_unit_name(&s.name);
        comm.upload_bytes(
            services::systemd_unit(s).as_bytes(),
            &format!("/etc/systemd/system/{unit}"),
            0o644,
        )
        .map_err(io)?;
        units.push(unit);
    }
    let script = format!(
        "systemctl daemon-reload && systemctl {}",
        steps.systemctl.replace("{u}", &units.join(" "))
    );
    let mut out = Collect::default();
    let code = comm
        .exec(
            &ExecRequest {
                timeout: Some(Duration::from_secs(120)),
                ..ExecRequest::shell(script)
            },
            &mut out,
        )
        .map_err(io)?;
    if code != 0 {
        return Err(Error::runtime(
            format!(
                "{} {} failed ({code}): {}",
                steps.failed,
                comm.describe(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            None,
        ));
    }
    Ok(())
}

/// Waits until every service with a port listens; on timeout the error shows its journal.
pub fn wait_ready(
    comm: &dyn Communicator,
    rendered: &[RenderedService],
    timeout: Duration,
) -> Result<()> {
    let log = crate::targets::ready::LogTail {
        command: |name| {
            ExecRequest::shell(format!(
                "journalctl --no-pager -n 20 -u {}",
                services::systemd_unit_name(name)
            ))
        },
        title: "its journal",
    };
    crate::targets::ready::wait_listening(comm, rendered, timeout, Duration::from_millis(500), &log)
}

/// Waits until cloud-init has finished with this boot of a cloud image (its last stage can
/// still run when SSH already answers); returns its `status:` line. No cloud-init: nothing to
/// wait for.
pub fn wait_for_cloud_init(comm: &dyn Communicator, timeout: Duration) -> Result<String> {
    let script = "command -v cloud-init >/dev/null || { echo 'status: absent'; exit 0; }; cloud-init status --wait >/dev/null 2>&1; cloud-init status | head -n1";
    let mut out = Collect::default();
    comm.exec(
        &ExecRequest {
            timeout: Some(timeout),
            ..ExecRequest::shell(script)
        },
        &mut out,
    )
    .map_err(|e| {
        Error::runtime(
            format!("waiting for cloud-init on {}: {e}", comm.describe()),
            None,
        )
    })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What no layer keeps: host keys and machine-id (made anew per machine at boot), unused
/// blocks (so the image holds only what the layer wrote), unwritten data. With `cloud` (a
/// machine that cloud-init or the cloud set up) also the build machine's login key, which was
/// written into authorized_keys, and cloud-init's state and logs (`cloud-init clean`), so that
/// every machine started from the layer is a first boot.
pub fn seal(comm: &dyn Communicator, cloud: bool, login_key: Option<&str>) -> Result<()> {
    let mut script = String::new();
    if cloud {
        // The key's base64 part: letters, digits, `+`, `/`, `=`; safe in single quotes.
        if let Some(blob) = login_key.and_then(|k| k.split_whitespace().nth(1)) {
            script.push_str(&format!(
                "for f in /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys; do [ -f \"$f\" ] || continue; grep -vF '{blob}' \"$f\" > \"$f.pipe-seal\" || true; cat \"$f.pipe-seal\" > \"$f\"; rm -f \"$f.pipe-seal\"; done; "
            ));
        }
        script.push_str(
            "if command -v cloud-init >/dev/null; then cloud-init clean --logs >/dev/null; fi; ",
        );
    }
    script.push_str("rm -f /etc/ssh/ssh_host_*; : > /etc/machine-id; rm -f /var/lib/dbus/machine-id; fstrim -a >/dev/null 2>&1 || true; sync");
    run_checked(
        comm,
        script,
        Duration::from_secs(300),
        "sealing the layer",
        None,
    )
}

/// Runs a shell script in the guest, bounded by `timeout`; an error names `what`, the exit
/// code and stderr, with `hint`.
pub fn run_checked(
    comm: &dyn Communicator,
    script: String,
    timeout: Duration,
    what: &str,
    hint: Option<String>,
) -> Result<()> {
    let mut out = Collect::default();
    let code = comm
        .exec(
            &ExecRequest {
                timeout: Some(timeout),
                ..ExecRequest::shell(script)
            },
            &mut out,
        )
        .map_err(|e| Error::runtime(format!("{what}: {e}"), None).caused_by(e))?;
    if code != 0 {
        return Err(Error::runtime(
            format!(
                "{what} failed ({code}): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            hint,
        ));
    }
    Ok(())
}

/// Makes a fresh ed25519 key pair at `key` (and `key.pub`), replacing one that is there: the
/// login key of a VM or a build instance, which never leaves the host.
pub fn new_login_key(key: &std::path::Path) -> Result<()> {
    let _ = std::fs::remove_file(key);
    let _ = std::fs::remove_file(key.with_extension("pub"));
    crate::process::run(
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "pipe", "-f"])
            .arg(key),
    )
    .map_err(|e| {
        let hint = e
            .not_started()
            .then(|| "install openssh-client".to_string());
        Error::runtime(e.to_string(), hint)
    })?;
    Ok(())
}
