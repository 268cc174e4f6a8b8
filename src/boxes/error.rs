//! Why a box could not be found, built or removed.

use std::path::PathBuf;

use crate::engine::docker::DockerError;
use crate::process::ProcessError;

#[derive(Debug, thiserror::Error)]
pub enum BoxError {
    #[error("{message}")]
    Usage {
        message: String,
        hint: Option<String>,
    },

    #[error("box recipe {name:?} not found (looked for boxes/{name}.toml in {} and its parents)", searched.display())]
    RecipeNotFound { name: String, searched: PathBuf },

    #[error("box recipe {}: {message}", path.display())]
    Recipe { path: PathBuf, message: String },

    #[error(
        "no Debian mirror for suite {suite:?}: the host's apt sources have no `deb` entry for it"
    )]
    NoMirror { suite: String },

    #[error("building a box needs root: debootstrap creates device nodes and runs chroot")]
    NotRoot,

    #[error("{tool} is not installed")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },

    /// A tool (debootstrap, mke2fs, qemu-img, ...) failed; the error shows its command line,
    /// status and last lines of output.
    #[error("box {name}: {source}")]
    Command {
        name: String,
        step: &'static str,
        #[source]
        source: ProcessError,
    },

    #[error("box {name}: {step}: {source}")]
    Io {
        name: String,
        step: String,
        #[source]
        source: std::io::Error,
    },

    #[error("box {name} is not built for {target}")]
    NotBuilt { name: String, target: &'static str },

    #[error(transparent)]
    Docker(#[from] DockerError),

    #[error("interrupted")]
    Interrupted,
}

impl BoxError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            BoxError::Usage { hint, .. } => hint.clone(),
            BoxError::RecipeNotFound { name, .. } => Some(format!(
                "write boxes/{name}.toml next to the Pipelinefile (boxes/debian-12.toml shows the format)"
            )),
            BoxError::Recipe { .. } => {
                Some("boxes/debian-12.toml documents every field".into())
            }
            BoxError::NoMirror { .. } => Some(format!(
                "set `mirror` in the recipe's [box] table or {} in the environment",
                super::mirror::MIRROR_ENV
            )),
            BoxError::NotRoot => Some("run `pipe box build` as root (sudo)".into()),
            BoxError::MissingTool { package, .. } => {
                Some(format!("install it: apt-get install {package}"))
            }
            BoxError::Command { step, .. } if *step == "debootstrap" => Some(
                "run with -v to see debootstrap's output; check that the mirror is reachable and the packages exist in the suite".into(),
            ),
            BoxError::NotBuilt { name, target } => {
                Some(format!("build it: pipe box build {name} --target {target}"))
            }
            BoxError::Docker(e) => e.hint(),
            _ => None,
        }
    }
}

impl From<BoxError> for crate::error::Error {
    fn from(e: BoxError) -> Self {
        use crate::error::Error;
        match e {
            BoxError::Interrupted => Error::Interrupted,
            BoxError::Docker(d) => d.into(),
            BoxError::Usage { message, hint } => Error::usage(message, hint),
            e @ BoxError::RecipeNotFound { .. } => Error::usage(e.to_string(), e.hint()),
            e => Error::runtime(e.to_string(), e.hint()).caused_by(e),
        }
    }
}
