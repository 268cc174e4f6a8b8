//! The package cache: apt archives, npm's and pip's caches kept on the host, one folder per box
//! (`$XDG_CACHE_HOME/pipe/packages/<target>-<box>/`), mounted into a build machine while it is
//! provisioned, so a base rebuild after a dependency bump downloads only what is new.
//!
//! The cache reaches provisioning commands only through their environment (like build trust's
//! proxies): `APT_CONFIG` (a config file in the cache that points apt's archives there),
//! `npm_config_cache` and `PIP_CACHE_DIR`. Nothing is written into the layer, a commit never
//! includes what is mounted, and no digest covers the cache.
//!
//! apt is the one that needs care. A provisioner's `apt-get clean` (or a box's `docker-clean`
//! hook) empties the archives folder, so each build gets its own archives folder of hard links
//! into the box's store (`apt/debs/`), and a `DPkg::Post-Invoke` hook links what apt downloaded
//! back into the store before anything can remove it. Two builds on the same box never share an
//! archives folder, so they never wait on each other's apt lock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{BoxSource, Pipelinefile, TargetKind};

/// Where the box's cache folder is mounted in a build machine.
pub const MOUNT: &str = "/var/cache/pipe-build";

/// The package cache of one box on the host.
#[derive(Debug, Clone)]
pub struct PackageCache {
    /// `<cache>/packages/<key>`.
    pub dir: PathBuf,
}

/// One build's use of the cache: its own apt archives folder (to remove after the build) and
/// the environment for its provisioning commands.
#[derive(Debug, Clone)]
pub struct CacheRun {
    /// The box's cache folder on the host, to mount at [`MOUNT`].
    pub mount_source: PathBuf,
    /// `<cache dir>/apt/runs/<run>-<layer>` on the host.
    pub run_dir: PathBuf,
    pub env: BTreeMap<String, String>,
}

/// A box's cache on the host, as `pipe cache list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CacheEntry {
    /// `docker-debian-12`.
    pub key: String,
    pub path: PathBuf,
    pub bytes: u64,
    pub files: u64,
}

/// Every box's cache lives under here: `$XDG_CACHE_HOME/pipe/packages`.
pub fn root() -> PathBuf {
    super::cache_dir().join("packages")
}

impl PackageCache {
    /// The cache of the box `kind` builds from, unless `[build] package_cache = false` or the
    /// Pipelinefile names no box for `kind`.
    pub fn for_build(pf: &Pipelinefile, kind: TargetKind) -> Option<Self> {
        if !pf.build.package_cache {
            return None;
        }
        let key = box_key(kind, &pf.boxes.get(kind)?.value)?;
        Some(Self {
            dir: root().join(key),
        })
    }

    /// The host folder of one build: `apt/runs/<run>-<layer>`.
    pub fn run_dir(&self, run: &str, layer: &str) -> PathBuf {
        self.dir
            .join("apt")
            .join("runs")
            .join(format!("{run}-{layer}"))
    }

    /// Makes the cache's folders and the build's archives folder in `run_dir` (hard links to
    /// every archive in the store), and returns the environment that points the package
    /// managers at [`MOUNT`].
    pub fn prepare(&self, run_dir: &Path) -> std::io::Result<CacheRun> {
        let store = self.dir.join("apt").join("debs");
        let archives = run_dir.join("archives");
        for d in [
            &store,
            &archives.join("partial"),
            &self.dir.join("npm"),
            &self.dir.join("pip"),
        ] {
            std::fs::create_dir_all(d)?;
        }
        for entry in std::fs::read_dir(&store)? {
            let entry = entry?;
            let name = entry.file_name();
            if entry.file_type()?.is_file() && name.to_string_lossy().ends_with(".deb") {
                std::fs::hard_link(entry.path(), archives.join(&name))?;
            }
        }
        let rel = run_dir
            .strip_prefix(&self.dir)
            .map_err(std::io::Error::other)?;
        let in_machine = format!("{MOUNT}/{}", rel.to_string_lossy());
        let conf = apt_config(
            &format!("{in_machine}/archives"),
            &format!("{MOUNT}/apt/debs"),
        );
        std::fs::write(run_dir.join("apt.conf"), conf)?;
        let env = BTreeMap::from([
            ("APT_CONFIG".to_string(), format!("{in_machine}/apt.conf")),
            ("npm_config_cache".to_string(), format!("{MOUNT}/npm")),
            ("PIP_CACHE_DIR".to_string(), format!("{MOUNT}/pip")),
        ]);
        Ok(CacheRun {
            mount_source: self.dir.clone(),
            run_dir: run_dir.to_path_buf(),
            env,
        })
    }
}

