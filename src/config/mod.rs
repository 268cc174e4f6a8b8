//! The Pipelinefile: finding it, parsing it with spans, validating it, interpolating it.

pub mod confine;
pub mod diagnostic;
mod known;
pub mod model;
pub mod parse;
mod suggest;
pub mod template;
mod validate;
pub mod vars;
mod walk;

use std::path::{Path, PathBuf};

pub use diagnostic::Diagnostic;
pub use model::*;

/// The file pipe looks for.
pub const FILE_NAME: &str = "Pipelinefile.toml";

/// Errors loading a Pipelinefile.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no {FILE_NAME} in {} or any parent folder", .0.display())]
    NotFound(PathBuf),
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A directory, a dangling symlink, a FIFO, a socket or a device where the file should be.
    #[error("{} is {what}, not a Pipelinefile", .path.display())]
    NotRegular { path: PathBuf, what: &'static str },
    #[error("{} is {size} bytes; a Pipelinefile is at most {MAX_SIZE} bytes", .path.display())]
    TooLarge { path: PathBuf, size: u64 },
    /// Every problem found, rendered with locations.
    #[error("{rendered}")]
    Invalid {
        diagnostics: Vec<Diagnostic>,
        rendered: String,
    },
}

/// The largest Pipelinefile pipe reads (4 MiB): anything bigger is a mistake, and reading it
/// must not take the machine's memory.
pub const MAX_SIZE: u64 = 4 << 20;

/// The Pipelinefile in `start` or its nearest parent: the first folder that has an entry of
/// that name, whatever it is (a directory or a dangling symlink there is an error, not a reason
/// to take a parent folder's Pipelinefile instead).
pub fn find(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(FILE_NAME))
        .find(|p| p.symlink_metadata().is_ok())
}

/// Reads a Pipelinefile: a regular file (or a symlink to one) of at most [`MAX_SIZE`] bytes.
/// Anything else is refused before it is opened for reading, so a FIFO never blocks and a
/// device is never read.
fn read(path: &Path) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let not_regular = |what| ConfigError::NotRegular {
        path: path.to_path_buf(),
        what,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.symlink_metadata().is_ok() => {
            return Err(not_regular("a symlink to a missing file"));
        }
        Err(e) => return Err(read_error(e)),
    };
    if meta.is_dir() {
        return Err(not_regular("a directory"));
    }
    if !meta.is_file() {
        return Err(not_regular("a FIFO, socket or device"));
    }
    if meta.len() > MAX_SIZE {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
        });
    }
    let mut data = Vec::new();
    use std::io::Read as _;
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SIZE + 1).read_to_end(&mut data))
        .map_err(read_error)?;
    if data.len() as u64 > MAX_SIZE {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            size: data.len() as u64,
        });
    }
    String::from_utf8(data).map_err(|e| {
        // Where, as an editor shows it: the line and column of the first bad byte.
        let at = e.utf8_error().valid_up_to();
        let good = &e.as_bytes()[..at];
        let line = good.iter().filter(|b| **b == b'\n').count() + 1;
        let start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&good[start..]).chars().count() + 1;
        read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("invalid UTF-8 at line {line}, column {column} (byte {at})"),
        ))
    })
}

/// Finds (or takes `explicit`) and loads the Pipelinefile.
pub fn locate_and_load(explicit: Option<&Path>, cwd: &Path) -> Result<Pipelinefile, ConfigError> {
    let path = match explicit {
        Some(p) => cwd.join(p),
        None => find(cwd).ok_or_else(|| ConfigError::NotFound(cwd.to_path_buf()))?,
    };
    load(&path, cwd)
}

/// Reads, parses and validates the file at `path`; every problem is reported at once.
/// `cwd` only shapes how the path is displayed in diagnostics.
pub fn load(path: &Path, cwd: &Path) -> Result<Pipelinefile, ConfigError> {
    let source = read(path)?;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    parse::parse(&path, source).map_err(|(diagnostics, source)| {
        let shown = path.strip_prefix(cwd).unwrap_or(&path);
        let rendered = diagnostic::render(&diagnostics, shown, &source);
        ConfigError::Invalid {
            diagnostics,
            rendered,
        }
    })
}
