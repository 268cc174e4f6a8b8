//! The ledger through the CLI: `pipe history`, `pipe history --verify` naming the first bad
//! line, and a torn last line (a crash mid-append) that hides and damages nothing.

mod common;

use std::collections::BTreeMap;
use std::io::Write;

use common::Project;
use pipe::ledger::{Event, Ledger, Release, VerifyOutcome};

const PIPELINEFILE: &str = r#"[pipeline]
name = "@NAME@"

[box]
docker = { image = "debian:bookworm" }

[env.staging]
target = "docker"

[env.production]
target = "docker"
promote_from = "staging"
"#;

fn release(p: &Project, n: u32) -> Release {
    Release {
        id: String::new(),
        alias: String::new(),
        pipeline: p.name.clone(),
        env: "staging".into(),
        target: pipe::config::TargetKind::Docker,
        artifacts: BTreeMap::from([("docker".into(), format!("sha256:{n:064}"))]),
        base_digest: "sha256:base".into(),
        base_artifact: None,
        snapshots: Default::default(),
        app_digest: format!("sha256:app{n}"),
        git_commit: "abc1234".into(),
        git_dirty: false,
        pipelinefile_digest: "0".repeat(64),
        who: "me@here".into(),
        when: format!("2026-01-01T00:00:0{n}Z"),
        verify: Some(VerifyOutcome {
            ok: true,
            excerpt: "ok".into(),
        }),
    }
    .seal()
}

fn setup() -> (Project, Ledger, Vec<Release>) {
    let p = Project::new("ledger", PIPELINEFILE, &[]);
    let ledger = Ledger::open(&p.path().join(".pipe"));
    let releases: Vec<Release> = (1..=3).map(|n| release(&p, n)).collect();
    for r in &releases {
        ledger
            .append(
                "me@here",
                Event::Bake {
                    release: Box::new(r.clone()),
                },
            )
            .unwrap();
    }
    (p, ledger, releases)
}