/// apt's settings for one build: archives in the build's own folder, kept after install (the
/// `apt` command drops them by default), and linked into the store after every dpkg run (before
/// a `docker-clean`-style hook or an `apt-get clean` removes them; those only ever see the
/// build's folder).
fn apt_config(archives: &str, store: &str) -> String {
    format!(
        "// Written by pipe for one build: the package cache (see `pipe cache list`).\n\
         Dir::Cache::archives \"{archives}/\";\n\
         APT::Keep-Downloaded-Packages \"true\";\n\
         Binary::apt::APT::Keep-Downloaded-Packages \"true\";\n\
         DPkg::Post-Invoke {{ \"cp -ln {archives}/*.deb {store}/ 2>/dev/null || true\"; }};\n"
    )
}

/// The cache folder's name for a box: the target kind and the recipe's name, the image's
/// name, or a cloud image's file name, with anything but letters, digits, `.`, `_` and `-`
/// made `_`.
pub fn box_key(kind: TargetKind, source: &BoxSource) -> Option<String> {
    let name = match source {
        BoxSource::Recipe(name) => name.clone(),
        BoxSource::Image(image) => format!("image-{image}"),
        BoxSource::CloudImage { image, .. } => {
            format!("cloud-{}", image.rsplit('/').next().unwrap_or(image))
        }
        _ => return None,
    };
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    Some(format!("{}-{clean}", kind.as_str()))
}

