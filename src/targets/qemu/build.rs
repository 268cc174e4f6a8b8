//! Building layers on QEMU: a VM booted from a copy-on-write overlay on the parent (the box
//! disk, or the base layer), provisioned over SSH by the same provisioners as on Docker, shut
//! down cleanly, and kept as `<layer>-<digest>.qcow2` in the layer cache. A layer whose file
//! exists is reused, not rebuilt.
//!
//! Before a layer is sealed, the build machine's SSH host keys and machine-id are removed, so
//! every machine booted from it makes its own; the login key never was on disk (see
//! [`crate::boxes::qemu`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::accel::Choice;
use super::disk;
use super::vm::{self, Boot, VmSpec};
use crate::boxes::qemu::QemuBox;
use crate::communicators::{Collect, Communicator, ExecRequest};
use crate::config::{Layer, LayerName, QemuSettings};
use crate::error::{Error, Result};
use crate::layers::digest::Digest;
use crate::plan::Plan;
use crate::provisioners::{self, ProvisionContext};
use crate::runner::{Resource, Runner};
use crate::ui::Printer;

/// How long a clean shutdown may take before QEMU is stopped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(120);

/// What every VM of a run shares.
pub struct QemuEnv<'a> {
    pub qbox: &'a QemuBox,
    pub accel: Choice,
    pub settings: QemuSettings,
    /// How long to wait for SSH after boot.
    pub ssh_timeout: Duration,
}

impl QemuEnv<'_> {
    /// The VM spec for `disk` in `dir`.
    pub fn spec(&self, name: &str, dir: &Path, disk: &Path, forwards: Vec<(u16, u16)>) -> VmSpec {
        VmSpec {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            disk: disk.to_path_buf(),
            boot: self.qbox.boot.clone(),
            cpus: self.settings.cpus,
            memory: self.settings.memory,
            accel: self.accel.accel,
            forwards,
        }
    }

    /// On a cloud image, waits until cloud-init is done with this boot (SSH answers before its
    /// last modules ran), warning when it reports an error. Nothing to wait for otherwise.
    pub fn settle(&self, comm: &dyn Communicator, name: &str, printer: &Printer) -> Result<()> {
        if self.qbox.boot != Boot::Disk {
            return Ok(());
        }
        let status = vm::wait_for_cloud_init(comm, self.ssh_timeout)?;
        if status.contains("error") {
            printer.warn(
                format!("{name}: cloud-init reports an error ({status})"),
                Some("its log is /var/log/cloud-init.log on the machine; keep the machine with --keep-on-error to read it".into()),
            );
        }
        Ok(())
    }
}

/// The cached file of a layer.
pub fn layer_path(pipeline: &str, layer: LayerName, digest: &Digest) -> PathBuf {
    disk::layers_dir(pipeline).join(format!("{layer}-{}.qcow2", digest.hex()))
}

/// Builds (or reuses) the base layer on the box, then the app layer on it; returns both.
pub fn build_layers(
    runner: &mut Runner<'_>,
    env: &QemuEnv<'_>,
    plan: &Plan,
    parent: &Path,
    keep_on_error: bool,
    printer: &Printer,
) -> Result<(PathBuf, PathBuf)> {
    let base = build_layer(
        runner,
        env,
        plan,
        LayerName::Base,
        parent,
        keep_on_error,
        printer,
    )?;
    let app = build_layer(
        runner,
        env,
        plan,
        LayerName::App,
        &base,
        keep_on_error,
        printer,
    )?;
    Ok((base, app))
}

