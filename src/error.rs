//! The top-level error every command returns, and how it maps to exit codes.

use crate::config::ConfigError;

/// Exit codes (documented in `pipe --help` and the README).
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const CONFIG: i32 = 3;
    pub const VERIFY_FAILED: i32 = 4;
    pub const GATE: i32 = 5;
    pub const NOT_IMPLEMENTED: i32 = 69;
    pub const INTERRUPTED: i32 = 130;
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Bad arguments that clap could not catch (unknown environment, ...).
    #[error("{message}")]
    Usage {
        message: String,
        hint: Option<String>,
    },
    /// A step of a run failed. The message says what and where; `source` keeps the error it
    /// came from (an engine, a box, a subprocess, the file system), so the chain is not lost.
    #[error("{message}")]
    Runtime {
        message: String,
        hint: Option<String>,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    #[error("verification failed: {0}")]
    VerifyFailed(String),
    #[error("{message}")]
    Gate {
        message: String,
        hint: Option<String>,
    },
    #[error("interrupted")]
    Interrupted,
    /// `pipe lint` found errors; they were printed as diagnostics already.
    #[error("lint found {} error{}", .0, if *.0 == 1 { "" } else { "s" })]
    Lint(usize),
    /// A command run on the machine exited with this code (`pipe exec`); nothing to print.
    #[error("the command exited with code {0}")]
    Exit(i32),
    #[error("`pipe {0}` is not implemented yet")]
    NotImplemented(&'static str),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Cleanup failed: shown with the error that started it, never instead of it.
    #[error("{}", cleanup_message(.error.as_deref(), .failures))]
    Cleanup {
        error: Option<Box<Error>>,
        failures: Vec<String>,
    },
}

fn cleanup_message(error: Option<&Error>, failures: &[String]) -> String {
    let mut s = match error {
        Some(e) => format!("{e}\nand cleanup also failed:"),
        None => "cleanup failed:".to_string(),
    };
    for f in failures {
        s.push_str("\n  - ");
        s.push_str(f);
    }
    s.push_str("\n(run `pipe clean` to remove what is left)");
    s
}

impl Error {
    /// A runtime failure with a hint.
    pub fn runtime(message: impl Into<String>, hint: impl Into<Option<String>>) -> Self {
        Error::Runtime {
            message: message.into(),
            hint: hint.into(),
            source: None,
        }
    }

    /// Keeps `source` as the error this one came from (a runtime failure's chain); other kinds
    /// are returned as they are.
    pub fn caused_by(self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        match self {
            Error::Runtime { message, hint, .. } => Error::Runtime {
                message,
                hint,
                source: Some(Box::new(source)),
            },
            other => other,
        }
    }

    /// A usage failure with a hint.
    pub fn usage(message: impl Into<String>, hint: impl Into<Option<String>>) -> Self {
        Error::Usage {
            message: message.into(),
            hint: hint.into(),
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            // 3 means every problem listed with file:line:column; a Pipelinefile that cannot be
            // found or read is a usage error.
            Error::Config(ConfigError::Invalid { .. }) => exit::CONFIG,
            Error::Config(_) => exit::USAGE,
            Error::Usage { .. } => exit::USAGE,
            Error::Runtime { .. } | Error::Io(_) => exit::FAILURE,
            Error::VerifyFailed(_) => exit::VERIFY_FAILED,
            Error::Gate { .. } => exit::GATE,
            Error::Interrupted => exit::INTERRUPTED,
            Error::Lint(_) => exit::CONFIG,
            Error::Exit(code) => *code,
            Error::NotImplemented(_) => exit::NOT_IMPLEMENTED,
            Error::Cleanup { error, .. } => error.as_ref().map_or(exit::FAILURE, |e| e.exit_code()),
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Usage { hint, .. } | Error::Runtime { hint, .. } | Error::Gate { hint, .. } => {
                hint.clone()
            }
            Error::Cleanup { error, .. } => error.as_ref().and_then(|e| e.hint()),
            Error::NotImplemented(_) => {
                Some("this command is planned; see the README's command tour".into())
            }
            Error::Lint(_) => Some(
                "fix them (each names its file and line), or bake with --no-lint to skip the checks"
                    .into(),
            ),
            _ => None,
        }
    }
}

impl From<crate::config::vars::VarError> for Error {
    fn from(e: crate::config::vars::VarError) -> Self {
        let hint = e.hint();
        Error::usage(e.to_string(), Some(hint))
    }
}

impl From<crate::engine::docker::DockerError> for Error {
    fn from(e: crate::engine::docker::DockerError) -> Self {
        Error::runtime(e.message(), e.hint()).caused_by(e)
    }
}

impl From<crate::process::ProcessError> for Error {
    fn from(e: crate::process::ProcessError) -> Self {
        Error::runtime(e.to_string(), None).caused_by(e)
    }
}

impl From<crate::engine::aws::AwsError> for Error {
    fn from(e: crate::engine::aws::AwsError) -> Self {
        match e {
            crate::engine::aws::AwsError::Interrupted => Error::Interrupted,
            e @ crate::engine::aws::AwsError::NoCredentials(_) => Error::runtime(
                e.to_string(),
                e.hint().map(|h| {
                    format!("{h}; without an AWS account, add --local to run the environment on the local Docker engine")
                }),
            ),
            e => Error::runtime(e.to_string(), e.hint()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn runtime_errors_keep_what_they_came_from() {
        let docker = crate::engine::docker::DockerError::Unreachable {
            endpoint: "/nonexistent.sock".into(),
            reason: "no such socket".into(),
        };
        let shown = docker.message();
        let e: Error = docker.into();
        assert_eq!(e.to_string(), shown, "the message is unchanged");
        let source = e.source().expect("the engine's error is kept");
        assert!(
            source
                .downcast_ref::<crate::engine::docker::DockerError>()
                .is_some()
        );

        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = Error::runtime("creating /x: gone", None).caused_by(io);
        let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(io.map(|e| e.kind()), Some(std::io::ErrorKind::NotFound));
        // Other kinds are left as they are.
        assert!(
            Error::Interrupted
                .caused_by(std::fmt::Error)
                .source()
                .is_none()
        );
    }
}
