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
    if ports.is_empty() {
        return Ok(());
    }
    // First the machine waits on itself: one round trip, and the services are seen listening
    // within 20 ms. When that wait runs out (or the machine lacks grep or a fractional sleep),
    // the polls below say which service and show its log.
    let script = wait_script(&service_ports(rendered), timeout.as_secs().max(1));
    match comm.exec(&ExecRequest::shell(script), &mut Collect::default()) {
        Ok(0) => return Ok(()),
        Err(ExecError::Interrupted) => return Err(Error::Interrupted),
        _ => {}
    }
    loop {
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
}

/// The ports the services listen on inside the machine.
pub fn service_ports(rendered: &[RenderedService]) -> Vec<u16> {
    rendered.iter().filter_map(|s| s.port).collect()
}

/// A shell loop that exits 0 once every port listens (the state `0A` in `/proc/net/tcp*`, as
/// [`listening_ports`] reads it), 4 after about `secs` seconds, 5 without grep or a fractional
/// sleep.
pub fn wait_script(ports: &[u16], secs: u64) -> String {
    let hex: Vec<String> = ports.iter().map(|p| format!("{p:04X}")).collect();
    format!(
        r#"command -v grep >/dev/null && sleep 0.01 2>/dev/null || exit 5
tries=$(( {secs} * 50 ))
listens() {{ grep -qE "^ *[0-9]+: [0-9A-F]+:$1 [0-9A-F]+:[0-9A-F]+ 0A " /proc/net/tcp /proc/net/tcp6 2>/dev/null; }}
for p in {hex}; do
  while ! listens "$p"; do
    tries=$(( tries - 1 )); [ "$tries" -gt 0 ] || exit 4
    sleep 0.02
  done
done
"#,
        hex = hex.join(" ")
    )
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

    #[test]
    fn the_wait_script_sees_a_listening_port_and_gives_up_on_a_closed_one() {
        // A real listener on the loopback: the script reads this machine's /proc/net/tcp.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let run = |ports: &[u16]| {
            std::process::Command::new("sh")
                .args(["-c", &wait_script(ports, 1)])
                .status()
                .unwrap()
                .code()
        };
        assert_eq!(run(&[port]), Some(0));
        drop(listener);
        let started = Instant::now();
        assert_eq!(run(&[port]), Some(4));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
