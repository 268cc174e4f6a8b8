//! The SSH communicator (libssh2 through the `ssh2` crate), for VMs on 127.0.0.1 and for
//! remote machines alike (the EC2 target uses it as is).
//!
//! - **Connect**: key authentication only. Connection refused, resets, handshake failures and
//!   refused keys (cloud-init may not have installed it yet) are retried with a capped
//!   exponential back-off until [`SshSettings::ssh_timeout`]; a host key that does not match
//!   is never retried. TCP and SSH keep-alives run every [`SshSettings::keepalive`].
//! - **Host keys**: see [`known_hosts`]: `strict` or `accept-new` against a known_hosts file.
//! - **Bastion**: an optional jump host, see [`tunnel`].
//! - **Exec**: one channel per command. stdout and stderr (extended data) are read in one
//!   non-blocking loop that also feeds stdin, so no pipe can fill up while the other side
//!   waits. The command line is built by [`command`]: environment values go on it (sshd
//!   rejects `setenv`) and are never logged; another user is reached with `runuser` (login
//!   root) or `sudo -n`. On a timeout or Ctrl-C the channel is closed and every process marked
//!   with the exec's id is killed from a second channel.
//! - **Upload**: the same tar stream as docker exec ([`super::tar`]), written into
//!   `mkdir -p PARENT && tar -x -C PARENT` over one channel, streamed (never all in memory).
//! - **Download**: `tar -c` over a channel, unpacked locally while it arrives.
//!
//! One SSH session is kept and reused; commands take turns on it. A session that broke (a
//! rebooted machine) is replaced once, transparently.

pub mod command;
pub mod known_hosts;
mod tunnel;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ssh2::{Channel, ErrorCode, Session};

use super::tar;
use super::{Collect, Communicator, ExecError, ExecRequest, OutputSink, Stream, UploadOptions};
use command::Identity;
pub use known_hosts::HostKeyPolicy;

/// How long to keep trying to connect, by default (Packer's and Vagrant's default too).
pub const DEFAULT_SSH_TIMEOUT: Duration = Duration::from_secs(300);
/// Keep-alive interval by default.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(15);

/// libssh2's "would block".
const EAGAIN: i32 = -37;
/// One blocking libssh2 call (handshake, auth, opening a channel) may take this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// First and longest pause between connection attempts.
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long to wait for the output to end after killing a stopped command.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The private key (OpenSSH or PEM format, no passphrase).
    pub key: PathBuf,
    pub host_key: HostKeyPolicy,
    /// The known_hosts file checked (and appended to with `accept-new`).
    pub known_hosts: PathBuf,
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
    pub host: String,
    pub port: u16,
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

/// A live session. Field order is drop order: the session goes before its tunnel.
struct Conn {
    session: Session,
    /// A duplicate of the session's socket, to wait on.
    fd: OwnedFd,
    _tunnel: Option<tunnel::Tunnel>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.session.set_blocking(true);
        self.session.set_timeout(2_000);
        let _ = self.session.disconnect(None, "pipe: done", None);
    }
}

/// Why one connection attempt failed.
enum Attempt {
    /// Worth another try (the machine is still booting, the key is not installed yet).
    Retry(String),
    /// Never going to work (a changed host key, a missing key file).
    Fatal(String),
}

/// What a command reads on stdin.
enum Input {
    None,
    Bytes(Vec<u8>),
    /// Chunks produced by another thread; the end of the channel is the end of input.
    Stream(Receiver<Vec<u8>>),
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

    /// Connects with retries and back-off until `ssh_timeout`.
    fn dial(&self) -> Result<Conn, ExecError> {
        let s = &self.settings;
        if !s.key.is_file() {
            return Err(ExecError::Transport(format!(
                "ssh {}: private key {} not found",
                s.target(),
                s.key.display()
            )));
        }
        let deadline = Instant::now() + s.ssh_timeout;
        let mut delay = BACKOFF_START;
        let mut attempts = 0u32;
        loop {
            if self.stopping() {
                return Err(ExecError::Interrupted);
            }
            attempts += 1;
            let last = match self.attempt(deadline) {
                Ok(conn) => return Ok(conn),
                Err(Attempt::Fatal(m)) => {
                    return Err(ExecError::Transport(format!("ssh {}: {m}", s.target())));
                }
                Err(Attempt::Retry(m)) => m,
            };
            let now = Instant::now();
            if now + delay >= deadline {
                return Err(ExecError::Transport(format!(
                    "ssh {}: no connection within {}s ({attempts} attempts); last error: {last}",
                    s.target(),
                    s.ssh_timeout.as_secs()
                )));
            }
            sleep_interruptibly(delay, self.interruptible);
            delay = (delay * 2).min(BACKOFF_MAX);
        }
    }

