//! A Pipelinefile reads host files only inside its project (the folder it is in), unless it
//! names a path outside in `[build] host_paths`. A cloned repository's Pipelinefile must not be
//! able to copy `/etc/shadow` or `~/.ssh` into an image that is then shipped to a cloud account.
//!
//! Paths are compared after resolving `..` and symlinks (the file that would be read), so a
//! relative path that climbs out, or a symlink in the project that points out, is outside too.
//! Symlinks *inside* an uploaded folder are uploaded as links and never read through, so what
//! they point at on the host never reaches an image.

use std::path::{Component, Path, PathBuf};

/// Where `path` (relative to `root`, or absolute) really is: canonical when it exists, else
/// its `..` and `.` resolved lexically.
pub fn resolve(root: &Path, path: &Path) -> PathBuf {
    let joined = root.join(path);
    if let Ok(c) = std::fs::canonicalize(&joined) {
        return c;
    }
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// True when `path` is inside `root` or inside one of `allowed` (absolute host paths).
pub fn is_allowed(root: &Path, allowed: &[PathBuf], path: &Path) -> bool {
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let real = resolve(&root, path);
    real.starts_with(&root)
        || allowed
            .iter()
            .any(|a| real.starts_with(resolve(Path::new("/"), a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_outside_climbing_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        std::fs::create_dir_all(root.join("app")).unwrap();
        std::fs::write(root.join("app/a.txt"), "a").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
        assert!(is_allowed(&root, &[], Path::new("app/a.txt")));
        assert!(is_allowed(&root, &[], Path::new("app/not-yet.txt")));
        assert!(!is_allowed(&root, &[], Path::new("/etc/shadow")));
        assert!(!is_allowed(&root, &[], Path::new("../outside.txt")));
        assert!(!is_allowed(&root, &[], Path::new("app/../../outside.txt")));
        assert!(!is_allowed(&root, &[], Path::new("etc-link/hostname")));
        let allowed = [PathBuf::from("/etc/ssl")];
        assert!(is_allowed(&root, &allowed, Path::new("/etc/ssl/certs")));
        assert!(!is_allowed(&root, &allowed, Path::new("/etc/shadow")));
    }
}
