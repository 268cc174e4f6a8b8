//! `[notify]`: after a bake, a promotion or a rollback, one JSON message to the SNS topic
//! `sns_topic_arn`, with the release's AMI in each region (seed 1 published the AMI id through
//! SNS). The message carries ids, names and outcomes only, never a variable's value. A
//! publish that fails only warns: what it reports already happened and is in the ledger.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::config::{Pipelinefile, TargetKind, parse::topic_region};
use crate::engine::aws::AwsClient;
use crate::ledger::Release;
use crate::ui::Printer;

/// SNS refuses a longer subject.
const SUBJECT_MAX: usize = 100;

/// What happened, for the message.
pub struct Notice<'a> {
    /// `bake`, `promote` or `rollback`.
    pub event: &'a str,
    pub release: &'a Release,
    /// Where it happened: the bake's environment, or the one promoted into.
    pub env: &'a str,
    /// `verified`, `unverified`, `verify-failed` (a bake); `ok`, `failed` (a switch).
    pub outcome: &'a str,
    /// The release that was current before (a switch).
    pub previous: Option<&'a str>,
    /// What the target reported about the switch (ec2: the `image` that serves, its `region`).
    pub details: Option<&'a Value>,
    /// Why it failed, first line, already redacted.
    pub detail: Option<&'a str>,
}

/// The message's JSON (see the README's "Notifications").
pub fn message(pf: &Pipelinefile, n: &Notice<'_>) -> Value {
    let r = n.release;
    let amis: BTreeMap<String, String> = r
        .artifacts_on(TargetKind::Ec2)
        .into_iter()
        .filter_map(|a| Some((a.region?.to_string(), a.id.to_string())))
        .collect();
    let mut m = json!({
        "event": n.event,
        "pipeline": pf.pipeline.name.value,
        "release": r.id,
        "alias": r.alias,
        "baked_in": r.env,
        "env": n.env,
        "target": r.target.as_str(),
        "amis": amis,
        "artifacts": r.artifacts,
        "git_commit": r.git_commit,
        "who": crate::ledger::who(),
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "outcome": n.outcome,
    });
    if let Some(p) = n.previous {
        m["previous"] = p.into();
    }
    if let Some(d) = n.details {
        // The AMI that serves there now: a copy when the environment is in another region.
        for key in ["region", "image", "account_id"] {
            if let Some(v) = d.get(key).filter(|v| !v.is_null()) {
                m[if key == "image" { "serving_ami" } else { key }] = v.clone();
            }
        }
    }
    if let Some(d) = n.detail {
        m["detail"] = d.into();
    }
    m
}

/// `pipe ponyfoo: release 3f2a1c promoted to production (ok)`, at most 100 characters, printable
/// ASCII only (what SNS accepts).
pub fn subject(pf: &Pipelinefile, n: &Notice<'_>) -> String {
    let (pipeline, alias, env) = (&pf.pipeline.name.value, &n.release.alias, n.env);
    let what = match n.event {
        "bake" => format!("release {alias} baked in {env}"),
        "promote" => format!("release {alias} promoted to {env}"),
        "rollback" => format!("{env} rolled back to release {alias}"),
        other => format!("{other} of release {alias} in {env}"),
    };
    let s = format!("pipe {pipeline}: {what} ({})", n.outcome);
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(SUBJECT_MAX)
        .collect()
}

