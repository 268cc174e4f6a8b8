//! What can go wrong talking to the Docker engine; every message names the resource.

/// Separates a message from its hint in [`DockerError`]'s `Display`.
const HINT_SEP: &str = " — hint: ";

/// A failed Engine API call. `Display` is the message followed by ` — hint: ...` when there is
/// one; [`DockerError::message`] and [`DockerError::hint`] give the two parts.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "cannot reach the Docker engine at {endpoint}: {reason} — hint: start it (scripts/setup does) or set DOCKER_HOST"
    )]
    Unreachable { endpoint: String, reason: String },

    #[error(
        "DOCKER_HOST={value} is not supported — hint: pipe talks to a local engine over a unix socket (unix:///var/run/docker.sock); unset DOCKER_HOST or point it at a socket"
    )]
    UnsupportedHost { value: String },

    /// `what` is e.g. `image pipe-box/debian-12:latest` or `container pipe-x`.
    #[error("{what} not found{}", hint_suffix(.hint))]
    NotFound { what: String, hint: Option<String> },

    /// The engine refused or failed a request. `action` is e.g. `create container`.
    #[error("{action} {what}: {message}{}", hint_suffix(.hint))]
    Api {
        action: &'static str,
        what: String,
        message: String,
        /// The HTTP status when the engine answered.
        status: Option<u16>,
        hint: Option<String>,
    },

    /// Producing or consuming a stream (a tar sent to or read from the engine) failed.
    #[error("{action} {what}: {source}")]
    Io {
        action: &'static str,
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref()
        .map(|h| format!("{HINT_SEP}{h}"))
        .unwrap_or_default()
}

impl DockerError {
    /// The message without its hint.
    pub fn message(&self) -> String {
        let s = self.to_string();
        match s.split_once(HINT_SEP) {
            Some((m, _)) => m.to_string(),
            None => s,
        }
    }

    /// What to do about it, when pipe knows.
    pub fn hint(&self) -> Option<String> {
        self.to_string()
            .split_once(HINT_SEP)
            .map(|(_, h)| h.to_string())
    }

    /// True for a 404 from the engine (or [`DockerError::NotFound`]).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            DockerError::NotFound { .. }
                | DockerError::Api {
                    status: Some(404),
                    ..
                }
        )
    }

    /// The same error with `hint` when it has none.
    pub fn with_hint(self, hint: &str) -> Self {
        match self {
            DockerError::Api {
                action,
                what,
                message,
                status,
                hint: None,
            } => DockerError::Api {
                action,
                what,
                message,
                status,
                hint: Some(hint.to_string()),
            },
            other => other,
        }
    }

    /// Wraps a bollard error from `action` on `what`.
    pub(crate) fn api(
        action: &'static str,
        what: impl Into<String>,
        e: bollard::errors::Error,
    ) -> Self {
        use bollard::errors::Error as B;
        let what = what.into();
        match e {
            B::DockerResponseServerError {
                status_code,
                message,
            } => {
                let hint = match status_code {
                    409 if action.starts_with("remove") => Some(
                        "something still uses it (a container or a child image); remove that first"
                            .to_string(),
                    ),
                    409 => Some(
                        "a resource with that name exists; pick another name or remove it".into(),
                    ),
                    _ => None,
                };
                DockerError::Api {
                    action,
                    what,
                    message: message.trim().to_string(),
                    status: Some(status_code),
                    hint,
                }
            }
            B::DockerStreamError { error } => DockerError::Api {
                action,
                what,
                message: error,
                status: None,
                hint: None,
            },
            B::RequestTimeoutError => DockerError::Api {
                action,
                what,
                message: "the engine did not answer in time".into(),
                status: None,
                hint: Some("check that dockerd is healthy (`docker info`)".into()),
            },
            other => DockerError::Api {
                action,
                what,
                message: other.to_string(),
                status: None,
                hint: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_and_hint_split() {
        let e = DockerError::Unreachable {
            endpoint: "/var/run/docker.sock".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(
            e.message(),
            "cannot reach the Docker engine at /var/run/docker.sock: connection refused"
        );
        assert_eq!(
            e.hint().as_deref(),
            Some("start it (scripts/setup does) or set DOCKER_HOST")
        );
        let e = DockerError::NotFound {
            what: "image x".into(),
            hint: None,
        };
        assert_eq!(e.to_string(), "image x not found");
        assert!(e.hint().is_none());
        assert!(e.is_not_found());
    }
}