    /// One connection attempt: TCP (or the bastion's tunnel), handshake, host key, key auth.
    fn attempt(&self, deadline: Instant) -> Result<Conn, Attempt> {
        let s = &self.settings;
        let (session, fd, tunnel) = match &s.bastion {
            None => {
                let tcp = tcp_connect(&s.host, s.port, deadline, s.keepalive)?;
                let fd = dup_fd(&tcp)?;
                let session = handshake(tcp, deadline)?;
                (session, fd, None)
            }
            Some(b) => {
                let tcp = tcp_connect(&b.host, b.port, deadline, s.keepalive)?;
                let bfd = dup_fd(&tcp)?;
                let bsess = handshake(tcp, deadline)?;
                known_hosts::check(&bsess, &b.host, b.port, &s.known_hosts, s.host_key)
                    .map_err(|e| Attempt::Fatal(format!("bastion: {e}")))?;
                let key = b.key.as_deref().unwrap_or(&s.key);
                authenticate(&bsess, &b.user, key)
                    .map_err(|m| Attempt::Retry(format!("bastion {}: {m}", b.host)))?;
                let channel = bsess
                    .channel_direct_tcpip(&s.host, s.port, None)
                    .map_err(|e| {
                        Attempt::Retry(format!(
                            "bastion {} cannot reach {}:{}: {e}",
                            b.host, s.host, s.port
                        ))
                    })?;
                let (tunnel, stream) =
                    tunnel::start(bsess, channel, bfd, s.keepalive.as_secs() as u32)
                        .map_err(|e| Attempt::Retry(format!("bastion tunnel: {e}")))?;
                let fd = dup_fd(&stream)?;
                let session = handshake(stream, deadline)?;
                (session, fd, Some(tunnel))
            }
        };
        known_hosts::check(&session, &s.host, s.port, &s.known_hosts, s.host_key)
            .map_err(|e| Attempt::Fatal(e.to_string()))?;
        authenticate(&session, &s.user, &s.key).map_err(Attempt::Retry)?;
        if !s.keepalive.is_zero() {
            session.set_keepalive(false, s.keepalive.as_secs().max(1) as u32);
        }
        Ok(Conn {
            session,
            fd,
            _tunnel: tunnel,
        })
    }

    /// Runs `cmd` on a channel, feeding `input` and streaming the output into `sink`.
    fn run(
        &self,
        cmd: &str,
        marker: &str,
        input: Input,
        timeout: Option<Duration>,
        sink: &mut dyn OutputSink,
    ) -> Result<i32, ExecError> {
        let mut guard = self.lock();
        let mut channel = self.open(&mut guard, cmd)?;
        let res = pump(
            guard.as_ref().expect("open connects"),
            &mut channel,
            input,
            timeout,
            sink,
            self.interruptible,
        );
        let stopped = match res {
            Ok(()) => None,
            Err(e @ (ExecError::TimedOut(_) | ExecError::Interrupted)) => Some(e),
            Err(e) => {
                // The session is in an unknown state; the next command connects afresh.
                drop(channel);
                guard.take();
                return Err(e);
            }
        };
        let sess = &guard.as_ref().expect("still connected").session;
        sess.set_blocking(true);
        if let Some(err) = stopped {
            // Kill first: sshd answers a close only once the command has exited.
            sess.set_timeout(CALL_TIMEOUT.as_millis() as u32);
            let killed = sess.channel_session().and_then(|mut k| {
                k.exec(&command::kill_command(&self.settings.identity(), marker))?;
                let mut out = Vec::new();
                let _ = k.read_to_end(&mut out);
                k.close()?;
                k.wait_close()
            });
            sess.set_timeout(KILL_GRACE.as_millis() as u32);
            let closed = channel.close().and_then(|()| channel.wait_close());
            drop(channel);
            if killed.is_err() || closed.is_err() {
                guard.take();
            }
            return Err(err);
        }
        sess.set_timeout(KILL_GRACE.as_millis() as u32);
        let _ = channel.close();
        let _ = channel.wait_close();
        let code = match channel.exit_signal() {
            Ok(sig) if sig.exit_signal.is_some() => {
                128 + signal_number(sig.exit_signal.as_deref().unwrap_or(""))
            }
            _ => channel
                .exit_status()
                .map_err(|e| self.err("exit status", e))?,
        };
        Ok(code)
    }