/// Publishes the notice to `[notify] sns_topic_arn`, if set (with the credentials and the
/// endpoint of `env`'s settings, in the topic's region); a failure is a warning.
pub fn send(pf: &Pipelinefile, n: &Notice<'_>, printer: &Printer) {
    let Some(topic) = &pf.notify.sns_topic_arn else {
        return;
    };
    let body = message(pf, n).to_string();
    let subject = subject(pf, n);
    let published = (|| {
        let mut settings = crate::plan::aws_settings(pf, n.env);
        settings.region = topic_region(topic).map(str::to_string);
        AwsClient::connect(&settings)?.publish(topic, &subject, &body)
    })();
    match published {
        Ok(id) => printer.info(format!("notified SNS topic {topic} (message {id})")),
        Err(e) => printer.warn(
            format!("publishing the {} notice to SNS topic {topic} failed: {e}", n.event),
            Some(format!(
                "the {} itself is done and recorded in the ledger; pipe needs sns:Publish on the topic{}",
                n.event,
                e.hint().map(|h| format!(" ({h})")).unwrap_or_default()
            )),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pf() -> Pipelinefile {
        let src = r#"
[pipeline]
name = "ponyfoo"

[vars]
token = { env = "API_TOKEN", sensitive = true }

[box]
ec2 = { ami = "ami-0123456789abcdef0" }

[notify]
sns_topic_arn = "arn:aws:sns:us-east-1:123456789012:releases"

[env.staging]
target = "ec2"
region = "us-east-1"
"#;
        crate::config::parse::parse(
            &std::path::PathBuf::from("/nonexistent/Pipelinefile.toml"),
            src.to_string(),
        )
        .unwrap_or_else(|(d, _)| panic!("{d:?}"))
    }

    fn release() -> Release {
        Release {
            id: "3f2a1c9e".repeat(8),
            alias: "3f2a1c".into(),
            pipeline: "ponyfoo".into(),
            env: "staging".into(),
            target: TargetKind::Ec2,
            artifacts: BTreeMap::from([
                ("ec2:us-east-1".to_string(), "ami-0aaa".to_string()),
                ("ec2:eu-west-1".to_string(), "ami-0bbb".to_string()),
            ]),
            base_digest: "sha256:b".into(),
            base_artifact: None,
            snapshots: BTreeMap::new(),
            app_digest: "sha256:a".into(),
            git_commit: "abc123".into(),
            git_dirty: false,
            pipelinefile_digest: String::new(),
            who: "ana@ci".into(),
            when: "2026-01-01T00:00:00.000Z".into(),
            verify: None,
        }
    }

    #[test]
    fn a_promotion_message_names_the_amis_and_what_serves() {
        let (pf, r) = (pf(), release());
        let details = json!({"region": "us-west-2", "image": "ami-0ccc", "account_id": "210987654321", "group": "g"});
        let n = Notice {
            event: "promote",
            release: &r,
            env: "production",
            outcome: "ok",
            previous: Some("0ld"),
            details: Some(&details),
            detail: None,
        };
        let m = message(&pf, &n);
        assert_eq!(m["event"], "promote");
        assert_eq!(m["pipeline"], "ponyfoo");
        assert_eq!(m["alias"], "3f2a1c");
        assert_eq!(m["env"], "production");
        assert_eq!(m["baked_in"], "staging");
        assert_eq!(
            m["amis"],
            json!({"eu-west-1": "ami-0bbb", "us-east-1": "ami-0aaa"})
        );
        assert_eq!(m["serving_ami"], "ami-0ccc");
        assert_eq!(m["region"], "us-west-2");
        assert_eq!(m["account_id"], "210987654321");
        assert_eq!(m["previous"], "0ld");
        assert_eq!(m["outcome"], "ok");
        assert!(m.get("group").is_none(), "{m}");
        assert!(m.get("detail").is_none(), "{m}");
        assert!(!m.to_string().contains("API_TOKEN"), "{m}");
        assert_eq!(
            subject(&pf, &n),
            "pipe ponyfoo: release 3f2a1c promoted to production (ok)"
        );
    }

    #[test]
    fn a_subject_is_short_printable_ascii() {
        let (pf, mut r) = (pf(), release());
        r.alias = format!("é\n{}", "x".repeat(200));
        let n = Notice {
            event: "rollback",
            release: &r,
            env: "production",
            outcome: "failed",
            previous: None,
            details: None,
            detail: Some("instance refresh failed"),
        };
        let s = subject(&pf, &n);
        assert_eq!(s.len(), SUBJECT_MAX);
        assert!(
            s.starts_with("pipe ponyfoo: production rolled back to release ??x"),
            "{s}"
        );
        assert_eq!(message(&pf, &n)["detail"], "instance refresh failed");
    }
}