#[test]
fn a_torn_last_line_hides_and_damages_nothing() {
    let (p, ledger, releases) = setup();
    // A crash mid-append: half a line, no newline.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(ledger.path())
        .unwrap();
    f.write_all(br#"{"seq":4,"prev":"5f2a","time":"2026-"#)
        .unwrap();
    drop(f);

    let history = p.pipe(&["history"]);
    history.ok();
    for r in &releases {
        assert!(history.stdout.contains(&r.alias), "{}", history.stdout);
    }
    let releases_out = p.pipe(&["releases"]);
    releases_out.ok();
    assert_eq!(
        releases_out.stdout.matches("verified").count(),
        3,
        "{}",
        releases_out.stdout
    );
    let check = p.pipe(&["history", "--verify"]);
    check.ok();
    assert!(
        check.stdout.contains("intact: 3 entries"),
        "{}",
        check.stdout
    );
    assert!(check.stdout.contains("torn"), "{}", check.stdout);

    // The next append sets the torn line aside and chains onto line 3.
    p.pipe(&["reject", &releases[1].alias, "--reason", "test"])
        .ok();
    let check = p.pipe(&["history", "--verify"]);
    check.ok();
    assert!(
        check.stdout.contains("intact: 4 entries"),
        "{}",
        check.stdout
    );
    assert!(!check.stdout.contains("torn"), "{}", check.stdout);
    let torn = std::fs::read_to_string(p.path().join(".pipe/ledger.torn")).unwrap();
    assert!(torn.contains(r#""seq":4,"prev":"5f2a""#), "{torn}");
    let entries = ledger.entries().unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[3].seq, 4);
    let releases_out = p.pipe(&["releases"]);
    assert!(
        releases_out.stdout.contains("rejected"),
        "{}",
        releases_out.stdout
    );
}

#[test]
fn history_verify_names_the_first_bad_line() {
    let (p, ledger, releases) = setup();
    p.pipe(&["history", "--verify"]).ok();
    // Edit line 2: its own `prev` still matches, line 3's no longer does.
    let text = std::fs::read_to_string(ledger.path()).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[1] = lines[1].replace("abc1234", "abc9999");
    std::fs::write(ledger.path(), lines.join("\n") + "\n").unwrap();
    let check = p.pipe(&["history", "--verify"]);
    assert_eq!(check.code, 1, "{}", check.all());
    assert!(
        check.stderr.contains("breaks at line 3"),
        "{}",
        check.stderr
    );

    // Removing a line breaks the chain at the line after the gap.
    std::fs::write(ledger.path(), &text).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(ledger.path(), format!("{}\n{}\n", lines[0], lines[2])).unwrap();
    let check = p.pipe(&["history", "--verify"]);
    assert_eq!(check.code, 1);
    assert!(
        check.stderr.contains("breaks at line 2"),
        "{}",
        check.stderr
    );
    let _ = releases;
}

#[test]
fn reject_and_gates_without_docker() {
    let (p, _, releases) = setup();
    let r = p.pipe(&["reject", &releases[2].alias]);
    r.ok();
    assert!(r.stdout.contains("rejected"), "{}", r.stdout);
    let again = p.pipe(&["reject", &releases[2].alias]);
    again.ok();
    assert!(again.stdout.contains("already"), "{}", again.stdout);
    // The gate refuses before touching Docker.
    let gate = p.pipe(&["promote", "production", "--release", &releases[2].alias]);
    assert_eq!(gate.code, 5, "{}", gate.all());
    assert!(gate.stderr.contains("rejected"), "{}", gate.stderr);
    let unknown = p.pipe(&["reject", "nope-nope"]);
    assert_eq!(unknown.code, 2, "{}", unknown.all());
    let none = p.pipe(&["rollback", "production"]);
    assert_eq!(none.code, 5, "{}", none.all());
    assert!(
        none.stderr.contains("no earlier release"),
        "{}",
        none.stderr
    );
}

/// Where `USER` and `LOGNAME` are not set (containers, CI), the ledger names the uid's user,
/// not `unknown` (issue 13).
#[test]
fn who_is_the_uids_name_without_user_or_logname() {
    let (p, _, releases) = setup();
    let me = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let me = String::from_utf8_lossy(&me.stdout).trim().to_string();
    let r = p.pipe_env(
        &["reject", &releases[0].alias],
        &[("USER", ""), ("LOGNAME", "")],
    );
    r.ok();
    let last: serde_json::Value = serde_json::from_str(p.ledger_lines().last().unwrap()).unwrap();
    let who = last["who"].as_str().unwrap();
    assert!(who.starts_with(&format!("{me}@")), "{who}");
}

/// The last line is covered too (by the anchor), and every command that acts on the ledger
/// checks it first: a flipped verify result is not a promotable release.
#[test]
fn the_last_line_is_covered_and_commands_refuse_a_broken_ledger() {
    let (p, ledger, releases) = setup();
    let text = std::fs::read_to_string(ledger.path()).unwrap();
    let lines: Vec<&str> = text.lines().collect();

    // An edit of the last line.
    let edited = lines[2].replace("abc1234", "abc9999");
    std::fs::write(
        ledger.path(),
        format!("{}\n{}\n{edited}\n", lines[0], lines[1]),
    )
    .unwrap();
    let check = p.pipe(&["history", "--verify"]);
    assert_eq!(check.code, 1, "{}", check.all());
    assert!(check.stderr.contains("line 3"), "{}", check.stderr);
    let listed = p.pipe(&["releases"]);
    assert_eq!(listed.code, 1, "{}", listed.all());
    assert!(
        listed.stderr.contains("broken at line 3"),
        "{}",
        listed.stderr
    );

    // The last line removed.
    std::fs::write(ledger.path(), format!("{}\n{}\n", lines[0], lines[1])).unwrap();
    let check = p.pipe(&["history", "--verify"]);
    assert_eq!(check.code, 1, "{}", check.all());
    assert!(check.stderr.contains("removed"), "{}", check.stderr);

    // Intact again: everything works, and the next append re-anchors.
    std::fs::write(ledger.path(), &text).unwrap();
    p.pipe(&["history", "--verify"]).ok();
    p.pipe(&["reject", &releases[0].alias, "--reason", "test"])
        .ok();
    p.pipe(&["history", "--verify"]).ok();

    // A verification result flipped in the middle: the chain breaks after it, and no command
    // that decides anything trusts the ledger.
    let text = std::fs::read_to_string(ledger.path()).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[1] = lines[1].replace(r#""ok":true"#, r#""ok":false"#);
    std::fs::write(ledger.path(), lines.join("\n") + "\n").unwrap();
    for args in [
        vec!["releases"],
        vec![
            "promote",
            "production",
            "--plan",
            "--release",
            &releases[1].alias,
        ],
        vec!["reject", &releases[2].alias],
        vec!["rollback", "production"],
    ] {
        let run = p.pipe(&args);
        assert_eq!(run.code, 1, "{args:?}: {}", run.all());
        assert!(
            run.stderr.contains("broken at line 3"),
            "{args:?}: {}",
            run.stderr
        );
    }
    // Nothing was appended to the broken ledger.
    assert_eq!(
        std::fs::read_to_string(ledger.path()).unwrap(),
        lines.join("\n") + "\n"
    );
}

#[test]
fn an_unknown_env_and_a_short_prefix_are_usage_errors() {
    let (p, _, releases) = setup();
    for cmd in ["history", "releases"] {
        let run = p.pipe(&[cmd, "--env", "nosuch"]);
        assert_eq!(run.code, 2, "{cmd}: {}", run.all());
        assert!(
            run.stderr.contains("unknown environment `nosuch`"),
            "{cmd}: {}",
            run.stderr
        );
    }
    let short = &releases[0].id[..5];
    let run = p.pipe(&["reject", short]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("give at least 6 characters"),
        "{}",
        run.stderr
    );
}
