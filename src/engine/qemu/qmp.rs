//! A minimal QMP client over QEMU's unix socket: status, graceful power-down, quit.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

/// A QMP session in command mode.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects, reads the greeting and enters command mode.
    pub fn connect(socket: &Path, timeout: Duration) -> std::io::Result<Self> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let writer = stream.try_clone()?;
        let mut q = Self {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            return Err(std::io::Error::other(format!(
                "not a QMP greeting: {greeting}"
            )));
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    fn read(&mut self) -> std::io::Result<Value> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "QMP socket closed",
                ));
            }
            if line.trim().is_empty() {
                continue;
            }
            return serde_json::from_str(line.trim()).map_err(std::io::Error::other);
        }
    }

    /// Runs a command and returns its `return` value (events in between are skipped).
    pub fn execute(&mut self, command: &str, args: Option<Value>) -> std::io::Result<Value> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.writer.write_all(text.as_bytes())?;
        loop {
            let v = self.read()?;
            if v.get("event").is_some() {
                continue;
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(std::io::Error::other(format!("QMP {command}: {e}")));
            }
        }
    }

    /// `query-status`: `running`, `paused`, `shutdown`, ...
    pub fn status(&mut self) -> std::io::Result<String> {
        let r = self.execute("query-status", None)?;
        Ok(r.get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }

    /// Presses the ACPI power button: the guest shuts down cleanly.
    pub fn powerdown(&mut self) -> std::io::Result<()> {
        self.execute("system_powerdown", None).map(|_| ())
    }

    /// Ends QEMU at once (the guest gets no say).
    pub fn quit(&mut self) -> std::io::Result<()> {
        match self.execute("quit", None) {
            Ok(_) => Ok(()),
            // QEMU may close the socket before answering.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
            Err(e) => Err(e),
        }
    }
}