    /// Opens a channel and starts `cmd`, connecting (or reconnecting once) as needed.
    fn open(&self, guard: &mut Option<Conn>, cmd: &str) -> Result<Channel, ExecError> {
        let mut fresh = false;
        loop {
            if guard.is_none() {
                *guard = Some(self.dial()?);
                fresh = true;
            }
            let conn = guard.as_ref().expect("connected");
            let sess = &conn.session;
            sess.set_blocking(true);
            sess.set_timeout(CALL_TIMEOUT.as_millis() as u32);
            let opened = sess.channel_session().and_then(|mut ch| {
                ch.exec(cmd)?;
                Ok(ch)
            });
            match opened {
                Ok(ch) => return Ok(ch),
                Err(_) if !fresh => {
                    // A kept session may have died with the machine's network; one reconnect.
                    guard.take();
                }
                Err(e) => return Err(self.err("open a channel", e)),
            }
        }
    }

    fn err(&self, what: &str, e: ssh2::Error) -> ExecError {
        ExecError::Transport(format!("ssh {}: {what}: {e}", self.settings.target()))
    }

    /// Runs a helper command that must succeed; its stderr is in the error.
    fn run_checked(
        &self,
        what: &str,
        argv: Vec<String>,
        input: Input,
        sink: Option<&mut dyn OutputSink>,
    ) -> Result<(), ExecError> {
        let marker = new_marker();
        let cmd = command::exec_command(
            &self.settings.identity(),
            &marker,
            &argv,
            &Default::default(),
            None,
            None,
        )?;
        let mut collect = Collect::default();
        let mut tee = Tee {
            stdout: sink,
            all: &mut collect,
        };
        let code = self.run(
            &cmd,
            &marker,
            input,
            Some(Duration::from_secs(3600)),
            &mut tee,
        )?;
        if code != 0 {
            return Err(ExecError::Transport(format!(
                "{what} on {} failed with exit code {code}: {}",
                self.describe(),
                String::from_utf8_lossy(&collect.stderr).trim()
            )));
        }
        Ok(())
    }
}

/// Sends stdout to `stdout` (when given) and keeps stderr in `all`.
struct Tee<'s, 'd, 'c> {
    stdout: Option<&'s mut (dyn OutputSink + 'd)>,
    all: &'c mut Collect,
}

impl OutputSink for Tee<'_, '_, '_> {
    fn chunk(&mut self, stream: Stream, data: &[u8]) {
        match (stream, self.stdout.as_mut()) {
            (Stream::Stdout, Some(s)) => s.chunk(stream, data),
            _ => self.all.chunk(stream, data),
        }
    }
}

