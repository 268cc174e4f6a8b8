//! How commands and files reach a machine. Provisioners see only [`Communicator`].

pub mod docker;
pub mod ssh;
pub mod tar;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// A command to run on the machine.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// argv; run directly, not through a shell (use `["sh", "-c", ...]` for that).
    pub argv: Vec<String>,
    /// Extra environment. Values here may be sensitive: a communicator never logs them and
    /// never writes them anywhere that outlives the process.
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    /// Run as this user (default: the communicator's user, root for docker).
    pub user: Option<String>,
    /// Kill the command after this long; the result is then [`ExecError::TimedOut`].
    pub timeout: Option<Duration>,
    /// Bytes written to the command's stdin, then closed.
    pub stdin: Option<Vec<u8>>,
}

impl ExecRequest {
    /// `sh -c SCRIPT`.
    pub fn shell(script: impl Into<String>) -> Self {
        Self {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            ..Self::default()
        }
    }
}

/// Which stream a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Receives output while a command runs.
pub trait OutputSink: Send {
    fn chunk(&mut self, stream: Stream, data: &[u8]);

    /// Whether this sink already shows the output as it comes (then `-vv` does not show it
    /// twice).
    fn shows_live(&self) -> bool {
        false
    }
}

/// A sink that keeps everything, for tests and for captured commands.
#[derive(Debug, Default, Clone)]
pub struct Collect {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl OutputSink for Collect {
    fn chunk(&mut self, stream: Stream, data: &[u8]) {
        match stream {
            Stream::Stdout => self.stdout.extend_from_slice(data),
            Stream::Stderr => self.stderr.extend_from_slice(data),
        }
    }
}

/// Options for an upload.
#[derive(Debug, Clone, Default)]
pub struct UploadOptions {
    /// chown the uploaded tree to this user (and its group).
    pub owner: Option<String>,
}

/// Failures talking to a machine.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Transport(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How commands and files reach a target.
pub trait Communicator: Send + Sync {
    /// Short description for messages, e.g. `docker exec pipe-ponyfoo-dev`.
    fn describe(&self) -> String;

    /// Runs a command, streaming its output into `sink`; returns its exit code.
    fn exec(&self, req: &ExecRequest, sink: &mut dyn OutputSink) -> Result<i32, ExecError>;

    /// Uploads a file or a directory tree (as one tar stream) to `dest` on the machine.
    /// A source folder becomes `dest` itself (its contents land in `dest`); a file becomes the
    /// file `dest`. Modes are kept; `.pipeignore` files in the tree are honoured.
    fn upload(&self, src: &Path, dest: &str, opts: &UploadOptions) -> Result<(), ExecError>;

    /// Uploads bytes as one file with the given mode.
    fn upload_bytes(&self, data: &[u8], dest: &str, mode: u32) -> Result<(), ExecError>;

    /// Downloads a file or tree at `src` on the machine into the host folder or file `dest`.
    fn download(&self, src: &str, dest: &Path) -> Result<(), ExecError>;
}
