//! Uploads and downloads as one tar stream, independent of the transport: the docker-exec
//! communicator hands it to the engine's archive endpoint, the SSH communicator pipes it into
//! `tar -x` on the machine.
//!
//! An upload stream holds one top entry named after the destination (`name`, or `name/...` for
//! a folder), so it is extracted in the destination's parent folder. What goes in is exactly
//! what [`crate::layers::tree::walk`] yields (sorted, `.pipeignore` honoured), so what is
//! hashed for a layer digest is what is uploaded. Modes are the walk's (normalized as git
//! does: 0755 for folders and executables, 0644 otherwise), symlinks stay symlinks, owner and
//! group are 0 (an `owner` option is applied with `chown -R` afterwards).

use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use crate::layers::tree::{self, EntryKind};

/// Writes `src` (a file or a folder) as a tar whose top entry is `name`.
pub fn write_tree(src: &Path, name: &str, out: impl Write) -> io::Result<()> {
    check_name(name)?;
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    for entry in tree::walk(src)? {
        let path = if entry.rel.is_empty() {
            name.to_string()
        } else {
            format!("{name}/{}", entry.rel)
        };
        let meta = std::fs::symlink_metadata(&entry.abs)?;
        let mut header = tar::Header::new_gnu();
        header.set_mode(entry.mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime(&meta));
        match &entry.kind {
            EntryKind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder.append_data(&mut header, format!("{path}/"), io::empty())?;
            }
            EntryKind::File => {
                let file = std::fs::File::open(&entry.abs)?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(meta.len());
                // A file that changes size while it is read would corrupt the stream.
                builder.append_data(&mut header, &path, file.take(meta.len()))?;
            }
            EntryKind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, &path, target)?;
            }
        }
    }
    builder.into_inner()?.flush()
}

/// Writes `data` as a tar holding the one file `name` with `mode`.
pub fn write_bytes(data: &[u8], name: &str, mode: u32, out: impl Write) -> io::Result<()> {
    write_files(&[(name, data, mode)], out)
}

/// Writes a tar of files, each `(relative path, bytes, mode)`, owned by root, in order (so a
/// `tar -x` on the machine creates them in that order).
pub fn write_files(files: &[(&str, &[u8], u32)], mut out: impl Write) -> io::Result<()> {
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut builder = tar::Builder::new(&mut out);
    for (name, data, mode) in files {
        for part in name.split('/') {
            check_name(part)?;
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(mode & 0o7777);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        header.set_size(data.len() as u64);
        builder.append_data(&mut header, name, *data)?;
    }
    builder.finish()?;
    drop(builder);
    out.flush()
}

/// Unpacks a tar whose top entry is one file or folder (as `docker cp` and `tar -c -C parent
/// name` produce) so that the top entry becomes `dest`: a file becomes the file `dest`, a
/// folder's contents land in `dest`. Modes are kept; ownership is not (the host user owns
/// what it downloads). Entries that would leave `dest` are refused.
pub fn unpack_tree(input: impl Read, dest: &Path) -> io::Result<()> {
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    let mut top: Option<PathBuf> = None;
    // Folder modes are applied last, so a read-only folder can still be filled.
    let mut dirs: Vec<(PathBuf, u32)> = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let rest = strip_top(&path, &mut top)?;
        let target = if rest.as_os_str().is_empty() {
            dest.to_path_buf()
        } else {
            check_no_symlink_parents(dest, &rest)?;
            dest.join(&rest)
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let kind = entry.header().entry_type();
        let mode = entry.header().mode()? & 0o7777;
        if kind.is_dir() {
            if std::fs::symlink_metadata(&target).is_ok_and(|m| !m.is_dir()) {
                std::fs::remove_file(&target)?;
            }
            std::fs::create_dir_all(&target)?;
            dirs.push((target, mode));
            continue;
        }
        if std::fs::symlink_metadata(&target).is_ok() {
            if target.is_dir() && !target.is_symlink() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} is a folder; cannot replace it with a file",
                        target.display()
                    ),
                ));
            }
            std::fs::remove_file(&target)?;
        }
        if kind.is_hard_link() {
            let link = entry
                .link_name()?
                .ok_or_else(|| bad("hard link without a target"))?;
            let link_rest = strip_top(&link, &mut top)?;
            check_no_symlink_parents(dest, &link_rest)?;
            std::fs::hard_link(dest.join(link_rest), &target)?;
            continue;
        }
        entry.unpack(&target)?;
    }
    if top.is_none() {
        return Err(bad("the archive is empty"));
    }
    for (dir, mode) in dirs.into_iter().rev() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// `path` minus its first component, which must be the same for every entry.
