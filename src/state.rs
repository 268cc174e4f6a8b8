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
