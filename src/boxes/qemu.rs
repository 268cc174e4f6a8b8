//! QEMU boxes: the shared debootstrap rootfs (with the recipe's `[qemu]` packages) made into a
//! bootable disk without mounting anything: an ext4 file system created from the folder with
//! `mke2fs -d`, converted to qcow2 with `qemu-img`, and the kernel and initrd copied out next
//! to it for direct kernel boot. Built once per recipe digest into
//! `$XDG_CACHE_HOME/pipe/boxes/qemu/<name>-<digest12>/`.
//!
//! # Login
//!
//! The box holds no login key. Each machine gets its own ed25519 key from pipe, whose public
//! half travels on the kernel command line (`pipe.ssh_key=<base64>`; direct kernel boot makes
//! the command line pipe's to choose). A unit of the box, `pipe-ssh-setup.service`, writes it
//! to `/run/pipe-ssh/root` before sshd starts, and sshd is configured to read authorized keys
//! from there too. `/run` is a tmpfs: the key never reaches the disk, so no layer or baked
//! image ever carries a key, and nothing needs scrubbing before a bake (Vagrant's insecure-key
//! swap and cloud-init both leave a key on disk). The same unit creates SSH host keys on first
//! boot: the box ships none, so machines never share host keys. Only ed25519 and ECDSA keys
//! ([`HOST_KEY_TYPES`]): `ssh-keygen -A` would add an RSA key, whose prime search takes seconds
//! of CPU on every first boot (tens of seconds under TCG) and delays sshd for a key type that
//! pipe's client and current OpenSSH clients do not pick first.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::rootfs::{self, in_path};
use super::{BoxError, BoxTarget, Recipe, cache_dir, lock_file};
use crate::ui::Printer;

/// Bumped whenever what this module adds to a rootfs changes.
pub const QEMU_BOX_VERSION: u32 = 4;
/// The ext4 label of the root file system (and what /etc/fstab mounts).
pub const ROOT_LABEL: &str = "pipe-root";
/// The kernel command line parameter carrying the login key (base64 of the public key line).
pub const KEY_PARAM: &str = "pipe.ssh_key";
/// Where the box's unit writes the login key for sshd.
pub const KEY_DIR: &str = "/run/pipe-ssh";
/// Units a Debian package enables that have nothing to do on a box's machines, disabled in
/// the image (when the recipe installs them) so they cost no boot time.
const UNNEEDED_AT_BOOT: &[&str] = &["e2scrub_reap.service"];
/// The SSH host key types a machine makes at first boot (and the only ones sshd offers).
pub const HOST_KEY_TYPES: &[&str] = &["ed25519", "ecdsa"];

/// A built qemu box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuBox {
    pub name: String,
    /// The recipe digest (qemu flavour) it was built from.
    pub digest: String,
    pub dir: PathBuf,
    pub disk: PathBuf,
    /// How machines boot it: direct kernel boot (recipe boxes) or its own bootloader with
    /// cloud-init (cloud images, see [`super::cloud`]).
    #[serde(flatten)]
    pub boot: Boot,
    /// Unix seconds.
    pub created: i64,
    /// Bytes of the qcow2 file.
    pub size: u64,
    /// True when this call built it.
    #[serde(skip_deserializing)]
    pub built: bool,
}

/// How a VM boots its disk (and so how it gets its login key).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "boot", rename_all = "snake_case")]
pub enum Boot {
    /// Direct kernel boot (recipe boxes); the login key on the kernel command line.
    Kernel { kernel: PathBuf, initrd: PathBuf },
    /// The disk's own bootloader (cloud images); the login key in a NoCloud seed for
    /// cloud-init, written into the VM's folder at every start.
    Disk,
}

/// `box.json` next to the disk: what the folder holds, written last.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    procedure: u32,
    name: String,
    digest: String,
    created: i64,
}

/// The folder all qemu boxes live in.
pub fn qemu_boxes_dir() -> PathBuf {
    cache_dir().join("boxes").join("qemu")
}

/// The digest a qemu box folder is named by: the recipe's plus this module's procedure.
pub fn qemu_digest(recipe: &Recipe) -> String {
    let mut h = sha2::Sha256::new();
    h.update(recipe.digest(BoxTarget::Qemu).as_bytes());
    h.update(QEMU_BOX_VERSION.to_le_bytes());
    hex::encode(h.finalize())
}

