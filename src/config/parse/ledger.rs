//! `[ledger]`: where the ledger is kept, `.pipe/ledger.jsonl` (the default) or S3.

use crate::config::model::{LedgerSettings, S3LedgerSettings};
use crate::config::walk::{self, Tbl, Walker};

use crate::config::keys::LEDGER_BACKENDS as BACKENDS;
use crate::config::keys::LEDGER_KEYS as KEYS;

/// `[ledger]`; the local file when the table is absent (or wrong: the diagnostic is recorded).
pub fn ledger(w: &mut Walker, root: &Tbl<'_, '_>) -> LedgerSettings {
    let Some(v) = root.get("ledger") else {
        return LedgerSettings::Local;
    };
    let Some(t) = walk::table(w, v, "`ledger`", "[ledger]") else {
        return LedgerSettings::Local;
    };
    t.check_keys(w, KEYS);
    let backend = t.str(w, "backend");
    match backend.as_ref().map(|b| b.value.as_str()) {
        None | Some("local") => {
            for key in ["bucket", "prefix", "region", "endpoint_url"] {
                if let Some(span) = t.key_span(key) {
                    w.error_hint(
                        format!("`{key}` is a setting of the s3 ledger"),
                        span,
                        "add `backend = \"s3\"` to share the ledger in S3, or remove it",
                    );
                }
            }
            LedgerSettings::Local
        }
        Some("s3") => s3(w, &t).map_or(LedgerSettings::Local, LedgerSettings::S3),
        Some(other) => {
            let b = backend.as_ref().expect("matched");
            let hint = match crate::config::suggest::closest(other, BACKENDS.iter().copied()) {
                Some(s) => format!("did you mean `{s}`? (`local` or `s3`)"),
                None => "`local` (.pipe/ledger.jsonl, the default) or `s3`".to_string(),
            };
            w.error_hint(format!("unknown ledger backend `{other}`"), b.span, hint);
            LedgerSettings::Local
        }
    }
}

fn s3(w: &mut Walker, t: &Tbl<'_, '_>) -> Option<S3LedgerSettings> {
    let region = t.str(w, "region");
    let region_ok = region
        .as_ref()
        .is_none_or(|r| super::ec2::check_region(w, r));
    let endpoint_url = super::ec2::endpoint_url(w, t);
    let prefix = t.str(w, "prefix");
    let prefix_ok = prefix.as_ref().is_none_or(|p| {
        let bad = p.value.starts_with('/') || p.value.split('/').any(|s| s == "." || s == "..");
        if bad {
            w.error_hint(
                format!("invalid ledger prefix `{}`", p.value),
                p.span,
                "a key prefix without a leading `/` and without `.` or `..` parts, e.g. `pipe/ponyfoo`",
            );
        }
        !bad
    });
    if !t.has("bucket") {
        t.missing(
            w,
            "bucket",
            Some("add `bucket = \"...\"`: the S3 bucket that holds the ledger".into()),
        );
        return None;
    }
    let bucket = t.str(w, "bucket")?;
    if !is_bucket_name(&bucket.value) {
        w.error_hint(
            format!("invalid S3 bucket name `{}`", bucket.value),
            bucket.span,
            "3 to 63 lowercase letters, digits, `.` and `-`, starting and ending with a letter or digit",
        );
        return None;
    }
    if !(region_ok && prefix_ok) {
        return None;
    }
    Some(S3LedgerSettings {
        bucket: bucket.value,
        prefix: prefix.map_or(String::new(), |p| p.value.trim_matches('/').to_string()),
        region: region.map(|r| r.value),
        endpoint_url,
    })
}

/// S3's rules for a bucket name (without the rarer ones about IP-like names).
fn is_bucket_name(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (3..=63).contains(&s.len())
        && edge(s.chars().next())
        && edge(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && !s.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3s_rules() {
        assert!(is_bucket_name("team-ledger"));
        assert!(is_bucket_name("a.b-1"));
        assert!(!is_bucket_name("ab"));
        assert!(!is_bucket_name("Team"));
        assert!(!is_bucket_name("-team"));
        assert!(!is_bucket_name("a..b"));
        assert!(!is_bucket_name("s3://team"));
    }
}
