//! The SSH communicator (libssh2 through the `ssh2` crate), for VMs on 127.0.0.1 and for
//! remote machines alike (the EC2 target uses it as is).
//!
//! - **Connect** ([`connect`]): key authentication only. Connection refused, resets,
//!   handshake failures and refused keys (cloud-init may not have installed it yet) are
//!   retried with a capped exponential back-off until [`SshSettings::ssh_timeout`]; a host key
//!   that does not match is never retried. TCP and SSH keep-alives run every
//!   [`SshSettings::keepalive`].
//! - **Host keys**: see [`known_hosts`]: `strict` or `accept-new` against a known_hosts file.
//! - **Bastion**: an optional jump host, see [`tunnel`].
//! - **Exec** ([`exec`]): one channel per command. stdout and stderr (extended data) are read
//!   in one non-blocking loop that also feeds stdin, so no pipe can fill up while the other
//!   side waits. The command line is built by [`command`]: environment values go on it (sshd
//!   rejects `setenv`) and are never logged; another user is reached with `runuser` (login
//!   root) or `sudo -n`. On a timeout or Ctrl-C the channel is closed and every process marked
//!   with the exec's id is killed from a second channel.
//! - **Upload** ([`transfer`]): the same tar stream as docker exec ([`super::tar`]), written
//!   into `mkdir -p PARENT && tar -x -C PARENT` over one channel, streamed (never all in
//!   memory).
//! - **Download** ([`transfer`]): `tar -c` over a channel, unpacked locally while it arrives.
//!
//! One SSH session is kept and reused; commands take turns on it. A session that broke (a
//! rebooted machine) is replaced once, transparently.

pub mod command;
mod connect;
mod exec;
pub mod known_hosts;
mod transfer;
mod tunnel;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{Communicator, ExecError, ExecRequest, OutputSink, UploadOptions};
use command::Identity;
use connect::Conn;
pub use known_hosts::HostKeyPolicy;

/// How long to keep trying to connect, by default (Packer's and Vagrant's default too).
pub const DEFAULT_SSH_TIMEOUT: Duration = Duration::from_secs(300);
/// Keep-alive interval by default.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(15);
/// One blocking libssh2 call (handshake, auth, opening a channel) may take this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSettings {
    /// The machine's address (a name or an IP).
    pub host: String,
    /// sshd's port.
    pub port: u16,
    /// The user pipe logs in as.
    pub user: String,
    /// The private key (OpenSSH or PEM format, no passphrase).
    pub key: PathBuf,
    /// What to do with the host key the machine presents.
    pub host_key: HostKeyPolicy,
    /// The known_hosts file checked (and appended to with `accept-new`).
    pub known_hosts: PathBuf,
    /// The jump host to go through, if any.
    pub bastion: Option<Bastion>,
    /// Keep trying to connect for this long.
    pub ssh_timeout: Duration,
    /// TCP and SSH keep-alive interval; zero turns them off.
    pub keepalive: Duration,
    /// Run commands without a user as root (`sudo -n` when the login user is not root), as
    /// docker exec does. Provisioners expect it.
    pub root_by_default: bool,
}

/// A jump host: pipe connects to it first and reaches the machine through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bastion {
    /// The bastion's address.
    pub host: String,
    /// The bastion's sshd port.
    pub port: u16,
    /// The user pipe logs in to the bastion as.
    pub user: String,
    /// Defaults to the machine's key.
    pub key: Option<PathBuf>,
}

impl SshSettings {
    /// Settings with the defaults: port 22, `accept-new` against `~/.ssh/known_hosts`, no
    /// bastion, 5 minutes to connect, 15 s keep-alives, root by default.
    pub fn new(host: impl Into<String>, user: impl Into<String>, key: impl Into<PathBuf>) -> Self {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"));
        Self {
            host: host.into(),
            port: 22,
            user: user.into(),
            key: key.into(),
            host_key: HostKeyPolicy::AcceptNew,
            known_hosts: home.join(".ssh/known_hosts"),
            bastion: None,
            ssh_timeout: DEFAULT_SSH_TIMEOUT,
            keepalive: DEFAULT_KEEPALIVE,
            root_by_default: true,
        }
    }

    fn identity(&self) -> Identity {
        Identity {
            login: self.user.clone(),
            root_by_default: self.root_by_default,
        }
    }

    fn target(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

/// Commands and files over SSH.
pub struct SshComm {
    settings: SshSettings,
    conn: Mutex<Option<Conn>>,
    /// False for cleanup work that must finish after Ctrl-C (see [`SshComm::uninterruptible`]).
    interruptible: bool,
}

impl SshComm {
    /// A communicator for `settings`; nothing connects until the first command.
    pub fn new(settings: SshSettings) -> Self {
        Self {
            settings,
            conn: Mutex::new(None),
            interruptible: true,
        }
    }

    /// A communicator that keeps going after Ctrl-C (only an abandoned cleanup stops it), for
    /// cleanup that must finish, as [`super::docker::DockerExec::uninterruptible`].
    pub fn uninterruptible(mut self) -> Self {
        self.interruptible = false;
        self
    }

    /// Whether to stop now: on Ctrl-C, or when uninterruptible once cleanup is abandoned.
    pub fn stopping(&self) -> bool {
        stopping(self.interruptible)
    }

    /// The settings this communicator connects with.
    pub fn settings(&self) -> &SshSettings {
        &self.settings
    }

    /// Changes how long a later reconnect keeps trying (the live session stays).
    pub fn set_ssh_timeout(&mut self, timeout: Duration) {
        self.settings.ssh_timeout = timeout;
    }

    /// Connects now (with retries until `ssh_timeout`); later commands reuse the session.
    pub fn connect(&self) -> Result<(), ExecError> {
        let mut guard = self.lock();
        if guard.is_none() {
            *guard = Some(self.dial()?);
        }
        Ok(())
    }

    /// Closes the session (a later command connects again).
    pub fn disconnect(&self) {
        self.lock().take();
    }

    fn lock(&self) -> MutexGuard<'_, Option<Conn>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Ctrl-C for an interruptible communicator; an abandoned cleanup for the others.
fn stopping(interruptible: bool) -> bool {
    if interruptible {
        crate::interrupt::requested()
    } else {
        crate::interrupt::abandoned()
    }
}

impl Communicator for SshComm {
    fn describe(&self) -> String {
        let s = &self.settings;
        match &s.bastion {
            None => format!("ssh {}", s.target()),
            Some(b) => format!("ssh {} via {}@{}:{}", s.target(), b.user, b.host, b.port),
        }
    }

    fn exec(&self, req: &ExecRequest, sink: &mut dyn OutputSink) -> Result<i32, ExecError> {
        self.exec_request(req, sink)
    }

    fn upload(&self, src: &Path, dest: &str, opts: &UploadOptions) -> Result<(), ExecError> {
        self.tar_upload(src, dest, opts)
    }

    fn upload_bytes(&self, data: &[u8], dest: &str, mode: u32) -> Result<(), ExecError> {
        self.tar_upload_bytes(data, dest, mode)
    }

    fn download(&self, src: &str, dest: &Path) -> Result<(), ExecError> {
        self.tar_download(src, dest)
    }
}
