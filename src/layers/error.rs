//! Why layer digests could not be computed, and what to do about it.

use std::path::PathBuf;

use crate::config::{LayerName, TargetKind};

/// Why a digest could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("no environment `{name}` in the Pipelinefile")]
    UnknownEnvironment { name: String, known: Vec<String> },
    #[error("[box] has no `{kind}` entry, needed to compute the layer digests for {kind}")]
    NoBox { kind: TargetKind },
    /// A caller computed digests without reading the build trust layers keep.
    #[error("the build trust kept in layers (keep_build_trust) was not read")]
    TrustNotRead,
    #[error("cannot read {} while computing the layer digests: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("variable `{name}` is used by the {layer} layer but has no value")]
    UnresolvedVar { name: String, layer: LayerName },
    #[error(
        "variable `{name}` is sensitive and used by the {layer} layer, but no digest key was given"
    )]
    MissingKey { name: String, layer: LayerName },
    #[error("digest key {}: {problem}", .path.display())]
    Key { path: PathBuf, problem: String },
}

impl DigestError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            DigestError::UnknownEnvironment { known, .. } if known.is_empty() => {
                "add an [env.NAME] table to the Pipelinefile".into()
            }
            DigestError::UnknownEnvironment { known, .. } => {
                format!("environments are: {}", known.join(", "))
            }
            DigestError::NoBox { kind } => {
                format!("add `{kind} = {{ ... }}` to [box]")
            }
            DigestError::TrustNotRead => return None,
            DigestError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                "the Pipelinefile names this path (relative to its folder): create it or fix \
                 the path"
                    .into()
            }
            DigestError::Read { .. } => "check that pipe may read it".into(),
            DigestError::UnresolvedVar { name, .. } => format!(
                "give `{name}` a value: `--var {name}=...`, PIPE_VAR_{name}, or, when it reads \
                 the host environment, set that variable or a `default`"
            ),
            DigestError::MissingKey { .. } => {
                format!("set {} or let pipe create its key file", super::KEY_ENV)
            }
            DigestError::Key { .. } => format!(
                "delete the file to have pipe create a new key (cached layers built with sensitive \
                 variables will be rebuilt once), or set {}",
                super::KEY_ENV
            ),
        })
    }
}

impl From<DigestError> for crate::error::Error {
    fn from(e: DigestError) -> Self {
        let hint = e.hint();
        match e {
            DigestError::UnknownEnvironment { .. } => {
                crate::error::Error::usage(e.to_string(), hint)
            }
            _ => crate::error::Error::runtime(e.to_string(), hint).caused_by(e),
        }
    }
}