/// The exec loop: feed stdin, read stdout and stderr, until the channel's end of file.
fn pump(
    conn: &Conn,
    channel: &mut Channel,
    mut input: Input,
    timeout: Option<Duration>,
    sink: &mut dyn OutputSink,
    interruptible: bool,
) -> Result<(), ExecError> {
    let sess = &conn.session;
    sess.set_blocking(false);
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut offset = 0usize;
    let mut input_done = matches!(input, Input::None);
    let mut eof_sent = false;
    if let Input::Bytes(b) = &mut input {
        pending = std::mem::take(b);
    }
    let mut stderr = channel.stderr();
    loop {
        let mut progress = false;
        // stdin
        if !input_done {
            if offset == pending.len() {
                pending.clear();
                offset = 0;
                match &input {
                    Input::Stream(rx) => match rx.try_recv() {
                        Ok(chunk) => {
                            pending = chunk;
                            progress = true;
                        }
                        Err(TryRecvError::Empty) => {}
                        Err(TryRecvError::Disconnected) => input_done = true,
                    },
                    _ => input_done = true,
                }
            }
            if offset < pending.len() {
                match channel.write(&pending[offset..]) {
                    Ok(n) => {
                        offset += n;
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The command stopped reading; what it did not read does not matter.
                    Err(_) => input_done = true,
                }
            }
        }
        if input_done && !eof_sent {
            match channel.send_eof() {
                Ok(()) => eof_sent = true,
                Err(e) if e.code() == ErrorCode::Session(EAGAIN) => {}
                Err(_) => eof_sent = true,
            }
        }
        // stdout, then stderr: each read until it would block, so neither window stalls.
        for (stream, which) in [(Stream::Stdout, 0), (Stream::Stderr, 1)] {
            loop {
                let r = if which == 0 {
                    channel.read(&mut buf)
                } else {
                    stderr.read(&mut buf)
                };
                match r {
                    Ok(0) => break,
                    Ok(n) => {
                        sink.chunk(stream, &buf[..n]);
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(ExecError::Transport(format!("ssh read: {e}"))),
                }
            }
        }
        if channel.eof() {
            // Drain what may have arrived with the end of file.
            for (stream, which) in [(Stream::Stdout, 0), (Stream::Stderr, 1)] {
                loop {
                    let r = if which == 0 {
                        channel.read(&mut buf)
                    } else {
                        stderr.read(&mut buf)
                    };
                    match r {
                        Ok(n) if n > 0 => sink.chunk(stream, &buf[..n]),
                        _ => break,
                    }
                }
            }
            return Ok(());
        }
        if stopping(interruptible) {
            return Err(ExecError::Interrupted);
        }
        if let (Some(d), Some(t)) = (deadline, timeout)
            && Instant::now() >= d
        {
            return Err(ExecError::TimedOut(t));
        }
        let _ = sess.keepalive_send();
        if !progress {
            let want_write = !input_done && offset < pending.len();
            let waiting_for_producer = !input_done && offset == pending.len();
            let mut fd = libc::pollfd {
                fd: conn.fd.as_raw_fd(),
                events: libc::POLLIN | if want_write { libc::POLLOUT } else { 0 },
                revents: 0,
            };
            let ms = if waiting_for_producer { 5 } else { 100 };
            // SAFETY: one valid pollfd for an fd the connection owns.
            unsafe {
                libc::poll(&mut fd, 1, ms);
            }
        }
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
        let marker = new_marker();
        let cmd = command::exec_command(
            &self.settings.identity(),
            &marker,
            &req.argv,
            &req.env,
            req.workdir.as_deref(),
            req.user.as_deref(),
        )?;
        let input = match &req.stdin {
            Some(data) => Input::Bytes(data.clone()),
            None => Input::None,
        };
        self.run(&cmd, &marker, input, req.timeout, sink)
    }

    fn upload(&self, src: &Path, dest: &str, opts: &UploadOptions) -> Result<(), ExecError> {
        let (parent, name) = tar::split_dest(dest)?;
        // Fail before creating anything when the source is missing.
        std::fs::symlink_metadata(src).map_err(|e| {
            io::Error::new(e.kind(), format!("upload source {}: {e}", src.display()))
        })?;
        let src = src.to_path_buf();
        let top = name.clone();
        let (rx, producer) = produce(move |w| tar::write_tree(&src, &top, w));
        let argv = command::untar_command(&self.settings.identity(), &parent);
        let sent = self.run_checked(
            &format!("`tar -x` into {parent}"),
            argv,
            Input::Stream(rx),
            None,
        );
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("tar panicked")));
        // A failure to read the source explains a failed extraction; report it first.
        produced?;
        sent?;
        if let Some(owner) = &opts.owner {
            let path = format!("{parent}/{name}").replace("//", "/");
            self.run_checked(
                &format!("`chown -R {owner}:`"),
                vec!["chown".into(), "-R".into(), format!("{owner}:"), path],
                Input::None,
                None,
            )?;
        }
        Ok(())
    }

    fn upload_bytes(&self, data: &[u8], dest: &str, mode: u32) -> Result<(), ExecError> {
        let (parent, name) = tar::split_dest(dest)?;
        let mut archive = Vec::with_capacity(data.len() + 2048);
        tar::write_bytes(data, &name, mode, &mut archive)?;
        let argv = command::untar_command(&self.settings.identity(), &parent);
        self.run_checked(
            &format!("`tar -x` into {parent}"),
            argv,
            Input::Bytes(archive),
            None,
        )
    }

    fn download(&self, src: &str, dest: &Path) -> Result<(), ExecError> {
        let (parent, name) = tar::split_dest(src)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(32);
        let dest = dest.to_path_buf();
        let unpacker = std::thread::spawn(move || tar::unpack_tree(ChunkReader::new(rx), &dest));
        let mut forward = Forward { tx: Some(tx) };
        let argv = command::tar_command(&self.settings.identity(), &parent, &name);
        let fetched = self.run_checked(
            &format!("`tar -c` of {src}"),
            argv,
            Input::None,
            Some(&mut forward),
        );
        drop(forward);
        let unpacked = unpacker
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("unpacking panicked")));
        fetched?;
        unpacked?;
        Ok(())
    }
}

/// Hands stdout chunks to the unpacking thread (dropping them once it has given up).
struct Forward {
    tx: Option<SyncSender<Vec<u8>>>,
}