fn box_dir(name: &str, digest: &str) -> PathBuf {
    qemu_boxes_dir().join(format!("{name}-{}", &digest[..12]))
}

/// The built box for `recipe`, if there is one.
pub fn find_qemu_box(recipe: &Recipe) -> Option<QemuBox> {
    load(&box_dir(&recipe.name, &qemu_digest(recipe)))
}

fn load(dir: &Path) -> Option<QemuBox> {
    let text = std::fs::read_to_string(dir.join("box.json")).ok()?;
    let m: Manifest = serde_json::from_str(&text).ok()?;
    if m.procedure != QEMU_BOX_VERSION {
        return None;
    }
    let disk = dir.join("disk.qcow2");
    let size = std::fs::metadata(&disk).ok()?.len();
    let kernel = dir.join("vmlinuz");
    let initrd = dir.join("initrd.img");
    if !kernel.is_file() || !initrd.is_file() {
        return None;
    }
    Some(QemuBox {
        name: m.name,
        digest: m.digest,
        dir: dir.to_path_buf(),
        disk,
        boot: Boot::Kernel { kernel, initrd },
        created: m.created,
        size,
        built: false,
    })
}

/// The qemu boxes built from recipes, by name then newest first.
pub fn list_recipe_boxes() -> Vec<QemuBox> {
    let mut out: Vec<QemuBox> = std::fs::read_dir(qemu_boxes_dir())
        .map(|rd| rd.flatten().filter_map(|e| load(&e.path())).collect())
        .unwrap_or_default();
    out.sort_by(|a, b| a.name.cmp(&b.name).then(b.created.cmp(&a.created)));
    out
}

/// Removes every qemu box of `name`; returns the folders removed.
pub fn remove_qemu_box(name: &str) -> Result<Vec<PathBuf>, BoxError> {
    let found: Vec<QemuBox> = super::list_qemu_boxes()
        .into_iter()
        .filter(|b| b.name == name)
        .collect();
    if found.is_empty() {
        return Err(BoxError::NotBuilt {
            name: name.to_string(),
            target: "qemu",
        });
    }
    let mut removed = Vec::new();
    for b in found {
        std::fs::remove_dir_all(&b.dir).map_err(|source| BoxError::Io {
            name: name.to_string(),
            step: format!("remove {}", b.dir.display()),
            source,
        })?;
        removed.push(b.dir);
    }
    Ok(removed)
}

/// Builds the qemu box for `recipe` unless it is in the cache (or `force`). Safe to call
/// from several processes at once: one builds, the others wait and reuse.
pub fn build_qemu_box(
    recipe: &Recipe,
    printer: &Printer,
    force: bool,
) -> Result<QemuBox, BoxError> {
    let digest = qemu_digest(recipe);
    let io = |step: &str| {
        let name = recipe.name.clone();
        let step = step.to_string();
        move |source| BoxError::Io { name, step, source }
    };
    let lock_path = cache_dir()
        .join("locks")
        .join(format!("box-qemu-{}.lock", recipe.name));
    let _lock = lock_file(&lock_path).map_err(io("lock the box"))?;
    let dir = box_dir(&recipe.name, &digest);
    if !force && let Some(found) = load(&dir) {
        let step = printer.step(format!("box {} (qemu)", recipe.name));
        step.skipped(Some(format!("up to date ({})", dir.display())));
        return Ok(found);
    }
    for (tool, package) in [
        ("mke2fs", "e2fsprogs"),
        ("qemu-img", "qemu-utils"),
        ("systemctl", "systemd"),
    ] {
        if !in_path(tool) {
            return Err(BoxError::MissingTool { tool, package });
        }
    }
    let started = Instant::now();
    let rootfs = rootfs::build_rootfs(recipe, BoxTarget::Qemu, printer)?;
    configure_qemu(rootfs.path(), recipe).map_err(io("configure the rootfs for qemu"))?;

    // Build next to the final folder, then rename: a half-built box is never found.
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io("create the box folder"))?;
    let made = make_disk(recipe, rootfs.path(), &tmp, printer);
    let removed = rootfs.remove();
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if let Err(e) = removed {
        printer.warn(e.to_string(), e.hint());
    }
    let manifest = Manifest {
        procedure: QEMU_BOX_VERSION,
        name: recipe.name.clone(),
        digest: digest.clone(),
        created: chrono::Utc::now().timestamp(),
    };
    std::fs::write(
        tmp.join("box.json"),
        serde_json::to_vec_pretty(&manifest).expect("serializes"),
    )
    .map_err(io("write box.json"))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io("replace the old box"))?;
    }
    std::fs::rename(&tmp, &dir).map_err(io("move the box into place"))?;
    let built = load(&dir).ok_or(BoxError::NotBuilt {
        name: recipe.name.clone(),
        target: "qemu",
    })?;
    printer.info(format!(
        "box {} (qemu) built in {:.0}s ({}, {} MB)",
        recipe.name,
        started.elapsed().as_secs_f64(),
        built.disk.display(),
        built.size / 1_000_000
    ));
    Ok(QemuBox {
        built: true,
        ..built
    })
}

