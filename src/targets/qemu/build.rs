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
use crate::config::{LayerName, QemuSettings};
use crate::error::{Error, Result};
use crate::layers::digest::Digest;
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

    /// Waits until a started VM answers SSH and (on a cloud image) cloud-init is done with
    /// this boot, saying both; returns the connected communicator and how long SSH took.
    pub fn reach(
        &self,
        vm: &vm::Vm,
        name: &str,
        printer: &Printer,
    ) -> Result<(crate::communicators::ssh::SshComm, Duration)> {
        printer.info(format!(
            "{name}: booting ({}: {})",
            self.accel.accel, self.accel.reason
        ));
        let (comm, took) = vm.wait_for_ssh(self.ssh_timeout)?;
        printer.info(format!(
            "{name}: SSH up {:.1}s after start ({})",
            took.as_secs_f64(),
            self.accel.accel
        ));
        // Nothing may race cloud-init's modules, nor sealing its last writes.
        self.settle(&comm, name, printer)?;
        Ok((comm, took))
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

/// What no layer keeps: host keys and machine-id (made anew per machine at boot), unused
/// blocks (so the overlay holds only what the layer wrote), unwritten data. On a cloud image
/// also the build machine's login key, which cloud-init wrote into authorized_keys, and
/// cloud-init's state and logs (`cloud-init clean`), so that every machine booted from the
/// layer is a first boot to cloud-init.
pub fn seal(comm: &dyn Communicator, boot: &Boot, login_key: Option<&str>) -> Result<()> {
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
        .map_err(|e| Error::runtime(format!("sealing the layer: {e}"), None).caused_by(e))?;
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
