//! The Pipelinefile: finding it, parsing it with spans, validating it, interpolating it.

pub mod confine;
pub mod diagnostic;
pub mod duration;
pub mod keys;
mod known;
pub mod model;
pub mod parse;
pub mod schema;
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
fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
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
    Ok(data)
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
    let data = read(path)?;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let shown = path.strip_prefix(cwd).unwrap_or(&path).to_path_buf();
    let invalid = |diagnostics: Vec<Diagnostic>, source: &str| ConfigError::Invalid {
        rendered: diagnostic::render(&diagnostics, &shown, source),
        diagnostics,
    };
    let source = match String::from_utf8(data) {
        Ok(s) => s,
        Err(e) => {
            // Shown where an editor would show it (the bad bytes as U+FFFD, 3 bytes long);
            // the rest of the file is not parsed.
            let at = e.utf8_error().valid_up_to();
            let shown_source = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let d = Diagnostic::new("invalid UTF-8", model::Span::new(at, at + 3))
                .with_hint("a Pipelinefile is UTF-8 text: save it as UTF-8");
            return Err(invalid(vec![d], &shown_source));
        }
    };
    parse::parse(&path, source).map_err(|(diagnostics, source)| invalid(diagnostics, &source))
}