/// What a VM needs that a container does not (see boxes/debian-12.toml).
fn configure_qemu(root: &Path, recipe: &Recipe) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let write = |rel: &str, text: &str, mode: u32| -> std::io::Result<()> {
        let p = root.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, text)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
    };
    // x-systemd.growfs: a machine whose disk is bigger than the box (`disk_size`) gets its
    // root file system grown online at boot by systemd-growfs, no resize2fs in the box.
    write(
        "etc/fstab",
        &format!("LABEL={ROOT_LABEL} / ext4 defaults,errors=remount-ro,x-systemd.growfs 0 1\n"),
        0o644,
    )?;
    write(
        "etc/systemd/network/80-pipe-dhcp.network",
        "# pipe: DHCP on every ethernet interface (QEMU user networking hands out 10.0.2.15).\n[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n",
        0o644,
    )?;
    // DNS through systemd-resolved (configure_common left an empty file).
    let resolv = root.join("etc/resolv.conf");
    let _ = std::fs::remove_file(&resolv);
    std::os::unix::fs::symlink("../run/systemd/resolve/stub-resolv.conf", &resolv)?;
    // An empty machine-id: systemd makes a new one at first boot, per machine.
    write("etc/machine-id", "", 0o444)?;
    let _ = std::fs::remove_file(root.join("var/lib/dbus/machine-id"));
    // Host keys are made at first boot, per machine.
    if let Ok(rd) = std::fs::read_dir(root.join("etc/ssh")) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("ssh_host_") {
                std::fs::remove_file(e.path())?;
            }
        }
    }
    write(
        "usr/local/lib/pipe/ssh-setup",
        &format!(
            r#"#!/bin/sh
# pipe: before sshd starts, make missing host keys and install the login key pipe handed
# over on the kernel command line ({KEY_PARAM}=<base64>) into {KEY_DIR} (a tmpfs).
set -e
for t in {types}; do
  [ -f /etc/ssh/ssh_host_${{t}}_key ] || ssh-keygen -q -t "$t" -N '' -f /etc/ssh/ssh_host_${{t}}_key
done
key=
for w in $(cat /proc/cmdline); do
  case "$w" in {KEY_PARAM}=*) key=${{w#{KEY_PARAM}=}} ;; esac
done
[ -n "$key" ] || exit 0
mkdir -p {KEY_DIR}
chmod 0755 {KEY_DIR}
umask 077
printf '%s' "$key" | base64 -d > {KEY_DIR}/root.new
mv {KEY_DIR}/root.new {KEY_DIR}/root
"#,
            types = HOST_KEY_TYPES.join(" ")
        ),
        0o755,
    )?;
    write(
        "etc/systemd/system/pipe-ssh-setup.service",
        "[Unit]\nDescription=pipe: SSH host keys and login key\nBefore=ssh.service\nAfter=local-fs.target\nDefaultDependencies=no\n\n[Service]\nType=oneshot\nExecStart=/usr/local/lib/pipe/ssh-setup\nRemainAfterExit=yes\n\n[Install]\nWantedBy=multi-user.target ssh.service\n",
        0o644,
    )?;
    let host_keys: String = HOST_KEY_TYPES
        .iter()
        .map(|t| format!("HostKey /etc/ssh/ssh_host_{t}_key\n"))
        .collect();
    write(
        "etc/ssh/sshd_config.d/pipe.conf",
        &format!(
            "# pipe: the per-machine login key lives in {KEY_DIR} (tmpfs), see pipe-ssh-setup.service.\nAuthorizedKeysFile .ssh/authorized_keys {KEY_DIR}/%u\nUseDNS no\n# The host keys pipe-ssh-setup.service makes at first boot (no RSA key).\n{host_keys}"
        ),
        0o644,
    )?;
    let mut units: Vec<String> = recipe.qemu.services.clone();
    units.push("pipe-ssh-setup.service".into());
    systemctl_in(root, "enable", &units)?;
    // e2fsprogs enables e2scrub_reap.service, which looks for stale snapshots of LVM volumes
    // at every boot. The box's root is plain ext4 on a virtio disk, so it finds none, but it
    // runs as sshd starts and costs seconds of CPU there (more than 10 s under TCG).
    let unneeded: Vec<&str> = UNNEEDED_AT_BOOT
        .iter()
        .copied()
        .filter(|u| root.join("lib/systemd/system").join(u).is_file())
        .collect();
    if !unneeded.is_empty() {
        systemctl_in(root, "disable", &unneeded)?;
    }
    Ok(())
}

