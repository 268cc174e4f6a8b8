//! The package cache on qemu (see [`crate::boxes::package_cache`]): the box's cache folder
//! reaches a build VM as a second disk, never as part of the layer's disk.
//!
//! Why a disk: the boxes' kernel (Debian's cloud kernel) has no 9p, and virtiofs would need a
//! host daemon (virtiofsd) that pipe does not otherwise require. So, like a box's root file
//! system, the cache folder is made into an ext4 image with `mke2fs -d` (nothing mounted on the
//! host), sparse, with room for what the build downloads, and attached to build VMs only
//! ([`drive_args`]). The guest mounts it by its label at [`MOUNT`] before provisioning; the
//! same environment as on docker points apt, npm and pip there, and apt's hard links work as
//! they do on the host (it is ext4). Before the layer is sealed the guest unmounts it and
//! removes the mount point, so the layer holds nothing of it. Once the VM has stopped, what
//! the build added to the store (`apt/debs`, `npm`, `pip`) is read back out of the image with
//! `debugfs rdump` and moved into the box's folder ([`bring_back`]); the image goes with the
//! VM's folder.
//!
//! What a build that fails downloaded is not brought back (its VM is removed as it is).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::boxes::package_cache::{MOUNT, merge_back};
use crate::communicators::Communicator;
use crate::error::{Error, Result};
use crate::process;

/// The ext4 label of the cache disk, by which the guest mounts it.
pub const LABEL: &str = "pipe-cache";

/// The image's size: sparse, so only what the cache holds and the build writes takes room on
/// the host; what is left is the room a build has for new downloads.
const IMAGE_SIZE: &str = "32G";

/// The cache disk of a build VM, in the VM's folder (removed with it on every path).
pub fn image_path(vm_dir: &Path) -> PathBuf {
    vm_dir.join("package-cache.img")
}

/// The host tool the cache disk needs that is missing (both come with e2fsprogs, which recipe
/// boxes need anyway; a cloud image box does not).
pub fn missing_tool() -> Option<&'static str> {
    ["mke2fs", "debugfs"]
        .into_iter()
        .find(|t| !crate::boxes::rootfs::in_path(t))
}

/// `mke2fs` arguments for an image of `cache_dir`: no journal (the image is thrown away after
/// the build) and inode tables left for the kernel, which [`mount_command`] tells not to
/// initialise them (that would write gigabytes of zeros into the sparse file).
fn mkfs_args(cache_dir: &Path, image: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "-q",
        "-F",
        "-t",
        "ext4",
        "-L",
        LABEL,
        "-O",
        "^has_journal",
        "-E",
        "root_owner=0:0,lazy_itable_init=1,nodiscard",
        "-d",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push(cache_dir.into());
    args.push(image.into());
    args.push(IMAGE_SIZE.into());
    args
}

/// Makes the cache disk `image` from the box's cache folder.
pub fn make_image(cache_dir: &Path, image: &Path) -> Result<()> {
    let mut cmd = Command::new("mke2fs");
    cmd.args(mkfs_args(cache_dir, image));
    process::run(&mut cmd).map(|_| ()).map_err(|e| {
        Error::runtime(
            format!(
                "making the package cache disk {} from {}: {e}",
                image.display(),
                cache_dir.display()
            ),
            Some(
                "mke2fs comes with e2fsprogs; or turn the cache off with `package_cache = false` in [build]"
                    .to_string(),
            ),
        )
    })
}

/// QEMU arguments that attach the cache disk (raw, its own virtio disk after the others).
pub fn drive_args(image: &Path) -> Vec<OsString> {
    vec![
        "-drive".into(),
        format!(
            "file={},if=none,id=pipecache,format=raw,discard=unmap",
            image.display()
        )
        .into(),
        "-device".into(),
        "virtio-blk-pci,drive=pipecache,serial=pipecache".into(),
    ]
}

/// The guest's command that mounts the cache disk at [`MOUNT`].
pub fn mount_command() -> String {
    format!("mkdir -p {MOUNT} && mount -t ext4 -o noinit_itable,nosuid,nodev -L {LABEL} {MOUNT}")
}

/// The guest's command that unmounts it (lazily when a process the provisioners left still
/// holds it: the VM's shutdown finishes the job) and removes the mount point.
pub fn unmount_command() -> String {
    format!(
        "cd / && sync && if mountpoint -q {MOUNT}; then umount {MOUNT} || umount -l {MOUNT}; fi && if [ -e {MOUNT} ]; then rmdir {MOUNT}; fi"
    )
}

/// Runs a guest command of this module (`what` names it in the error).
pub fn in_guest(comm: &dyn Communicator, script: String, what: &str) -> Result<()> {
    crate::targets::guest::run_checked(
        comm,
        script,
        Duration::from_secs(120),
        what,
        Some("turn the cache off with `package_cache = false` in [build]".to_string()),
    )
}

