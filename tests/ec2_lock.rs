//! The ec2 promotion lock against the local EC2's SSM: a lock a dead run left refuses a
//! promotion (exit 5, naming its holder and `--break-lock`), `pipe promote ENV --break-lock`
//! removes it and records who broke whose lock, and a promotion that fails after taking the
//! lock removes its own; with the ledger shared in S3 the same holds for both of its locks. The
//! release comes from a ledger written here (no bake: nothing is launched). The roll-out itself (launch template, instance refresh) is tested end to end
//! once the local EC2 runs instance refreshes.

mod common;
#[path = "support/local_ec2.rs"]
mod local_ec2;

use std::collections::BTreeMap;

use common::Project;
use pipe::config::TargetKind;
use pipe::ledger::{Event, Ledger, Release, VerifyOutcome};

const AMI: &str = "ami-0123456789abcdef0";

const PIPELINEFILE: &str = r#"[pipeline]
name = "@NAME@"

[box]
ec2 = { ami = "ami-0123456789abcdef0" }

[env.staging]
target = "ec2"
region = "us-east-1"

[env.production]
target = "ec2"
region = "us-east-1"
promote_from = "staging"
auto_scaling_group = "web"
launch_template = "web"
"#;

/// A verified ec2 release of staging, as a bake would have recorded it.
fn record_release(p: &Project) -> Release {
    let release = Release {
        id: String::new(),
        alias: String::new(),
        pipeline: p.name.clone(),
        env: "staging".into(),
        target: TargetKind::Ec2,
        artifacts: BTreeMap::from([("ec2:us-east-1".to_string(), AMI.to_string())]),
        base_digest: "b".into(),
        app_digest: "a".into(),
        git_commit: "c".into(),
        git_dirty: false,
        pipelinefile_digest: "d".into(),
        who: "carol@ci".into(),
        when: "2025-01-01T10:00:00Z".into(),
        verify: Some(VerifyOutcome {
            ok: true,
            excerpt: String::new(),
        }),
        base_artifact: None,
        snapshots: BTreeMap::new(),
    }
    .seal();
    Ledger::open(&p.path().join(".pipe"))
        .append(
            "carol@ci",
            Event::Bake {
                release: Box::new(release.clone()),
            },
        )
        .unwrap();
    release
}

