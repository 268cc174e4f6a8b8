//! Host-key checking against an OpenSSH `known_hosts` file.
//!
//! - [`HostKeyPolicy::Strict`]: the host must be in the file with the key it presents.
//! - [`HostKeyPolicy::AcceptNew`]: as OpenSSH's `StrictHostKeyChecking=accept-new`: a host not
//!   in the file is trusted on first use and appended; a host in the file with another key is
//!   refused, always (that is what a man in the middle looks like).
//!
//! Entries are looked up as OpenSSH writes them: `host` for port 22, `[host]:port` otherwise;
//! hashed entries work. Lines libssh2 cannot parse (key types it does not know) are skipped,
//! not fatal, and the file is only ever appended to, never rewritten.

use std::io::Write;
use std::path::Path;

use ssh2::{CheckResult, HostKeyType, KnownHostFileKind, Session};

/// What to do with the key a server presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyPolicy {
    /// Only hosts already in known_hosts, with the same key.
    Strict,
    /// Record unknown hosts on first contact; refuse changed keys.
    #[default]
    AcceptNew,
}

/// Why a host key was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyError {
    Unknown { host: String, file: String },
    Changed { host: String, file: String },
    Other(String),
}

impl std::fmt::Display for HostKeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostKeyError::Unknown { host, file } => write!(
                f,
                "host key of {host} is not in {file} (host-key policy `strict`); add it with `ssh-keyscan`, or use `accept-new`"
            ),
            HostKeyError::Changed { host, file } => write!(
                f,
                "HOST KEY OF {host} HAS CHANGED: it differs from the one in {file}; refusing to connect (remove the old entry if the machine was rebuilt)"
            ),
            HostKeyError::Other(m) => f.write_str(m),
        }
    }
}

/// The name a host has in known_hosts.
pub fn entry_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Checks the key `sess` negotiated for `host:port` against `file` under `policy`.
pub fn check(
    sess: &Session,
    host: &str,
    port: u16,
    file: &Path,
    policy: HostKeyPolicy,
) -> Result<(), HostKeyError> {
    let (key, kind) = sess
        .host_key()
        .ok_or_else(|| HostKeyError::Other(format!("{host}:{port} presented no host key")))?;
    let mut kh = sess
        .known_hosts()
        .map_err(|e| HostKeyError::Other(format!("known_hosts: {e}")))?;
    if let Ok(text) = std::fs::read_to_string(file) {
        for line in text.lines() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let _ = kh.read_str(l, KnownHostFileKind::OpenSSH);
        }
    }
    let name = entry_name(host, port);
    let file_s = file.display().to_string();
    match kh.check_port(host, port, key) {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(HostKeyError::Changed {
            host: name,
            file: file_s,
        }),
        CheckResult::NotFound if policy == HostKeyPolicy::AcceptNew => {
            append(file, &name, kind, key).map_err(|e| {
                HostKeyError::Other(format!("recording the host key in {file_s}: {e}"))
            })
        }
        CheckResult::NotFound => Err(HostKeyError::Unknown {
            host: name,
            file: file_s,
        }),
        CheckResult::Failure => Err(HostKeyError::Other(format!(
            "checking the host key of {name} against {file_s} failed"
        ))),
    }
}

/// The algorithm name OpenSSH writes for a key type.
fn type_name(kind: HostKeyType) -> Option<&'static str> {
    Some(match kind {
        HostKeyType::Rsa => "ssh-rsa",
        HostKeyType::Dss => "ssh-dss",
        HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        HostKeyType::Ed25519 => "ssh-ed25519",
        HostKeyType::Unknown => return None,
    })
}

/// Appends `name TYPE BASE64` to the file (created 0600, its folder too).
fn append(file: &Path, name: &str, kind: HostKeyType, key: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let ty = type_name(kind)
        .ok_or_else(|| std::io::Error::other("the server's host key type is unknown"))?;
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)?;
    // Lock so that two runs recording hosts at once don't interleave their lines.
    f.lock()?;
    let line = format!("{name} {ty} {}\n", base64(key));
    f.write_all(line.as_bytes())?;
    f.sync_data()
}

/// Standard base64 with padding (known_hosts' key encoding).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_base64() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn names_entries_like_openssh() {
        assert_eq!(entry_name("10.0.0.1", 22), "10.0.0.1");
        assert_eq!(entry_name("127.0.0.1", 2222), "[127.0.0.1]:2222");
    }
}
