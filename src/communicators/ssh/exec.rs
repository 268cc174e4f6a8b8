//! Running commands: one channel per command, and the pump that feeds stdin and reads stdout
//! and stderr in one non-blocking loop, so no pipe can fill up while the other side waits. A
//! timeout or Ctrl-C kills the command's processes from a second channel before closing its
//! own, because sshd answers a close only once the command has exited.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use ssh2::{Channel, ErrorCode};

use super::connect::Conn;
use super::{CALL_TIMEOUT, SshComm, command, stopping};
use crate::communicators::{Collect, Communicator, ExecError, ExecRequest, OutputSink, Stream};

/// libssh2's "would block".
const EAGAIN: i32 = -37;
/// How long to wait for the output to end after killing a stopped command.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// What a command reads on stdin.
pub(super) enum Input {
    None,
    Bytes(Vec<u8>),
    /// Chunks produced by another thread; the end of the channel is the end of input.
    Stream(Receiver<Vec<u8>>),
}

impl SshComm {
    /// Runs one request on its own channel; the exit code is 128 + N for signal N.
    pub(super) fn exec_request(
        &self,
        req: &ExecRequest,
        sink: &mut dyn OutputSink,
    ) -> Result<i32, ExecError> {
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
                return Err(match e {
                    ExecError::Transport(m) => ExecError::Transport(format!(
                        "ssh {}: the connection broke while the command ran ({m})",
                        self.settings.target()
                    )),
                    e => e,
                });
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
    pub(super) fn run_checked(
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
