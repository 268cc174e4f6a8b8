//! Walking a file or folder the way pipe uploads and hashes it: sorted, `.pipeignore` honoured,
//! modes normalized as git does, mtimes ignored. The upload (tar stream) and the layer digest both use this, so
//! what is hashed is exactly what is uploaded.

use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// The ignore file read in every folder of an uploaded tree (gitignore syntax).
pub const IGNORE_FILE: &str = ".pipeignore";

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    /// A symlink, kept as a link with this target.
    Symlink(PathBuf),
}

/// One entry of a walked tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// Path relative to the walked root, `/`-separated; empty for the root itself.
    pub rel: String,
    /// Where it is on the host.
    pub abs: PathBuf,
    pub kind: EntryKind,
    /// Permission bits, normalized by [`normalize_mode`].
    pub mode: u32,
}

/// Walks `src`: a file yields one entry with an empty `rel`; a folder yields the folder itself
/// (empty `rel`) and everything under it in sorted order, minus what `.pipeignore` files exclude
/// (the ignore files themselves are not uploaded). Symlinks are not followed.
pub fn walk(src: &Path) -> std::io::Result<Vec<TreeEntry>> {
    let meta = std::fs::symlink_metadata(src)?;
    if !meta.is_dir() {
        return Ok(vec![entry(src, String::new(), &meta)?]);
    }
    let mut out = vec![TreeEntry {
        rel: String::new(),
        abs: src.to_path_buf(),
        kind: EntryKind::Dir,
        mode: 0o755,
    }];
    // Ignore matchers from the root down to the folder being walked.
    let mut stack: Vec<(PathBuf, Gitignore)> = Vec::new();
    let mut it = walkdir::WalkDir::new(src)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter();
    push_ignore(&mut stack, src);
    while let Some(item) = it.next() {
        let item = item.map_err(std::io::Error::other)?;
        let path = item.path();
        let parent = path.parent().unwrap_or(src);
        while stack.len() > 1 && !parent.starts_with(&stack.last().expect("non-empty").0) {
            stack.pop();
        }
        let is_dir = item.file_type().is_dir();
        if item.file_name() == IGNORE_FILE && !is_dir {
            continue;
        }
        let ignored = stack
            .iter()
            .rev()
            .map(|(_, gi)| gi.matched_path_or_any_parents(path, is_dir))
            .find(|m| !m.is_none())
            .is_some_and(|m| m.is_ignore());
        if ignored {
            if is_dir {
                it.skip_current_dir();
            }
            continue;
        }
        let rel = path
            .strip_prefix(src)
            .expect("under root")
            .to_string_lossy()
            .replace('\\', "/");
        let meta = std::fs::symlink_metadata(path)?;
        out.push(entry(path, rel, &meta)?);
        if is_dir {
            push_ignore(&mut stack, path);
        }
    }
    Ok(out)
}

fn push_ignore(stack: &mut Vec<(PathBuf, Gitignore)>, dir: &Path) {
    let file = dir.join(IGNORE_FILE);
    let mut builder = GitignoreBuilder::new(dir);
    if file.is_file() {
        let _ = builder.add(&file);
    }
    let gi = builder.build().unwrap_or_else(|_| Gitignore::empty());
    stack.push((dir.to_path_buf(), gi));
}

fn entry(path: &Path, rel: String, meta: &std::fs::Metadata) -> std::io::Result<TreeEntry> {
    use std::os::unix::fs::PermissionsExt;
    let kind = if meta.file_type().is_symlink() {
        EntryKind::Symlink(std::fs::read_link(path)?)
    } else if meta.is_dir() {
        EntryKind::Dir
    } else {
        EntryKind::File
    };
    let mode = normalize_mode(&kind, meta.permissions().mode());
    Ok(TreeEntry {
        rel,
        abs: path.to_path_buf(),
        kind,
        mode,
    })
}

/// Modes as git keeps them: folders 0755, files 0755 when the owner may execute them, else
/// 0644. The umask of a checkout must not change what is uploaded or hashed, or a laptop and
/// CI would never reuse each other's layers. Set other modes in a provisioner.
pub fn normalize_mode(kind: &EntryKind, mode: u32) -> u32 {
    match kind {
        EntryKind::Dir => 0o755,
        EntryKind::Symlink(_) => 0o777,
        EntryKind::File if mode & 0o100 != 0 => 0o755,
        EntryKind::File => 0o644,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn walks_sorted_and_honours_pipeignore() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/node_modules/x")).unwrap();
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a/z.txt"), "z").unwrap();
        std::fs::write(root.join("a/y.log"), "y").unwrap();
        std::fs::write(root.join("b/node_modules/x/i.js"), "i").unwrap();
        std::fs::write(root.join("b/run.sh"), "#!/bin/sh").unwrap();
        std::fs::set_permissions(
            root.join("b/run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(root.join(".pipeignore"), "*.log\n").unwrap();
        std::fs::write(root.join("b/.pipeignore"), "node_modules/\n").unwrap();
        let entries = walk(root).unwrap();
        let rels: Vec<&str> = entries.iter().map(|e| e.rel.as_str()).collect();
        assert_eq!(rels, vec!["", "a", "a/z.txt", "b", "b/run.sh"]);
        assert_eq!(entries[4].mode, 0o755);
    }

    /// What the README says of `.pipeignore`: gitignore syntax (anchors, `!`), a deeper file
    /// wins, files above the walked folder and `.gitignore` are not read, no defaults.
    #[test]
    fn pipeignore_is_gitignore_syntax_per_folder_without_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("app");
        for d in ["app/.git", "app/lib", "app/docs"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        for f in [
            "app/.git/HEAD",
            "app/a.log",
            "app/keep.log",
            "app/lib/a.log",
            "app/docs/x.md",
            "app/x.md",
        ] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        std::fs::write(dir.path().join(".pipeignore"), "*\n").unwrap();
        std::fs::write(root.join(".gitignore"), "x.md\n").unwrap();
        std::fs::write(
            root.join(".pipeignore"),
            "# logs\n*.log\n!keep.log\n/x.md\n",
        )
        .unwrap();
        std::fs::write(root.join("lib/.pipeignore"), "!a.log\n").unwrap();
        let rels: Vec<String> = walk(&root).unwrap().into_iter().map(|e| e.rel).collect();
        assert_eq!(
            rels,
            vec![
                "",
                ".git",
                ".git/HEAD",
                ".gitignore",
                "docs",
                "docs/x.md",
                "keep.log",
                "lib",
                "lib/a.log",
            ]
        );
    }

    #[test]
    fn modes_are_normalized_like_git() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o664)).unwrap();
        assert_eq!(walk(&f).unwrap()[0].mode, 0o644);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(walk(&f).unwrap()[0].mode, 0o755);
    }

    #[test]
    fn a_file_is_one_entry() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        let entries = walk(&f).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].kind, EntryKind::File);
    }
}
