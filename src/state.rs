//! `.pipe/`: the state folder next to the Pipelinefile. Everything in it is a cache of live
//! state or an append-only record; writes are atomic (temp file + rename).

use std::io::Write;
use std::path::{Path, PathBuf};

/// The state folder's name.
pub const DIR: &str = ".pipe";

/// The state folder for a Pipelinefile folder.
pub fn dir(root: &Path) -> PathBuf {
    root.join(DIR)
}

/// A short, stable id of a project folder (the Pipelinefile's folder), labelled on every
/// container pipe creates: two checkouts of one pipeline never see or remove each other's
/// machines. Layer images are shared across checkouts on purpose; they are a cache.
pub fn project_id(root: &Path) -> String {
    use sha2::{Digest, Sha256};
    let canonical = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    hex::encode(Sha256::digest(canonical.to_string_lossy().as_bytes()))[..12].to_string()
}

/// Writes `data` to `path` atomically: a temp file in the same folder, fsynced, renamed.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// `.pipe/state.json`: what pipe last knew about machines. A cache: commands reconcile it with
/// the target (by labels) and rewrite it; a missing or stale file is never an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct State {
    #[serde(default)]
    pub machines: std::collections::BTreeMap<String, MachineState>,
}

/// One environment's local machine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MachineState {
    pub target: String,
    /// Container name, or VM name.
    pub name: String,
    pub image: String,
    /// The app layer digest the machine runs.
    pub digest: String,
    pub updated: String,
}

impl MachineState {
    /// The target kind it runs on, `None` for a kind this pipe does not know.
    pub fn kind(&self) -> Option<crate::config::TargetKind> {
        crate::config::TargetKind::parse(&self.target)
    }
}

impl State {
    fn path(root: &Path) -> PathBuf {
        dir(root).join("state.json")
    }

    /// Reads the cache; anything unreadable counts as empty.
    pub fn load(root: &Path) -> Self {
        std::fs::read(Self::path(root))
            .ok()
            .and_then(|d| serde_json::from_slice(&d).ok())
            .unwrap_or_default()
    }

    /// Writes the cache atomically.
    pub fn save(&self, root: &Path) -> std::io::Result<()> {
        let data = serde_json::to_vec_pretty(self).expect("state serializes");
        write_atomic(&Self::path(root), &data)
    }
}
