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

fn qemu_img(args: &[&str]) -> Result<String> {
    let out = crate::process::run(Command::new("qemu-img").args(args)).map_err(|e| {
        let hint = e.not_started().then(|| "install qemu-utils".to_string());
        Error::runtime(e.to_string(), hint)
    })?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `qemu-img create -f qcow2 -b BACKING -F qcow2 OVERLAY [SIZE]`. A size smaller than the
/// backing disk is refused: the guest would see a truncated file system.
pub fn create_overlay(backing: &Path, overlay: &Path, size: Option<&str>) -> Result<()> {
    if let Some(parent) = overlay.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            Error::runtime(format!("creating {}: {e}", parent.display()), None).caused_by(e)
        })?;
    }
    let backing = std::fs::canonicalize(backing).map_err(|e| {
        Error::runtime(format!("backing file {}: {e}", backing.display()), None).caused_by(e)
    })?;
    if let Some(want) = size.and_then(parse_size) {
        let have = virtual_size(&backing)?;
        if want < have {
            return Err(Error::usage(
                format!(
                    "disk_size {} is smaller than the image it starts from ({} MiB)",
                    size.unwrap_or_default(),
                    have >> 20
                ),
                Some(
                    "a machine's disk can grow, never shrink: raise `disk_size`, or build a smaller box (`[qemu] size` in its recipe)"
                        .into(),
                ),
            ));
        }
    }
    let b = backing.to_string_lossy();
    let o = overlay.to_string_lossy();
    let mut args = vec!["create", "-q", "-f", "qcow2", "-b", &b, "-F", "qcow2", &o];
    if let Some(s) = size {
        args.push(s);
    }
    qemu_img(&args).map(|_| ())
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
    qemu_img(&args).map(|_| ())
}

/// Bytes in a size like `8G` (K, M, G, T are powers of 1024, as for qemu-img).
pub fn parse_size(s: &str) -> Option<u64> {
    let (digits, shift) = match s.as_bytes().last()? {
        b'K' => (&s[..s.len() - 1], 10),
        b'M' => (&s[..s.len() - 1], 20),
        b'G' => (&s[..s.len() - 1], 30),
        b'T' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

fn info(path: &Path) -> Result<serde_json::Value> {
    let p = path.to_string_lossy();
    let out = qemu_img(&["info", "--output=json", "-U", &p])?;
    serde_json::from_str(&out)
        .map_err(|e| Error::runtime(format!("qemu-img info {p}: {e}"), None).caused_by(e))
}

/// The size of the disk a guest sees, in bytes.
pub fn virtual_size(path: &Path) -> Result<u64> {
    info(path)?
        .get("virtual-size")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| {
            Error::runtime(
                format!("qemu-img info {}: no virtual-size", path.display()),
                None,
            )
        })
}

/// The backing file of a qcow2 file, if it has one.
pub fn backing_file(path: &Path) -> Result<Option<PathBuf>> {
    Ok(info(path)?
        .get("backing-filename")
        .and_then(|b| b.as_str())
        .map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_are_powers_of_1024_like_qemu_img() {
        assert_eq!(parse_size("8G"), Some(8 << 30));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("1T"), Some(1 << 40));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("G"), None);
        assert_eq!(parse_size("x1G"), None);
    }
}