/// `systemctl --root=ROOT VERB UNITS...`: enables or disables units in the image, offline.
fn systemctl_in(
    root: &Path,
    verb: &str,
    units: &[impl AsRef<std::ffi::OsStr>],
) -> std::io::Result<()> {
    crate::process::run(
        Command::new("systemctl")
            .arg(format!("--root={}", root.display()))
            .arg(verb)
            .args(units),
    )?;
    Ok(())
}

/// The newest file in /boot starting with `prefix` (vmlinuz-*, initrd.img-*).
fn newest_boot_file(root: &Path, prefix: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root.join("boot"))
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    found.sort();
    found.pop()
}

/// ext4 from the folder (no mounts), qcow2 from that, kernel and initrd beside it.
fn make_disk(recipe: &Recipe, root: &Path, out: &Path, printer: &Printer) -> Result<(), BoxError> {
    let io = |step: &str| {
        let name = recipe.name.clone();
        let step = step.to_string();
        move |source| BoxError::Io { name, step, source }
    };
    let kernel = newest_boot_file(root, "vmlinuz-").ok_or_else(|| BoxError::Usage {
        message: format!(
            "box {}: no kernel in /boot; a qemu box needs a kernel package in [qemu] packages",
            recipe.name
        ),
        hint: Some("add \"linux-image-cloud-amd64\" to the recipe's [qemu] packages".into()),
    })?;
    let initrd = newest_boot_file(root, "initrd.img-").ok_or_else(|| BoxError::Usage {
        message: format!("box {}: no initrd in /boot", recipe.name),
        hint: Some("the kernel package installs initramfs-tools, which makes one".into()),
    })?;
    std::fs::copy(&kernel, out.join("vmlinuz")).map_err(io("copy the kernel"))?;
    std::fs::copy(&initrd, out.join("initrd.img")).map_err(io("copy the initrd"))?;

    let size = recipe.qemu.size.clone().unwrap_or_else(|| "4G".into());
    let raw = out.join("disk.raw");
    let step = printer.step(format!("box {}: ext4 file system ({size})", recipe.name));
    let mut mkfs = Command::new("mke2fs");
    mkfs.args([
        "-q",
        "-F",
        "-t",
        "ext4",
        "-L",
        ROOT_LABEL,
        "-E",
        "root_owner=0:0",
        "-d",
    ])
    .arg(root)
    .arg(&raw)
    .arg(&size);
    let res = rootfs::run_streamed(mkfs, recipe, "mke2fs", printer, &|_| {});
    match res {
        Ok(()) => step.done(None),
        Err(e) => {
            step.failed(None);
            return Err(e);
        }
    }

    let step = printer.step(format!("box {}: qcow2", recipe.name));
    let mut convert = Command::new("qemu-img");
    convert
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(out.join("disk.qcow2"));
    let res = rootfs::run_streamed(convert, recipe, "qemu-img convert", printer, &|_| {});
    let _ = std::fs::remove_file(&raw);
    match res {
        Ok(()) => step.done(None),
        Err(e) => {
            step.failed(None);
            return Err(e);
        }
    }
    Ok(())
}
