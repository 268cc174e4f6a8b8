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
use crate::communicators::Communicator;
use crate::config::{LayerName, QemuSettings};
use crate::error::Result;
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
            package_cache: None,
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

/// Seals a layer (see [`crate::targets::guest::seal`]); on a cloud image (booted from its own
/// disk) also the login key cloud-init installed and cloud-init's state.
pub fn seal(comm: &dyn Communicator, boot: &Boot, login_key: Option<&str>) -> Result<()> {
    crate::targets::guest::seal(comm, *boot == Boot::Disk, login_key)
}