#[test]
fn a_dead_runs_lock_refuses_until_broken_and_breaking_it_is_recorded() {
    let ec2 = local_ec2::hold();
    let p = Project::new("lock", PIPELINEFILE, &[]);
    let release = record_release(&p);
    let lock = format!("/pipe/{}/production/promotion-lock", p.name);
    let held = r#"{"run":"20250101-dead","who":"bob@elsewhere","since":"2025-01-01T10:00:00Z","release":"abc"}"#;
    ec2.call(
        "ssm",
        "us-east-1",
        "put_parameter",
        &serde_json::json!({"Name": lock, "Value": held, "Type": "String"}).to_string(),
    );
    let lock_exists = || {
        let v = ec2.call(
            "ssm",
            "us-east-1",
            "get_parameters",
            &serde_json::json!({"Names": [lock]}).to_string(),
        );
        !v["Parameters"].as_array().unwrap().is_empty()
    };
    assert!(lock_exists());
    let env = ec2.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend([("USER", "alice"), ("LOGNAME", "alice")]);

    let refused = p.pipe_env(&["promote", "production", "--no-progress"], &env);
    assert_eq!(refused.code, 5, "{}", refused.all());
    assert!(
        refused.stderr.contains(
            "another promotion of `production` is in progress: bob@elsewhere since 2025-01-01T10:00:00Z (release abc, run 20250101-dead)"
        ),
        "{}",
        refused.stderr
    );
    assert!(
        refused
            .stderr
            .contains("`pipe promote production --break-lock` removes its lock"),
        "{}",
        refused.stderr
    );
    assert!(lock_exists(), "someone else's lock is left alone");
    assert_eq!(
        p.ledger_lines().len(),
        1,
        "a refusal is not a failed promotion"
    );
    assert_eq!(p.journals(), Vec::<String>::new());

    let broke = p.pipe_env(&["promote", "production", "--break-lock"], &env);
    broke.ok();
    assert!(
        broke.stdout.contains(
            "removed the promotion lock of `production` (held by bob@elsewhere, since 2025-01-01T10:00:00Z, promoting abc, run 20250101-dead)"
        ),
        "{}",
        broke.stdout
    );
    assert!(!lock_exists());
    let entry: serde_json::Value = serde_json::from_str(p.ledger_lines().last().unwrap()).unwrap();
    assert_eq!(entry["event"], "break_lock");
    assert_eq!(entry["env"], "production");
    assert_eq!(entry["holder"], "bob@elsewhere");
    assert_eq!(entry["run"], "20250101-dead");
    assert!(
        entry["who"].as_str().unwrap().starts_with("alice@"),
        "{entry}"
    );
    let history = p.pipe_env(&["history", "--env", "production"], &env);
    assert!(
        history
            .stdout
            .contains("break-lock production  held by bob@elsewhere"),
        "{}",
        history.stdout
    );

    // Nothing left to break: said, not recorded.
    let again = p.pipe_env(&["--json", "promote", "production", "--break-lock"], &env);
    again.ok();
    assert!(
        again.stdout.contains(r#""broken":false"#),
        "{}",
        again.stdout
    );
    assert_eq!(p.ledger_lines().len(), 2);

    // The next promotion takes the lock, fails on the missing group, and removes its lock.
    let failed = p.pipe_env(&["promote", "production", "--no-progress"], &env);
    assert_eq!(failed.code, 1, "{}", failed.all());
    assert!(
        failed
            .stderr
            .contains("Auto Scaling group web does not exist"),
        "{}",
        failed.stderr
    );
    assert!(!lock_exists(), "a failed promotion removes its own lock");
    let entry: serde_json::Value = serde_json::from_str(p.ledger_lines().last().unwrap()).unwrap();
    assert_eq!(
        (entry["event"].as_str(), entry["ok"].as_bool()),
        (Some("promote"), Some(false))
    );
    assert_eq!(entry["release"], release.id.as_str());
    assert_eq!(p.journals(), Vec::<String>::new());
}

/// With the ledger shared in S3 an ec2 promotion takes the ledger's lock first and its SSM lock
/// too: a dead run's S3 lock refuses it (naming that run), `--break-lock` removes both locks and
/// records each, and a promotion that then fails removes both of its own.
#[test]
fn with_a_shared_ledger_both_locks_are_taken_and_broken() {
    let ec2 = local_ec2::hold();
    let shared = format!(
        "{PIPELINEFILE}\n[ledger]\nbackend = \"s3\"\nbucket = \"@NAME@\"\nregion = \"us-east-1\"\n"
    );
    let p = Project::new("lock-s3", &shared, &[]);
    ec2.call(
        "s3",
        "us-east-1",
        "create_bucket",
        &serde_json::json!({"Bucket": p.name}).to_string(),
    );
    let release = record_release(&p);
    let env = ec2.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend([("USER", "alice"), ("LOGNAME", "alice")]);
    p.pipe_env(&["ledger", "push"], &env).ok();

    let ssm_lock = format!("/pipe/{}/production/promotion-lock", p.name);
    ec2.call(
        "ssm",
        "us-east-1",
        "put_parameter",
        &serde_json::json!({"Name": ssm_lock, "Value": r#"{"run":"20250101-dead","who":"bob@elsewhere","since":"2025-01-01T10:00:00Z","release":"abc"}"#, "Type": "String"}).to_string(),
    );
    ec2.call(
        "s3",
        "us-east-1",
        "put_object",
        &serde_json::json!({"Bucket": p.name, "Key": "locks/production.json", "Body": r#"{"run":"20250102-gone","who":"carol@ci","since":"2025-01-02T10:00:00Z","release":"abc"}"#}).to_string(),
    );
    let locks = || {
        let s3 = ec2.call(
            "s3",
            "us-east-1",
            "list_objects_v2",
            &serde_json::json!({"Bucket": p.name, "Prefix": "locks/"}).to_string(),
        );
        let ssm = ec2.call(
            "ssm",
            "us-east-1",
            "get_parameters",
            &serde_json::json!({"Names": [ssm_lock]}).to_string(),
        );
        (
            s3["KeyCount"].as_u64().unwrap(),
            ssm["Parameters"].as_array().unwrap().len(),
        )
    };
    assert_eq!(locks(), (1, 1));

    let refused = p.pipe_env(&["promote", "production", "--no-progress"], &env);
    assert_eq!(refused.code, 5, "{}", refused.all());
    assert!(
        refused.stderr.contains(
            "another promotion of `production` is in progress: carol@ci since 2025-01-02T10:00:00Z (release abc, run 20250102-gone; lock locks/production.json)"
        ),
        "{}",
        refused.stderr
    );
    assert_eq!(locks(), (1, 1), "someone else's locks are left alone");

    let broke = p.pipe_env(&["promote", "production", "--break-lock"], &env);
    broke.ok();
    assert!(
        broke.stdout.contains(&format!(
            "removed the promotion lock of `production` in s3://{} (held by carol@ci, since 2025-01-02T10:00:00Z, promoting abc, run 20250102-gone)",
            p.name
        )),
        "{}",
        broke.stdout
    );
    assert!(
        broke.stdout.contains(
            "removed the promotion lock of `production` (held by bob@elsewhere, since 2025-01-01T10:00:00Z, promoting abc, run 20250101-dead)"
        ),
        "{}",
        broke.stdout
    );
    assert_eq!(locks(), (0, 0));

    // The next promotion takes both locks, fails on the missing group, and removes both.
    let failed = p.pipe_env(&["promote", "production", "--no-progress"], &env);
    assert_eq!(failed.code, 1, "{}", failed.all());
    assert!(
        failed
            .stderr
            .contains("Auto Scaling group web does not exist"),
        "{}",
        failed.stderr
    );
    assert_eq!(locks(), (0, 0), "a failed promotion removes its own locks");
    assert_eq!(p.journals(), Vec::<String>::new());
    let history = p.pipe_env(&["--json", "history"], &env);
    history.ok();
    let result: serde_json::Value = history
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "result")
        .unwrap();
    let entries = result["data"].as_array().unwrap();
    let events: Vec<&str> = entries
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["bake", "break_lock", "break_lock", "promote"]);
    assert_eq!(entries[1]["holder"], "carol@ci");
    assert_eq!(entries[2]["holder"], "bob@elsewhere");
    assert_eq!(
        (entries[3]["release"].as_str(), entries[3]["ok"].as_bool()),
        (Some(release.id.as_str()), Some(false))
    );
    p.pipe_env(&["history", "--verify"], &env).ok();
}
