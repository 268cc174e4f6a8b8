//! Waiting for a machine's services to listen, the same way on every target: the ports are read
//! from `/proc/net/tcp*` inside the machine, so the image needs no tools.

use std::time::{Duration, Instant};

use crate::communicators::{Collect, Communicator, ExecError, ExecRequest};
use crate::error::{Error, Result};
use crate::services::RenderedService;

/// How a target shows a service's recent log when it never started listening.
pub struct LogTail {
    /// The command printing the last lines of a service's log.
    pub command: fn(&str) -> ExecRequest,
    /// What those lines are, e.g. `last lines of its log`.
    pub title: &'static str,
}

/// Waits until every service with a port listens inside the machine, polling every `pause`.
pub fn wait_listening(
    comm: &dyn Communicator,
    rendered: &[RenderedService],
    timeout: Duration,
    pause: Duration,
    log: &LogTail,
) -> Result<()> {
    let started = Instant::now();
    let ports: Vec<(&str, u16)> = rendered
        .iter()
        .filter_map(|s| s.port.map(|p| (s.name.as_str(), p)))
        .collect();
    while !ports.is_empty() {
        let mut sink = Collect::default();
        let code = comm
            .exec(
                &ExecRequest::shell("cat /proc/net/tcp /proc/net/tcp6 2>/dev/null"),
                &mut sink,
            )
            .map_err(|e| match e {
                ExecError::Interrupted => Error::Interrupted,
                e => Error::runtime(format!("checking ports on {}: {e}", comm.describe()), None),
            })?;
        let listening = if code == 0 {
            listening_ports(&String::from_utf8_lossy(&sink.stdout))
        } else {
            Vec::new()
        };
        let Some((name, port)) = ports.iter().find(|(_, p)| !listening.contains(p)) else {
            return Ok(());
        };
        if crate::interrupt::requested() {
            return Err(Error::Interrupted);
        }
        if started.elapsed() > timeout {
            let mut lines = Collect::default();
            let _ = comm.exec(&(log.command)(name), &mut lines);
            return Err(Error::runtime(
                format!(
                    "service `{name}` did not listen on port {port} within {}s\n---- {} ----\n{}----",
                    timeout.as_secs(),
                    log.title,
                    String::from_utf8_lossy(&lines.stdout)
                ),
                Some(format!("`pipe logs {name}` shows its whole log")),
            ));
        }
        std::thread::sleep(pause);
    }
    Ok(())
}

/// Ports in LISTEN state (`0A`) in `/proc/net/tcp` text.
pub fn listening_ports(text: &str) -> Vec<u16> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let _sl = f.next()?;
            let local = f.next()?;
            let _remote = f.next()?;
            let state = f.next()?;
            if state != "0A" {
                return None;
            }
            let port = local.rsplit(':').next()?;
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listening_ports() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 100 0 0 10 0\n   1: 0100007F:0050 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n";
        assert_eq!(listening_ports(text), vec![8080]);
    }
}