/// Builds one layer on `parent` (a qcow2 file) unless its file exists; returns its path.
pub fn build_layer(
    runner: &mut Runner<'_>,
    env: &QemuEnv<'_>,
    plan: &Plan,
    name: LayerName,
    parent: &Path,
    keep_on_error: bool,
    printer: &Printer,
) -> Result<PathBuf> {
    let pipeline = plan.pf.pipeline.name.value.as_str();
    let (digest, layer): (Digest, &Layer) = match name {
        LayerName::Base => (plan.digests.base, &plan.pf.base),
        LayerName::App => (plan.digests.app, &plan.pf.app),
    };
    let path = layer_path(pipeline, name, &digest);
    let io = |what: String| move |e: std::io::Error| Error::runtime(format!("{what}: {e}"), None);
    std::fs::create_dir_all(path.parent().expect("in a folder")).map_err(io(format!(
        "creating {}",
        disk::layers_dir(pipeline).display()
    )))?;
    // Another run building the same layer: wait for it, then reuse its result.
    let _lock = crate::boxes::lock_file(&path.with_extension("lock"))
        .map_err(io(format!("locking {}", path.display())))?;
    if path.is_file() {
        let step = printer.step(format!("{name} layer"));
        step.skipped(Some(format!(
            "reusing {} (digest unchanged)",
            path.file_name().unwrap_or_default().to_string_lossy()
        )));
        return Ok(path);
    }
    let run_id = runner.run_id();
    let suffix = &run_id[run_id.len().saturating_sub(6)..];
    runner.step(&format!("build {name} layer {} on qemu", digest.short()), |r| {
        let tmp = path.with_extension(format!("qcow2.tmp-{suffix}"));
        let dir = crate::state::dir(&plan.pf.root)
            .join("qemu")
            .join(format!("build-{name}-{suffix}"));
        let vm_name = format!("pipe-{pipeline}-build-{name}-{suffix}");
        let spec = env.spec(&vm_name, &dir, &tmp, Vec::new());
        let res = Resource::QemuMachine {
            pidfile: vm::pidfile(&dir),
            overlay: tmp.clone(),
        };
        let (cdir, ctmp) = (dir.clone(), tmp.clone());
        let machine = r.create(
            res.clone(),
            || {
                // Layers keep the box's size (a recipe's `[qemu] size`); `disk_size` is the
                // machine's disk, so one cached layer serves every environment.
                disk::create_overlay(parent, &tmp, None)?;
                vm::start(&spec)
            },
            move || remove_vm(&cdir, &ctmp),
        )?;
        printer.info(format!(
            "{vm_name}: booting ({}: {})",
            env.accel.accel, env.accel.reason
        ));
        let built = (|| {
            let (comm, took) = machine.wait_for_ssh(env.ssh_timeout)?;
            printer.info(format!(
                "{vm_name}: SSH up {:.1}s after start ({})",
                took.as_secs_f64(),
                env.accel.accel
            ));
            // Provisioning must not race cloud-init's modules, nor sealing its last writes.
            env.settle(&comm, &vm_name, printer)?;
            let pctx = ProvisionContext {
                comm: &comm,
                printer,
                root: &plan.pf.root,
                template: &plan.template,
                build_env: plan.trust.env(),
            };
            plan.trust.install(&pctx)?;
            provisioners::run_layer(name, layer, &pctx)?;
            plan.trust.remove(&pctx)?;
            seal(&comm, &spec.boot, vm::public_key(&dir).as_deref())?;
            drop(comm);
            Ok(())
        })();
        if let Err(err) = built {
            if keep_on_error && !matches!(err, Error::Interrupted) {
                r.keep(&res)?;
                printer.warn(
                    format!("kept the build machine {vm_name} (--keep-on-error)"),
                    Some(format!(
                        "log in with `ssh -i {} -p {} -o StrictHostKeyChecking=no root@127.0.0.1`; its console is {}; stop it with `kill $(cat {})`",
                        dir.join("id_ed25519").display(),
                        machine.ssh_port,
                        machine.console().display(),
                        machine.pidfile().display()
                    )),
                );
            }
            return Err(err);
        }
        machine
            .shutdown(SHUTDOWN_GRACE)
            .map_err(|e| Error::runtime(format!("stopping {vm_name}: {e}"), None))?;
        std::fs::rename(&tmp, &path).map_err(io(format!("keeping {}", path.display())))?;
        r.dispose(&res)?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(path.clone())
    })
}

/// What no layer keeps: host keys and machine-id (made anew per machine at boot), unused
/// blocks (so the overlay holds only what the layer wrote), unwritten data. On a cloud image
/// also the build machine's login key, which cloud-init wrote into authorized_keys, and
/// cloud-init's state and logs (`cloud-init clean`), so that every machine booted from the
/// layer is a first boot to cloud-init.
fn seal(comm: &dyn Communicator, boot: &Boot, login_key: Option<&str>) -> Result<()> {
    let mut script = String::new();
    if *boot == Boot::Disk {
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
    let mut out = Collect::default();
    let code = comm
        .exec(
            &ExecRequest {
                timeout: Some(Duration::from_secs(300)),
                ..ExecRequest::shell(script)
            },
            &mut out,
        )
        .map_err(|e| Error::runtime(format!("sealing the layer: {e}"), None))?;
    if code != 0 {
        return Err(Error::runtime(
            format!(
                "sealing the layer failed ({code}): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            None,
        ));
    }
    Ok(())
}

/// Stops a VM and removes its overlay and folder, keeping only the console log (so a failed
/// boot can still be read).
pub fn remove_vm(dir: &Path, overlay: &Path) -> std::result::Result<(), String> {
    vm::stop(dir, Duration::from_secs(5))?;
    match std::fs::remove_file(overlay) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("removing {}: {e}", overlay.display()));
        }
        _ => {}
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_name() != "console.log" {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}
