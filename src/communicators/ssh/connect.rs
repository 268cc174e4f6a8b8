//! Connecting: one attempt is TCP (or a tunnel through the bastion), the handshake, the
//! host-key check and key authentication. A booting machine refuses connections, resets them
//! and rejects keys for a while, so [`SshComm::dial`] repeats attempts with a capped
//! back-off; a host key that does not match ends it at once.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use ssh2::Session;

use super::{CALL_TIMEOUT, SshComm, known_hosts, stopping, tunnel};
use crate::communicators::ExecError;

/// First and longest pause between connection attempts.
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A live session. Field order is drop order: the session goes before its tunnel.
pub(super) struct Conn {
    pub(super) session: Session,
    /// A duplicate of the session's socket, to wait on.
    pub(super) fd: OwnedFd,
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

impl SshComm {
    /// Connects with retries and back-off until `ssh_timeout`.
    pub(super) fn dial(&self) -> Result<Conn, ExecError> {
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
