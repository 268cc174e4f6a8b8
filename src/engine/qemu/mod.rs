//! QEMU processes as pipe runs them, the bottom of the qemu target: a VM folder's pid file and
//! QMP socket, whether its QEMU lives, and stopping it. The destroy of a journaled QEMU process
//! ([`crate::targets::resource`]) and the qemu target both use these.

mod qmp;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::Digest as _;

pub use qmp::Qmp;

/// A QEMU process that would not stop.
#[derive(Debug, thiserror::Error)]
#[error("QEMU process {pid} does not go away")]
pub struct StuckError {
    pub pid: i32,
}

/// The pid file in a VM folder.
pub fn pidfile(dir: &Path) -> PathBuf {
    dir.join("qemu.pid")
}

/// The QMP socket: in the folder, or in /tmp when that path is too long for a unix socket.
pub fn qmp_socket(dir: &Path) -> PathBuf {
    let p = dir.join("qmp.sock");
    if p.as_os_str().len() < 100 {
        return p;
    }
    let h = hex::encode(sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes()));
    std::env::temp_dir().join(format!("pipe-qmp-{}.sock", &h[..16]))
}

/// The pid in a pid file.
pub fn read_pid(pidfile: &Path) -> Option<i32> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

/// True when `pid` is a live QEMU process (not a recycled pid).
pub fn qemu_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let is_qemu = cmd
        .split(|b| *b == 0)
        .next()
        .is_some_and(|a| a.windows(11).any(|w| w == b"qemu-system"));
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false);
    is_qemu && !zombie
}

/// Waits until `pid` is no live QEMU, at most `grace`; true when it is gone.
pub fn wait_gone(pid: i32, grace: Duration) -> bool {
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if !qemu_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    !qemu_alive(pid)
}

/// Stops the QEMU of a VM folder now: QMP `quit`, then SIGKILL; removes the pid file and
/// the socket. Nothing running is fine.
pub fn stop(dir: &Path, grace: Duration) -> Result<(), StuckError> {
    let pidfile = pidfile(dir);
    let qmp = qmp_socket(dir);
    if let Some(pid) = read_pid(&pidfile).filter(|p| qemu_alive(*p)) {
        if let Ok(mut q) = Qmp::connect(&qmp, Duration::from_secs(3)) {
            let _ = q.quit();
        }
        if !wait_gone(pid, grace) {
            // SAFETY: signalling a process we verified is QEMU.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            if !wait_gone(pid, Duration::from_secs(10)) {
                return Err(StuckError { pid });
            }
        }
    }
    let _ = std::fs::remove_file(&pidfile);
    let _ = std::fs::remove_file(&qmp);
    Ok(())
}

/// The QMP status of a VM folder's QEMU (`running`, `shutdown`, ...), if it answers.
pub fn status(dir: &Path) -> Option<String> {
    let pid = read_pid(&pidfile(dir))?;
    if !qemu_alive(pid) {
        return None;
    }
    Qmp::connect(&qmp_socket(dir), Duration::from_secs(3))
        .ok()?
        .status()
        .ok()
}