impl OutputSink for Forward {
    fn chunk(&mut self, stream: Stream, data: &[u8]) {
        if stream != Stream::Stdout {
            return;
        }
        if let Some(tx) = &self.tx
            && tx.send(data.to_vec()).is_err()
        {
            self.tx = None;
        }
    }
}

/// Reads the chunks a channel delivers, as one stream.
struct ChunkReader {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    fn new(rx: Receiver<Vec<u8>>) -> Self {
        Self {
            rx,
            cur: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Writes into chunks for the exec loop.
struct ChunkWriter {
    tx: SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 64 * 1024;

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.tx
                .send(chunk)
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))?;
        }
        Ok(())
    }
}

/// Runs `write` on a thread, its output becoming chunks on the returned receiver.
fn produce(
    write: impl FnOnce(&mut ChunkWriter) -> io::Result<()> + Send + 'static,
) -> (Receiver<Vec<u8>>, std::thread::JoinHandle<io::Result<()>>) {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(32);
    let handle = std::thread::spawn(move || {
        let mut w = ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        write(&mut w)?;
        w.flush()
    });
    (rx, handle)
}

/// Resolves and connects within the deadline (at most 10 s per address).
fn tcp_connect(
    host: &str,
    port: u16,
    deadline: Instant,
    keepalive: Duration,
) -> Result<TcpStream, Attempt> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| Attempt::Retry(format!("resolving {host}: {e}")))?
        .collect();
    let mut last = format!("{host} has no address");
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = left
            .min(Duration::from_secs(10))
            .max(Duration::from_millis(100));
        match TcpStream::connect_timeout(&addr, wait) {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                if !keepalive.is_zero() {
                    set_tcp_keepalive(&tcp, keepalive);
                }
                return Ok(tcp);
            }
            Err(e) => last = format!("connecting to {addr}: {e}"),
        }
    }
    Err(Attempt::Retry(last))
}

/// Turns on TCP keep-alive probes so a vanished peer is noticed even while idle.
fn set_tcp_keepalive(tcp: &TcpStream, every: Duration) {
    let fd = tcp.as_raw_fd();
    let secs = every.as_secs().clamp(1, 3600) as libc::c_int;
    let set = |level, name, value: libc::c_int| {
        // SAFETY: setsockopt with a valid fd and a pointer to an int of the right size.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, secs);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 4);
}

fn dup_fd(s: &impl AsRawFd) -> Result<OwnedFd, Attempt> {
    // SAFETY: borrowing an fd that is open for the duration of this call.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(s.as_raw_fd()) };
    borrowed
        .try_clone_to_owned()
        .map_err(|e| Attempt::Retry(format!("dup: {e}")))
}

/// The SSH handshake over `stream`, bounded by the deadline.
fn handshake<S: AsRawFd + 'static>(stream: S, deadline: Instant) -> Result<Session, Attempt> {
    let mut sess = Session::new().map_err(|e| Attempt::Fatal(format!("libssh2: {e}")))?;
    let left = deadline.saturating_duration_since(Instant::now());
    let t = left.min(CALL_TIMEOUT).max(Duration::from_secs(1));
    sess.set_timeout(t.as_millis() as u32);
    // Prefer ed25519 host keys: what OpenSSH's own client would record, and what a strict
    // known_hosts entry most likely holds.
    let _ = sess.method_pref(
        ssh2::MethodType::HostKey,
        "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,rsa-sha2-512,rsa-sha2-256,ssh-rsa",
    );
    sess.set_tcp_stream(stream);
    sess.handshake()
        .map_err(|e| Attempt::Retry(format!("handshake: {e}")))?;
    Ok(sess)
}

/// Public-key authentication; the error says which user and key.
fn authenticate(sess: &Session, user: &str, key: &Path) -> Result<(), String> {
    match sess.userauth_pubkey_file(user, None, key, None) {
        Ok(()) if sess.authenticated() => Ok(()),
        Ok(()) => Err(format!(
            "user {user} with key {} was not accepted",
            key.display()
        )),
        Err(e) => Err(format!(
            "authentication as {user} with key {} failed: {e}",
            key.display()
        )),
    }
}

fn sleep_interruptibly(d: Duration, interruptible: bool) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stopping(interruptible) {
        std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
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

/// A value unique to this exec across processes and time.
fn new_marker() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "ssh-{:x}-{:x}-{:x}",
        std::process::id(),
        nanos,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// The number of a signal sshd names without its SIG prefix.
fn signal_number(name: &str) -> i32 {
    match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => 0,
    }
}
