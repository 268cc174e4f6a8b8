//! The digest key: what sensitive variables are HMAC'd with before they enter a layer digest.
//!
//! A plain hash of a short secret can be brute-forced from a digest published in an image tag,
//! so sensitive values enter only as HMAC-SHA256 under a key that never leaves the machine (or
//! the CI secrets). Teams that want CI and laptops to reuse each other's layers set the same
//! `PIPE_DIGEST_KEY` everywhere; otherwise each machine creates its own key once.

use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::error::DigestError;

pub use super::KEY_ENV;

/// File name of the per-machine key under pipe's config folder.
pub const KEY_FILE: &str = "digest.key";

/// Key material for HMAC'ing sensitive values. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestKey(Vec<u8>);

impl std::fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DigestKey(..)")
    }
}

impl DigestKey {
    /// A key from its text (the value of `PIPE_DIGEST_KEY`, or a key file's content); the
    /// text's bytes are the key, so `PIPE_DIGEST_KEY=$(cat digest.key)` gives the same digests
    /// as the file.
    pub fn from_text(text: &str) -> Self {
        Self(text.trim().as_bytes().to_vec())
    }

    /// HMAC-SHA256 of `value` under this key.
    pub fn mac(&self, value: &[u8]) -> [u8; 32] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(value);
        mac.finalize().into_bytes().into()
    }

    /// `PIPE_DIGEST_KEY` if set and not empty, else the per-machine key file (created on first
    /// use).
    pub fn load() -> Result<Self, DigestError> {
        if let Some(text) = std::env::var(KEY_ENV).ok().filter(|v| !v.trim().is_empty()) {
            return Ok(Self::from_text(&text));
        }
        let path = default_key_path().ok_or_else(|| DigestError::Key {
            path: PathBuf::from("~/.config/pipe").join(KEY_FILE),
            problem: "neither XDG_CONFIG_HOME nor HOME is set".into(),
        })?;
        Self::load_or_create(&path)
    }

    /// Reads the key file at `path`, creating it (mode 0600, 32 random bytes as hex) when it
    /// does not exist. Concurrent first runs agree on one key: the file appears atomically and
    /// only once.
    pub fn load_or_create(path: &Path) -> Result<Self, DigestError> {
        match std::fs::read_to_string(path) {
            Ok(text) => return Self::parse_file(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(DigestError::Key {
                    path: path.to_path_buf(),
                    problem: e.to_string(),
                });
            }
        }
        create(path).map_err(|e| DigestError::Key {
            path: path.to_path_buf(),
            problem: format!("cannot create it: {e}"),
        })?;
        let text = std::fs::read_to_string(path).map_err(|e| DigestError::Key {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })?;
        Self::parse_file(path, &text)
    }

    fn parse_file(path: &Path, text: &str) -> Result<Self, DigestError> {
        if text.trim().is_empty() {
            return Err(DigestError::Key {
                path: path.to_path_buf(),
                problem: "the file is empty".into(),
            });
        }
        Ok(Self::from_text(text))
    }
}

/// `$XDG_CONFIG_HOME/pipe/digest.key`, else `~/.config/pipe/digest.key`.
pub fn default_key_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("pipe").join(KEY_FILE))
}

/// Writes a new key next to `path` and links it into place; losing a race to another process
/// is fine (its key wins and is read back).
fn create(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut random = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut random)?;
    let tmp = dir.join(format!(".{KEY_FILE}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        writeln!(f, "{}", hex::encode(random))?;
        f.sync_all()?;
        match std::fs::hard_link(&tmp, path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_a_private_key_once_and_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipe").join(KEY_FILE);
        let a = DigestKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 64);
        let b = DigestKey::load_or_create(&path).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, DigestKey::from_text(&text));
        let leftovers = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1, "no temp file left behind");
    }

    #[test]
    fn an_empty_key_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::write(&path, "\n").unwrap();
        let err = DigestKey::load_or_create(&path).unwrap_err();
        assert!(err.to_string().contains(&path.display().to_string()));
        assert!(err.hint().is_some());
    }

    #[test]
    fn keys_differ_in_their_macs() {
        let a = DigestKey::from_text("one");
        let b = DigestKey::from_text("two");
        assert_ne!(a.mac(b"secret"), b.mac(b"secret"));
        assert_eq!(format!("{a:?}"), "DigestKey(..)");
    }
}