/// Every box's cache on the host, by name, with its size.
pub fn list() -> std::io::Result<Vec<CacheEntry>> {
    let root = root();
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let (bytes, files) = usage(&entry.path());
        out.push(CacheEntry {
            key: entry.file_name().to_string_lossy().into_owned(),
            path: entry.path(),
            bytes,
            files,
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Moves every file under `from` that `into` lacks, or holds with another size, to the same
/// place under `into` (an atomic rename over the old one); returns how many moved. For a
/// build machine's copy of the cache (qemu's cache disk), which started as a copy of `into`: a
/// new archive comes back, and so does a grown npm index.
pub fn merge_back(from: &Path, into: &Path) -> std::io::Result<u64> {
    let mut moved = 0;
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.map_err(std::io::Error::other)?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(from)
            .map_err(std::io::Error::other)?;
        let to = into.join(rel);
        let same = std::fs::metadata(&to)
            .is_ok_and(|m| m.len() == entry.metadata().map_or(0, |e| e.len()));
        if same {
            continue;
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(entry.path(), &to)?;
        moved += 1;
    }
    Ok(moved)
}

/// Bytes and files under `dir`, each hard-linked file counted once.
fn usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::BTreeSet::new();
    let (mut bytes, mut files) = (0, 0);
    for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if !entry.file_type().is_file() {
            continue;
        }
        if let Ok(m) = entry.metadata()
            && seen.insert((m.dev(), m.ino()))
        {
            bytes += m.len();
            files += 1;
        }
    }
    (bytes, files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_keys_are_folder_names() {
        let k = |s| box_key(TargetKind::Docker, &s);
        assert_eq!(
            k(BoxSource::Recipe("debian-12".into())).unwrap(),
            "docker-debian-12"
        );
        assert_eq!(
            k(BoxSource::Image("registry:5000/debian:bookworm".into())).unwrap(),
            "docker-image-registry_5000_debian_bookworm"
        );
        assert_eq!(
            box_key(
                TargetKind::Qemu,
                &BoxSource::CloudImage {
                    image: "https://example.org/12/debian-12-genericcloud-amd64.qcow2".into(),
                    checksum: None,
                }
            )
            .unwrap(),
            "qemu-cloud-debian-12-genericcloud-amd64.qcow2"
        );
        assert!(k(BoxSource::Ami("ami-1".into())).is_none());
    }

    #[test]
    fn the_setting_turns_it_off_and_a_box_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let load = |build: &str| {
            let text = format!(
                "[pipeline]\nname = \"demo\"\n\n[box]\ndocker = {{ image = \"debian:bookworm\" }}\n\n{build}[env.dev]\ntarget = \"docker\"\n"
            );
            std::fs::write(dir.path().join("Pipelinefile.toml"), text).unwrap();
            crate::config::load(&dir.path().join("Pipelinefile.toml"), dir.path())
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let on = PackageCache::for_build(&load(""), TargetKind::Docker).unwrap();
        assert!(on.dir.ends_with("packages/docker-image-debian_bookworm"));
        let off = load("[build]\npackage_cache = false\n\n");
        assert!(PackageCache::for_build(&off, TargetKind::Docker).is_none());
        // No qemu box: no cache for qemu.
        assert!(PackageCache::for_build(&load(""), TargetKind::Qemu).is_none());
    }

    #[test]
    fn merging_back_moves_what_is_new_or_changed_and_leaves_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (from, into) = (dir.path().join("from"), dir.path().join("into"));
        for d in [&from.join("npm/index"), &into.join("npm/index")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(from.join("same.deb"), "same").unwrap();
        std::fs::write(into.join("same.deb"), "SAME").unwrap();
        std::fs::write(from.join("new.deb"), "new").unwrap();
        std::fs::write(from.join("npm/index/ab"), "one\ntwo\n").unwrap();
        std::fs::write(into.join("npm/index/ab"), "one\n").unwrap();
        assert_eq!(merge_back(&from, &into).unwrap(), 2);
        let read = |p: &str| std::fs::read_to_string(into.join(p)).unwrap();
        // Same size: kept as it was (an archive's name says its version).
        assert_eq!(read("same.deb"), "SAME");
        assert_eq!(read("new.deb"), "new");
        assert_eq!(read("npm/index/ab"), "one\ntwo\n");
        // Nothing more to move.
        assert_eq!(merge_back(&from, &into).unwrap(), 0);
    }

    #[test]
    fn a_build_gets_links_to_the_store_and_an_apt_config_pointing_there() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PackageCache {
            dir: dir.path().join("docker-debian-12"),
        };
        let store = cache.dir.join("apt/debs");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::write(store.join("hello_1_amd64.deb"), "deb").unwrap();
        std::fs::write(store.join("lock"), "").unwrap();
        let run_dir = cache.run_dir("20260101-abc", "base");
        let run = cache.prepare(&run_dir).unwrap();
        let linked = run_dir.join("archives/hello_1_amd64.deb");
        assert_eq!(std::fs::read_to_string(&linked).unwrap(), "deb");
        assert!(!run_dir.join("archives/lock").exists());
        assert!(run_dir.join("archives/partial").is_dir());
        let conf = std::fs::read_to_string(run_dir.join("apt.conf")).unwrap();
        let archives = format!("{MOUNT}/apt/runs/20260101-abc-base/archives");
        assert!(conf.contains(&format!("Dir::Cache::archives \"{archives}/\";")));
        assert!(conf.contains(&format!("cp -ln {archives}/*.deb {MOUNT}/apt/debs/")));
        assert_eq!(
            run.env["APT_CONFIG"],
            format!("{MOUNT}/apt/runs/20260101-abc-base/apt.conf")
        );
        assert_eq!(run.env["npm_config_cache"], format!("{MOUNT}/npm"));
        assert_eq!(run.env["PIP_CACHE_DIR"], format!("{MOUNT}/pip"));
        // The store's archive and its link count once: it, the lock and apt.conf.
        assert_eq!(usage(&cache.dir).1, 3);
    }
}
