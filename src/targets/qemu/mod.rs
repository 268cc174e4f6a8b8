//! The qemu target: local VMs and qcow2 layers from the same Pipelinefile as Docker.
//!
//! - Boxes come from [`crate::boxes::qemu`]: a qcow2 disk plus kernel and initrd, booted
//!   directly (no bootloader), the login key handed over on the kernel command line; or from
//!   [`crate::boxes::cloud`]: a cloud image booted on its own bootloader, the login key handed
//!   to cloud-init in a NoCloud seed (see [`vm::Boot`]).
//! - [`vm`]: one detached QEMU process per machine, its folder holding the pid file, the QMP
//!   socket, the serial console log and the per-machine key; SSH and service ports forwarded
//!   on 127.0.0.1 only (user-mode networking, no root or bridge needed).
//! - [`accel`]: KVM only when a probe guest actually ran on it, else TCG, and pipe says which.
//! - [`build`]: layers as qcow2 overlays named by digest in the cache, reused like images.
//! - [`machine`]: `pipe up` machines with their `[[service]]`s as systemd units.
//! - [`package_cache`]: the box's package cache as a second disk of build machines.
//! - [`QemuTarget`]: the target interface; a serving VM is booted from a release's artifact.
//!
//! Every QEMU process and overlay a run creates is journaled first (`Resource::QemuMachine`),
//! so failures, Ctrl-C and SIGTERM leave nothing running and nothing half-written behind.

pub mod accel;
pub mod bake;
pub mod build;
pub mod disk;
pub mod local;
pub mod machine;
pub mod package_cache;
mod target;
pub mod up;
pub mod vm;

pub use target::{QemuTarget, ROLE as SERVING_ROLE, env_settings, find_serving};

/// The machine type every VM (and the KVM probe) uses.
pub const MACHINE: &str = "q35";

/// The QEMU system emulator pipe runs.
pub const QEMU: &str = "qemu-system-x86_64";
