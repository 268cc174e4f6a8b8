//! Boxes: base OS images built from a recipe (`boxes/NAME.toml`) with debootstrap from
//! Debian's mirror, no container registry needed. The rootfs step ([`rootfs`]) is shared by
//! every box kind; [`docker`] imports it as an image, [`qemu`] makes a disk of it. A box is
//! identified by its name and the recipe digest ([`Recipe::digest`]): an unchanged recipe is
//! never rebuilt. A qemu box can also be a published cloud image ([`cloud`]), downloaded once
//! and identified by its checksum.

pub mod cloud;
pub mod docker;
mod error;
pub mod mirror;
pub mod package_cache;
pub mod qemu;
pub mod recipe;
pub mod rootfs;

use std::path::{Path, PathBuf};

pub use docker::{
    BoxImage, build_docker_box, find_docker_box, list_docker_boxes, remove_docker_box,
};
pub use error::BoxError;
pub use recipe::{BoxTarget, Recipe};

/// Every qemu box in the cache (recipe boxes and cloud images), by name then newest first.
pub fn list_qemu_boxes() -> Vec<qemu::QemuBox> {
    let mut out = qemu::list_recipe_boxes();
    out.extend(cloud::list_cloud_images());
    out.sort_by(|a, b| a.name.cmp(&b.name).then(b.created.cmp(&a.created)));
    out
}

/// pipe's cache folder: `$XDG_CACHE_HOME/pipe`, else `~/.cache/pipe`.
pub fn cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("pipe");
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("pipe")
}

/// Takes an exclusive lock on `path` (created if needed), held until the file is dropped.
pub(crate) fn lock_file(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    f.lock()?;
    Ok(f)
}
