//! The Pipelinefile: finding it, parsing it with spans, validating it, interpolating it.

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
    /// Every problem found, rendered with locations.
    #[error("{rendered}")]
    Invalid {
        diagnostics: Vec<Diagnostic>,
        rendered: String,
    },
}

/// The Pipelinefile in `start` or its nearest parent.
pub fn find(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(FILE_NAME))
        .find(|p| p.is_file())
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
    let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
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
