//! `[notify]`: the SNS topic that hears about bakes and promotions.

use crate::config::model::Notify;
use crate::config::walk::{self, Tbl, Walker};

/// `[notify]`, empty when absent.
pub fn notify(w: &mut Walker, root: &Tbl<'_, '_>) -> Notify {
    let mut out = Notify::default();
    let Some(v) = root.get("notify") else {
        return out;
    };
    let Some(t) = walk::table(w, v, "`notify`", "[notify]") else {
        return out;
    };
    t.check_keys(w, crate::config::keys::NOTIFY_KEYS);
    out.sns_topic_arn = t.str(w, "sns_topic_arn").and_then(|arn| {
        if topic_region(&arn).is_some() {
            return Some(arn.value);
        }
        w.error_hint(
            format!("invalid SNS topic ARN `{}`", arn.value),
            arn.span,
            "a topic ARN, `arn:aws:sns:us-east-1:123456789012:NAME` (the region is where pipe publishes)",
        );
        None
    });
    out
}

/// The region of an SNS topic ARN (`arn:PARTITION:sns:REGION:ACCOUNT:NAME`), `None` when it
/// is not one.
pub fn topic_region(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.split(':').collect();
    let [arn, partition, "sns", region, account, name] = parts[..] else {
        return None;
    };
    let name_ok = !name.is_empty()
        && name.len() <= 256
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    (arn == "arn"
        && partition.starts_with("aws")
        && super::ec2::is_region(region)
        && super::ec2::is_account_id(account)
        && name_ok)
        .then_some(region)
}

#[cfg(test)]
mod tests {
    use super::topic_region;

    #[test]
    fn a_topic_arn_names_its_region() {
        assert_eq!(
            topic_region("arn:aws:sns:eu-west-1:123456789012:pipe-releases"),
            Some("eu-west-1")
        );
        assert_eq!(
            topic_region("arn:aws:sns:us-east-1:123456789012:releases.fifo"),
            Some("us-east-1")
        );
        for bad in [
            "pipe-releases",
            "arn:aws:sqs:us-east-1:123456789012:q",
            "arn:aws:sns:us-east-1:12345:t",
            "arn:aws:sns:useast1:123456789012:t",
            "arn:aws:sns:us-east-1:123456789012:",
            "arn:aws:sns:us-east-1:123456789012:t:extra",
        ] {
            assert_eq!(topic_region(bad), None, "{bad}");
        }
    }
}
