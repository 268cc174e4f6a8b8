//! qcow2 files with `qemu-img`: copy-on-write overlays on a backing file, and flattened
//! (optionally compressed) standalone copies for artifacts.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// Where layers live: `$XDG_CACHE_HOME/pipe/qemu/layers/<pipeline>/`.
pub fn layers_dir(pipeline: &str) -> PathBuf {
    crate::boxes::cache_dir()
        .join("qemu")
        .join("layers")
        .join(pipeline)
}

fn qemu_img(args: &[&str], what: &str) -> Result<String> {
    let out = Command::new("qemu-img").args(args).output().map_err(|e| {
        Error::runtime(
            format!("running qemu-img: {e}"),
            Some("install qemu-utils".into()),
        )
    })?;
    if !out.status.success() {
        return Err(Error::runtime(
            format!(
                "qemu-img {what} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            None,
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `qemu-img create -f qcow2 -b BACKING -F qcow2 OVERLAY [SIZE]`.
pub fn create_overlay(backing: &Path, overlay: &Path, size: Option<&str>) -> Result<()> {
    if let Some(parent) = overlay.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::runtime(format!("creating {}: {e}", parent.display()), None))?;
    }
    let backing = std::fs::canonicalize(backing)
        .map_err(|e| Error::runtime(format!("backing file {}: {e}", backing.display()), None))?;
    let b = backing.to_string_lossy();
    let o = overlay.to_string_lossy();
    let mut args = vec!["create", "-q", "-f", "qcow2", "-b", &b, "-F", "qcow2", &o];
    if let Some(s) = size {
        args.push(s);
    }
    qemu_img(&args, &format!("create {o}")).map(|_| ())
}

/// A standalone copy of `src` with its backing chain folded in; `compress` uses qcow2's
/// compressed clusters (read-only data, as an artifact is).
pub fn flatten(src: &Path, dest: &Path, compress: bool) -> Result<()> {
    let s = src.to_string_lossy();
    let d = dest.to_string_lossy();
    let mut args = vec!["convert", "-O", "qcow2"];
    if compress {
        args.push("-c");
    }
    args.extend([s.as_ref(), d.as_ref()]);
    qemu_img(&args, &format!("convert {s}")).map(|_| ())
}

/// The backing file of a qcow2 file, if it has one.
pub fn backing_file(path: &Path) -> Result<Option<PathBuf>> {
    let p = path.to_string_lossy();
    let out = qemu_img(&["info", "--output=json", "-U", &p], &format!("info {p}"))?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| Error::runtime(format!("qemu-img info {p}: {e}"), None))?;
    Ok(v.get("backing-filename")
        .and_then(|b| b.as_str())
        .map(PathBuf::from))
}
