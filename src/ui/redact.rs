//! Masks sensitive values in anything about to be printed or written.

use std::sync::{Arc, RwLock};

/// What a masked value prints as.
pub const MASK: &str = "********";

/// A shared set of secrets to mask. Cloning shares the set.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Arc<RwLock<Vec<String>>>,
}

impl Redactor {
    /// Adds a value to mask. Empty and one-character values are ignored: masking them would
    /// garble every line without protecting anything.
    pub fn add(&self, secret: &str) {
        if secret.chars().count() < 2 {
            return;
        }
        let mut s = self.secrets.write().expect("redactor lock");
        if !s.iter().any(|x| x == secret) {
            s.push(secret.to_string());
            // Longest first, so a secret containing another is masked whole.
            s.sort_by_key(|x| std::cmp::Reverse(x.len()));
        }
    }

    /// `text` with every secret replaced by [`MASK`].
    pub fn redact(&self, text: &str) -> String {
        let s = self.secrets.read().expect("redactor lock");
        let mut out = text.to_string();
        for secret in s.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        out
    }

    /// True when `text` contains no secret.
    pub fn is_clean(&self, text: &str) -> bool {
        let s = self.secrets.read().expect("redactor lock");
        !s.iter().any(|secret| text.contains(secret.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_longest_first() {
        let r = Redactor::default();
        r.add("abc");
        r.add("abcdef");
        r.add("x");
        assert_eq!(r.redact("1 abcdef 2 abc 3 x"), "1 ******** 2 ******** 3 x");
        assert!(!r.is_clean("zabcz"));
    }
}