fn strip_top(path: &Path, top: &mut Option<PathBuf>) -> io::Result<PathBuf> {
    let mut comps = path
        .components()
        .filter(|c| !matches!(c, Component::CurDir));
    let first = match comps.next() {
        Some(Component::Normal(first)) => PathBuf::from(first),
        _ => return Err(bad(&format!("unexpected entry {}", path.display()))),
    };
    match top {
        Some(t) if *t != first => {
            return Err(bad(&format!(
                "entry {} is outside {}",
                path.display(),
                t.display()
            )));
        }
        Some(_) => {}
        None => *top = Some(first),
    }
    let mut rest = PathBuf::new();
    for c in comps {
        match c {
            Component::Normal(c) => rest.push(c),
            _ => return Err(bad(&format!("unsafe entry {}", path.display()))),
        }
    }
    Ok(rest)
}

/// Refuses to write through a symlink inside `dest` (an archive could otherwise escape it).
fn check_no_symlink_parents(dest: &Path, rest: &Path) -> io::Result<()> {
    let mut at = dest.to_path_buf();
    let n = rest.components().count();
    for c in rest.components().take(n.saturating_sub(1)) {
        at.push(c);
        if at.is_symlink() {
            return Err(bad(&format!(
                "{} is a symlink; refusing to write through it",
                at.display()
            )));
        }
    }
    Ok(())
}

fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a file name"),
        ));
    }
    Ok(())
}

fn mtime(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.mtime().max(0) as u64
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Splits an absolute machine path into its parent folder and file name:
/// `/opt/app/` -> (`/opt`, `app`). `/` itself and relative paths are refused.
pub fn split_dest(dest: &str) -> io::Result<(String, String)> {
    let trimmed = dest.trim_end_matches('/');
    if !dest.starts_with('/') || trimmed.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{dest:?}: the destination must be an absolute path below /"),
        ));
    }
    let (parent, name) = trimmed.rsplit_once('/').expect("starts with /");
    check_name(name)?;
    let parent = if parent.is_empty() { "/" } else { parent };
    Ok((parent.to_string(), name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fixture(root: &Path) {
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::write(root.join("a/b/c.txt"), "c").unwrap();
        std::fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::write(root.join("with space.txt"), "s").unwrap();
        std::fs::write(root.join("x.log"), "ignored").unwrap();
        std::fs::write(root.join(".pipeignore"), "*.log\n").unwrap();
        std::os::unix::fs::symlink("a/b/c.txt", root.join("link")).unwrap();
    }

    #[test]
    fn round_trip_keeps_modes_links_and_honours_pipeignore() {
        let src = tempfile::tempdir().unwrap();
        fixture(src.path());
        let mut buf = Vec::new();
        write_tree(src.path(), "app", &mut buf).unwrap();

        let names: Vec<String> = tar::Archive::new(&buf[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "app/",
                "app/a/",
                "app/a/b/",
                "app/a/b/c.txt",
                "app/empty/",
                "app/link",
                "app/run.sh",
                "app/with space.txt"
            ]
        );

        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("copy");
        unpack_tree(&buf[..], &dest).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("a/b/c.txt")).unwrap(),
            "c"
        );
        assert_eq!(
            std::fs::read_link(dest.join("link")).unwrap(),
            Path::new("a/b/c.txt")
        );
        let mode = std::fs::metadata(dest.join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(dest.join("empty").is_dir());
        assert!(!dest.join("x.log").exists());
    }

    #[test]
    fn a_file_becomes_dest() {
        let mut buf = Vec::new();
        write_bytes(b"hello", "f", 0o640, &mut buf).unwrap();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("g");
        unpack_tree(&buf[..], &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    #[test]
    fn refuses_escaping_entries() {
        let mut buf = Vec::new();
        {
            let mut b = tar::Builder::new(&mut buf);
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_entry_type(tar::EntryType::Regular);
            // `append_data` refuses `..`; write the raw name to simulate a hostile archive.
            h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"top/../x\0");
            h.set_cksum();
            b.append(&h, &b"x"[..]).unwrap();
            b.finish().unwrap();
        }
        let out = tempfile::tempdir().unwrap();
        assert!(unpack_tree(&buf[..], &out.path().join("d")).is_err());
    }

    #[test]
    fn splits_destinations() {
        assert_eq!(
            split_dest("/opt/app/").unwrap(),
            ("/opt".into(), "app".into())
        );
        assert_eq!(split_dest("/f").unwrap(), ("/".into(), "f".into()));
        assert!(split_dest("/").is_err());
        assert!(split_dest("rel/x").is_err());
    }
}
