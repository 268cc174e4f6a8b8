//! The canonical encoding a layer digest is the sha256 of.
//!
//! A digest input is a sequence of records. Every record is
//!
//! ```text
//! tag: u8 ‖ label length: u64 BE ‖ label (UTF-8) ‖ payload
//! ```
//!
//! and the payload is fixed by the tag:
//!
//! | tag | meaning | payload |
//! | --- | --- | --- |
//! | `B` | bytes or text | length: u64 BE ‖ the bytes |
//! | `U` | unsigned integer | u64 BE |
//! | `F` | boolean | one byte, 0 or 1 |
//! | `N` | an absent optional value | nothing |
//! | `L` | a list | item count: u64 BE, then the items' records |
//!
//! Every variable-length part is length-prefixed and every list announces its length, so the
//! byte stream parses back into exactly one sequence of records: two different inputs can never
//! encode to the same bytes.

use sha2::{Digest as _, Sha256};

use super::value::Digest;

/// Hashes records as they are written; optionally keeps the exact bytes (for tests and
/// debugging: file contents enter as their sha256, so the transcript stays small).
pub(crate) struct Encoder {
    hasher: Sha256,
    transcript: Option<Vec<u8>>,
}

impl Encoder {
    pub(crate) fn new(keep_transcript: bool) -> Self {
        Self {
            hasher: Sha256::new(),
            transcript: keep_transcript.then(Vec::new),
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        if let Some(t) = &mut self.transcript {
            t.extend_from_slice(bytes);
        }
    }

    fn len(&mut self, n: usize) {
        self.write(&(n as u64).to_be_bytes());
    }

    fn header(&mut self, tag: u8, label: &str) {
        self.write(&[tag]);
        self.len(label.len());
        self.write(label.as_bytes());
    }

    /// A `B` record.
    pub(crate) fn bytes(&mut self, label: &str, value: &[u8]) {
        self.header(b'B', label);
        self.len(value.len());
        self.write(value);
    }

    /// A `B` record holding text.
    pub(crate) fn str(&mut self, label: &str, value: &str) {
        self.bytes(label, value.as_bytes());
    }

    /// A `U` record.
    pub(crate) fn u64(&mut self, label: &str, value: u64) {
        self.header(b'U', label);
        self.write(&value.to_be_bytes());
    }

    /// An `F` record.
    pub(crate) fn bool(&mut self, label: &str, value: bool) {
        self.header(b'F', label);
        self.write(&[u8::from(value)]);
    }

    /// A `B` record, or an `N` record when absent.
    pub(crate) fn opt_str(&mut self, label: &str, value: Option<&str>) {
        match value {
            Some(v) => self.str(label, v),
            None => self.header(b'N', label),
        }
    }

    /// A `U` record, or an `N` record when absent.
    pub(crate) fn opt_u64(&mut self, label: &str, value: Option<u64>) {
        match value {
            Some(v) => self.u64(label, v),
            None => self.header(b'N', label),
        }
    }

    /// An `L` record: the caller writes exactly `count` items next.
    pub(crate) fn list(&mut self, label: &str, count: usize) {
        self.header(b'L', label);
        self.len(count);
    }

    /// The digest, and the transcript if one was kept.
    pub(crate) fn finish(self) -> (Digest, Option<Vec<u8>>) {
        (Digest(self.hasher.finalize().into()), self.transcript)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(f: impl FnOnce(&mut Encoder)) -> Vec<u8> {
        let mut e = Encoder::new(true);
        f(&mut e);
        e.finish().1.unwrap()
    }

    #[test]
    fn records_are_length_prefixed() {
        let bytes = encode(|e| e.str("to", "/opt"));
        let mut want = vec![b'B'];
        want.extend_from_slice(&2u64.to_be_bytes());
        want.extend_from_slice(b"to");
        want.extend_from_slice(&4u64.to_be_bytes());
        want.extend_from_slice(b"/opt");
        assert_eq!(bytes, want);
    }

    #[test]
    fn splitting_text_differently_changes_the_encoding() {
        let a = encode(|e| {
            e.str("x", "ab");
            e.str("x", "c");
        });
        let b = encode(|e| {
            e.str("x", "a");
            e.str("x", "bc");
        });
        assert_ne!(a, b);
        let c = encode(|e| e.opt_str("x", None));
        let d = encode(|e| e.opt_str("x", Some("")));
        assert_ne!(c, d);
    }

    #[test]
    fn transcript_hashes_to_the_digest() {
        let mut e = Encoder::new(true);
        e.list("l", 1);
        e.u64("n", 7);
        e.bool("b", true);
        let (d, t) = e.finish();
        let direct: [u8; 32] = Sha256::digest(t.unwrap()).into();
        assert_eq!(d.0, direct);
    }
}