/// Reads what the build added to the store out of the (no longer used) `image` into
/// `scratch` and moves it into the box's folder `cache_dir`; returns how many files came back.
pub fn bring_back(image: &Path, cache_dir: &Path, scratch: &Path) -> Result<u64> {
    let io = |what: &str, e: std::io::Error| {
        Error::runtime(format!("{what} {}: {e}", scratch.display()), None)
    };
    let _ = std::fs::remove_dir_all(scratch);
    std::fs::create_dir_all(scratch).map_err(|e| io("creating", e))?;
    let mut cmd = Command::new("debugfs");
    cmd.arg("-R")
        .arg(format!("rdump /apt/debs /npm /pip {}", scratch.display()))
        .arg(image);
    process::run(&mut cmd).map_err(|e| {
        Error::runtime(
            format!(
                "reading the package cache disk {} back: {e}",
                image.display()
            ),
            None,
        )
    })?;
    let mut moved = 0;
    for (from, into) in [
        ("debs", cache_dir.join("apt").join("debs")),
        ("npm", cache_dir.join("npm")),
        ("pip", cache_dir.join("pip")),
    ] {
        let from = scratch.join(from);
        if from.is_dir() {
            moved += merge_back(&from, &into).map_err(|e| io("merging", e))?;
        }
    }
    let _ = std::fs::remove_dir_all(scratch);
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_disk_is_a_labelled_raw_virtio_disk_mounted_at_the_mount_point() {
        let args = drive_args(Path::new("/vm/package-cache.img"));
        assert_eq!(
            args,
            [
                "-drive",
                "file=/vm/package-cache.img,if=none,id=pipecache,format=raw,discard=unmap",
                "-device",
                "virtio-blk-pci,drive=pipecache,serial=pipecache",
            ]
            .map(OsString::from)
        );
        let mkfs = mkfs_args(Path::new("/c/qemu-debian-12"), Path::new("/vm/c.img"));
        let mkfs: Vec<String> = mkfs
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let at = |flag: &str| mkfs[mkfs.iter().position(|a| a == flag).unwrap() + 1].clone();
        assert_eq!(at("-L"), LABEL);
        assert_eq!(at("-d"), "/c/qemu-debian-12");
        assert_eq!(mkfs[mkfs.len() - 2..], ["/vm/c.img", IMAGE_SIZE]);
        // The kernel must not initialise what mke2fs left: it mounts with noinit_itable.
        assert!(at("-E").contains("lazy_itable_init=1"));
        assert!(
            mount_command().contains(&format!("-o noinit_itable,nosuid,nodev -L {LABEL} {MOUNT}"))
        );
        assert!(unmount_command().ends_with(&format!("then rmdir {MOUNT}; fi")));
    }

    /// A real image (mke2fs and debugfs, no mount): what is added to it comes back, the rest
    /// stays as it was.
    #[test]
    fn what_a_build_adds_to_the_image_comes_back_into_the_store() {
        if !crate::boxes::rootfs::in_path("mke2fs") || !crate::boxes::rootfs::in_path("debugfs") {
            panic!("e2fsprogs (mke2fs, debugfs) is needed by the qemu target");
        }
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("qemu-debian-12");
        std::fs::create_dir_all(cache.join("apt/debs")).unwrap();
        std::fs::create_dir_all(cache.join("npm")).unwrap();
        std::fs::write(cache.join("apt/debs/old_1_amd64.deb"), "old").unwrap();
        // What a build adds: the same folder with more in it, as the guest leaves it.
        let built = tmp.path().join("built");
        std::fs::create_dir_all(built.join("apt/debs")).unwrap();
        std::fs::create_dir_all(built.join("pip/http")).unwrap();
        std::fs::write(built.join("apt/debs/old_1_amd64.deb"), "old").unwrap();
        std::fs::write(built.join("apt/debs/new_2_amd64.deb"), "new").unwrap();
        std::fs::write(built.join("pip/http/ab"), "wheel").unwrap();
        let image = tmp.path().join("c.img");
        make_image(&built, &image).unwrap();
        let moved = bring_back(&image, &cache, &tmp.path().join("scratch")).unwrap();
        assert_eq!(moved, 2);
        let read = |p: &str| std::fs::read_to_string(cache.join(p)).unwrap();
        assert_eq!(read("apt/debs/new_2_amd64.deb"), "new");
        assert_eq!(read("apt/debs/old_1_amd64.deb"), "old");
        assert_eq!(read("pip/http/ab"), "wheel");
        assert!(!tmp.path().join("scratch").exists());
        // Sparse: the 32 GiB image takes a few MiB.
        use std::os::unix::fs::MetadataExt;
        assert!(std::fs::metadata(&image).unwrap().blocks() * 512 < 64 << 20);
    }
}
