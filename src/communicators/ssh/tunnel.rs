//! The bastion (jump host): a `direct-tcpip` channel from the bastion to the machine's sshd,
//! bridged to one end of a local socket pair by a thread; the machine's SSH session runs over
//! the other end, so it is end-to-end encrypted and host-key checked as if it were direct
//! (what OpenSSH's `ProxyJump` does).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use ssh2::{Channel, Session};

/// A running bridge; dropping it stops the thread and closes the channel.
pub struct Tunnel {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Bridges `channel` (on the bastion `session`, whose socket is `session_fd`) to a new socket
/// pair; returns the tunnel and the end the machine's session uses.
pub fn start(
    session: Session,
    channel: Channel,
    session_fd: OwnedFd,
    keepalive_secs: u32,
) -> io::Result<(Tunnel, UnixStream)> {
    let (ours, theirs) = UnixStream::pair()?;
    ours.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("pipe-ssh-bastion".into())
        .spawn(move || pump(session, channel, session_fd, ours, stop2, keepalive_secs))?;
    Ok((
        Tunnel {
            stop,
            thread: Some(thread),
        },
        theirs,
    ))
}

fn pump(
    session: Session,
    mut channel: Channel,
    session_fd: OwnedFd,
    mut local: UnixStream,
    stop: Arc<AtomicBool>,
    keepalive_secs: u32,
) {
    session.set_blocking(false);
    if keepalive_secs > 0 {
        session.set_keepalive(false, keepalive_secs);
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut to_local: Vec<u8> = Vec::new();
    let mut to_remote: Vec<u8> = Vec::new();
    let mut local_eof = false;
    'outer: while !stop.load(Ordering::SeqCst) {
        let mut progress = false;
        if to_local.is_empty() {
            match channel.read(&mut buf) {
                Ok(0) => {
                    if channel.eof() {
                        break 'outer;
                    }
                }
                Ok(n) => {
                    to_local.extend_from_slice(&buf[..n]);
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break 'outer,
            }
        }
        if !to_local.is_empty() {
            match local.write(&to_local) {
                Ok(n) => {
                    to_local.drain(..n);
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break 'outer,
            }
        }
        if to_remote.is_empty() && !local_eof {
            match local.read(&mut buf) {
                Ok(0) => local_eof = true,
                Ok(n) => {
                    to_remote.extend_from_slice(&buf[..n]);
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break 'outer,
            }
        }
        if !to_remote.is_empty() {
            match channel.write(&to_remote) {
                Ok(n) => {
                    to_remote.drain(..n);
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break 'outer,
            }
        }
        if local_eof && to_remote.is_empty() {
            // The machine's session is gone; nothing more will come from our side.
            break;
        }
        let _ = session.keepalive_send();
        if !progress {
            let mut fds = [
                libc::pollfd {
                    fd: session_fd.as_raw_fd(),
                    events: libc::POLLIN
                        | if to_remote.is_empty() {
                            0
                        } else {
                            libc::POLLOUT
                        },
                    revents: 0,
                },
                libc::pollfd {
                    fd: local.as_raw_fd(),
                    events: libc::POLLIN
                        | if to_local.is_empty() {
                            0
                        } else {
                            libc::POLLOUT
                        },
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfd structs for fds that live as long as this call.
            unsafe {
                libc::poll(fds.as_mut_ptr(), 2, 50);
            }
        }
    }
    session.set_blocking(true);
    session.set_timeout(2_000);
    let _ = channel.close();
    let _ = session.disconnect(None, "pipe: done", None);
}
