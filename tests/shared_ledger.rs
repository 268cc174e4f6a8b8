//! The shared ledger (`[ledger] backend = "s3"`) against the local EC2's S3: a local ledger
//! moved in with `pipe ledger push` (through two 409 conflicts) and read from two working
//! copies, 20 concurrent appends from both that keep one chain (read again from the entry cache), a push refused when S3 holds
//! another chain, an object edited behind pipe's back refused naming its seq, and (with
//! Docker) two working copies promoting one environment at once: one holds the lock, the
//! other is refused naming it until `pipe clean` on the killed holder's host removes it; and
//! the README's CI jobs, run as written.

mod common;
#[path = "support/local_ec2.rs"]
mod local_ec2;

use std::collections::{BTreeMap, BTreeSet};

use common::{Project, Run, ensure_box, free_port, http_get_retry};
use pipe::ledger::{Event, Ledger, Release, VerifyOutcome};

/// A project whose releases come from the ledger alone (nothing is started).
const LEDGER_ONLY: &str = r#"[pipeline]
name = "@NAME@"

[box]
docker = { image = "debian:bookworm" }

[ledger]
backend = "s3"
bucket = "@NAME@"
prefix = "teams/@NAME@/"
region = "us-east-1"

[env.staging]
target = "docker"

[env.production]
target = "docker"
promote_from = "staging"
"#;

const SERVER: &str = r#"perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalAddr=>"0.0.0.0",LocalPort=>$ARGV[0],Listen=>5,ReuseAddr=>1) or die "listen: $!"; while($c=$s->accept){ <$c>; open(F,"<","/srv/www/index.html"); local $/; $b=<F>; close F; print $c "HTTP/1.0 200 OK\r\nContent-Length: ".length($b)."\r\n\r\n".$b; close $c }' 8000"#;

/// A docker project sharing its ledger in S3; production serves on `port`.
fn docker_pipelinefile(port: u16) -> String {
    format!(
        r#"[pipeline]
name = "@NAME@"

[box]
docker = {{ box = "debian-12" }}

[ledger]
backend = "s3"
bucket = "@NAME@"
region = "us-east-1"

[app]
provision = [{{ file = "www/", to = "/srv/www" }}]

[[service]]
name = "web"
command = '''{SERVER}'''
port = 8000
host_port = {port}

[verify]
http = [{{ url = "http://127.0.0.1:8000/", status = 200, contains = "shared" }}]
timeout = 15

[env.production]
target = "docker"
promote_from = "staging"

[env.staging]
target = "docker"
"#
    )
}

/// Runs `pipe ARGS` in `p` against the local EC2.
fn pipe(p: &Project, ec2: &local_ec2::LocalEc2, args: &[&str]) -> Run {
    pipe_with(p, ec2, args, &[])
}

fn pipe_with(p: &Project, ec2: &local_ec2::LocalEc2, args: &[&str], extra: &[(&str, &str)]) -> Run {
    let env = ec2.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend_from_slice(extra);
    p.pipe_env(args, &env)
}

fn create_bucket(ec2: &local_ec2::LocalEc2, name: &str) {
    ec2.call(
        "s3",
        "us-east-1",
        "create_bucket",
        &format!(r#"{{"Bucket": "{name}"}}"#),
    );
}

/// The keys under `prefix` in `bucket`.
fn keys(ec2: &local_ec2::LocalEc2, bucket: &str, prefix: &str) -> Vec<String> {
    let out = ec2.call(
        "s3",
        "us-east-1",
        "list_objects_v2",
        &format!(r#"{{"Bucket": "{bucket}", "Prefix": "{prefix}"}}"#),
    );
    out["Contents"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|o| o["Key"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The ledger's entries as `pipe history --json` shows them.
fn history(p: &Project, ec2: &local_ec2::LocalEc2) -> Vec<serde_json::Value> {
    let r = pipe(p, ec2, &["--json", "history"]);
    r.ok();
    let result: serde_json::Value = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "result")
        .expect("a result event");
    result["data"].as_array().unwrap().clone()
}

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
        when: format!("2026-01-01T00:00:{n:02}Z"),
        verify: Some(VerifyOutcome {
            ok: true,
            excerpt: "ok".into(),
        }),
    }
    .seal()
}

/// Writes `releases` into `p`'s local ledger, as bakes before the ledger was shared.
fn local_bakes(p: &Project, releases: &[Release]) {
    let ledger = Ledger::open(&p.path().join(".pipe"));
    for r in releases {
        ledger
            .append(
                "me@here",
                Event::Bake {
                    release: Box::new(r.clone()),
                },
            )
            .unwrap();
    }
}

#[test]
fn a_moved_ledger_takes_twenty_concurrent_appends_and_refuses_edits() {
    let ec2 = local_ec2::hold();
    let a = Project::new("shared", LEDGER_ONLY, &[]);
    create_bucket(&ec2, &a.name);
    let releases: Vec<Release> = (1..=20).map(|n| release(&a, n)).collect();
    local_bakes(&a, &releases);

    // Not moved yet: nothing reads S3 while a local history would be left behind.
    let r = pipe(&a, &ec2, &["releases"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr
            .contains("holds a local ledger that was not moved there"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("pipe ledger push"), "{}", r.stderr);

    // S3 answers 409 ConditionalRequestConflict, with nothing written, while another
    // conditional write of the key is in flight: the push tries that seq again.
    ec2.fault(
        r#"{"fail": {"action": "PutObject", "service": "s3", "code": "ConditionalRequestConflict", "count": 2}}"#,
    );
    let r = pipe(&a, &ec2, &["ledger", "push"]);
    r.ok();
    let faults: serde_json::Value =
        serde_json::from_str(&ec2.ctl("GET", "/_local_ec2/faults", "")).unwrap();
    assert_eq!(
        faults["fail"],
        serde_json::json!([]),
        "both conflicts were met"
    );
    let location = format!("s3://{0}/teams/{0}", a.name);
    assert!(
        r.stdout
            .contains(&format!("pushed 20 of 20 entries to {location}")),
        "{}",
        r.stdout
    );
    assert!(!a.path().join(".pipe/ledger.jsonl").exists());
    assert!(a.path().join(".pipe/ledger.jsonl.pushed").exists());
    let entry_keys = keys(&ec2, &a.name, &format!("teams/{}/entries/", a.name));
    assert_eq!(entry_keys.len(), 20, "{entry_keys:?}");
    assert!(entry_keys[0].ends_with("/entries/00000000000000000001.json"));

    // A second working copy, with no local ledger, reads the same releases from S3.
    let b = a.second_copy();
    let listed = pipe(&b, &ec2, &["releases"]);
    listed.ok();
    for r in &releases {
        assert!(listed.stdout.contains(&r.alias), "{}", listed.stdout);
    }
    let v = pipe(&b, &ec2, &["history", "--verify"]);
    v.ok();
    assert!(
        v.stdout.contains("ledger intact: 20 entries"),
        "{}",
        v.stdout
    );

    // 20 appends at once, half from each copy.
    let env = ec2.env();
    let children: Vec<std::process::Child> = releases
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let dir = if i % 2 == 0 { a.path() } else { b.path() };
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pipe"));
            cmd.current_dir(dir)
                .args(["reject", &r.alias, "--reason", &format!("concurrent {i}")])
                .env("NO_COLOR", "1")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            for (k, v) in &env {
                cmd.env(k, v);
            }
            cmd.spawn().unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v = pipe(&a, &ec2, &["history", "--verify"]);
    v.ok();
    assert!(
        v.stdout.contains("ledger intact: 40 entries"),
        "{}",
        v.stdout
    );
    let entries = history(&b, &ec2);
    let seqs: BTreeSet<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=40).collect());
    // B has read all 40 now (`--verify` above was A's): reading them again gets only the head,
    // every entry comes from its cache, checked by the ETag the listing gives.
    ec2.clear_requests();
    assert_eq!(history(&b, &ec2).len(), 40);
    let got: serde_json::Value =
        serde_json::from_str(&ec2.ctl("GET", "/_local_ec2/requests?action=GetObject", "")).unwrap();
    let paths: Vec<&str> = got["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert!(
        !paths.is_empty() && paths.iter().all(|p| p.ends_with("/head.json")),
        "{paths:?}"
    );
    let rejected: BTreeSet<&str> = entries
        .iter()
        .filter(|e| e["event"] == "reject")
        .map(|e| e["release"].as_str().unwrap())
        .collect();
    let all: BTreeSet<&str> = releases.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(rejected, all, "every append is there, once");

    // A third copy with a history of its own cannot push it over the shared one.
    let c = a.second_copy();
    local_bakes(&c, &[release(&c, 99)]);
    let r = pipe(&c, &ec2, &["ledger", "push"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains(&format!(
            "{location} already holds a different ledger: its seq 1 is not the local ledger's"
        )),
        "{}",
        r.stderr
    );
    assert!(c.path().join(".pipe/ledger.jsonl").exists());

    // An entry edited behind pipe's back breaks the chain at the next seq.
    let mut edited = entries[4].clone();
    edited["who"] = "mallory@elsewhere".into();
    let key = format!("teams/{}/entries/00000000000000000005.json", a.name);
    ec2.call(
        "s3",
        "us-east-1",
        "put_object",
        &serde_json::json!({"Bucket": a.name, "Key": key, "Body": edited.to_string()}).to_string(),
    );
    let v = pipe(&b, &ec2, &["history", "--verify"]);
    assert_eq!(v.code, 1, "{}", v.all());
    assert!(
        v.stderr.contains(&format!(
            "ledger {location}: the chain breaks at seq 6: its `prev` does not match the sha256 of seq 5"
        )),
        "{}",
        v.stderr
    );
    let r = pipe(&a, &ec2, &["releases"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("broken at seq 6"), "{}", r.stderr);
}

#[test]
fn two_working_copies_promoting_one_environment_exclude_each_other() {
    ensure_box();
    let ec2 = local_ec2::hold();
    let port = free_port();
    let a = Project::new(
        "shpromote",
        &docker_pipelinefile(port),
        &[("www/index.html", "shared ledger\n")],
    );
    create_bucket(&ec2, &a.name);
    pipe(&a, &ec2, &["bake", "--env", "staging", "--no-progress"]).ok();
    let b = a.second_copy();

    // A holds the lock, paused inside its promotion.
    let aws = ec2.env();
    let aws: Vec<(&str, &str)> = aws.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut paused = aws.clone();
    paused.push(("PIPE_TEST_PAUSE_AT", "verify release"));
    let mut held = common::spawn_pipe(
        a.path(),
        &["promote", "production", "--no-progress"],
        &paused,
    );
    held.wait_for("test hook: paused at", 120);
    let lock_run = std::fs::read_dir(a.path().join(".pipe/journal"))
        .unwrap()
        .filter_map(|e| {
            let j: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.ok()?.path()).ok()?).ok()?;
            (j["command"] == "lock").then(|| j["run_id"].as_str().unwrap().to_string())
        })
        .next()
        .expect("a's lock journal");

    // B is refused, naming who holds the lock.
    let r = pipe(&b, &ec2, &["promote", "production", "--no-progress"]);
    assert_eq!(r.code, 5, "{}", r.all());
    assert!(
        r.stderr
            .contains("another promotion of `production` is in progress"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains(&lock_run), "{}", r.stderr);
    assert!(r.stderr.contains("--break-lock"), "{}", r.stderr);
    assert!(b.containers().is_empty(), "{:?}", b.containers());

    // A is killed holding it: the lock stays until `pipe clean` on A's host removes it
    // through A's journal (`--break-lock` from another host: tests/ec2_lock.rs). Then B
    // promotes.
    held.signal(libc::SIGKILL);
    held.finish();
    assert_eq!(keys(&ec2, &a.name, "locks/"), ["locks/production.json"]);
    let r = pipe(&b, &ec2, &["promote", "production", "--no-progress"]);
    assert_eq!(r.code, 5, "{}", r.all());
    let cleaned = pipe(&a, &ec2, &["clean"]);
    cleaned.ok();
    assert!(
        cleaned.all().contains(&format!(
            "removed promotion lock s3://{}/locks/production.json  [run {lock_run}",
            a.name
        )),
        "{}",
        cleaned.all()
    );
    assert!(keys(&ec2, &a.name, "locks/").is_empty());
    assert!(a.journals().is_empty(), "{:?}", a.journals());
    pipe(&b, &ec2, &["promote", "production", "--no-progress"]).ok();
    let (status, body) = http_get_retry(port, "/", 30);
    assert_eq!((status, body.trim()), (200, "shared ledger"));
    assert!(keys(&ec2, &a.name, "locks/").is_empty());

    // A second release, promoted from both copies at the same moment: one proceeds, the
    // other is refused (by the lock while the first holds it; or, if it came late, because
    // production changed or already runs it) and changes nothing. Both copies share this
    // host's Docker engine and port, where each would serve from its own host: B's machine
    // goes first (recorded), so whichever wins can start its own.
    pipe(&b, &ec2, &["--env", "production", "destroy"]).ok();
    a.write("www/index.html", "shared ledger, second\n");
    pipe(&a, &ec2, &["bake", "--env", "staging", "--no-progress"]).ok();
    let both: Vec<common::Spawned> = [&a, &b]
        .iter()
        .map(|p| common::spawn_pipe(p.path(), &["promote", "production", "--no-progress"], &aws))
        .collect();
    let mut outcomes: Vec<(i32, String)> = both.into_iter().map(|s| s.finish()).collect();
    outcomes.sort();
    assert_eq!(outcomes[0].0, 0, "{outcomes:?}");
    assert_eq!(outcomes[1].0, 5, "{outcomes:?}");
    let refusal = &outcomes[1].1;
    assert!(
        refusal.contains("another promotion of `production` is in progress: ")
            || refusal.contains("`production` changed while this promotion started")
            || refusal.contains("is already current in `production`"),
        "{refusal}"
    );
    let (status, body) = http_get_retry(port, "/", 30);
    assert_eq!((status, body.trim()), (200, "shared ledger, second"));
    assert!(keys(&ec2, &a.name, "locks/").is_empty());

    // Both copies see one intact history: two bakes, one promotion of each and the destroy
    // (refusals are not recorded).
    let v = pipe(&b, &ec2, &["history", "--verify"]);
    v.ok();
    let events: Vec<String> = history(&a, &ec2)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        events,
        ["bake", "promote", "destroy", "bake", "promote"],
        "{events:?}"
    );
}

/// The README's YAML block whose first line is `first`, parsed by PyYAML (in the local EC2's
/// venv) into JSON, so a block that is not valid YAML fails here.
fn readme_yaml(first: &str) -> serde_json::Value {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let start = readme
        .find(&format!("```yaml\n{first}\n"))
        .unwrap_or_else(|| panic!("README.md has no yaml block starting with {first:?}"))
        + "```yaml\n".len();
    let len = readme[start..].find("\n```\n").expect("the block ends");
    let mut child = std::process::Command::new(local_ec2::python())
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&readme.as_bytes()[start..start + len])
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "README.md's {first:?} block is not YAML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs a CI job's `script` in `p` as its runner would: `args` name the shell (GitHub
/// Actions runs `bash --noprofile --norc -eo pipefail FILE`), `pipe` is the one just built
/// and on PATH, the AWS settings are the local EC2's (a runner's come from its role).
fn ci_shell(
    p: &Project,
    ec2: &local_ec2::LocalEc2,
    args: &[&str],
    script: &str,
    extra: &[(&str, &str)],
) -> Run {
    let file = p.path().join(".ci-step.sh");
    std::fs::write(&file, script).unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_pipe"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = std::process::Command::new("bash");
    cmd.args(args)
        .arg(&file)
        .current_dir(p.path())
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env_remove("PIPE_DIGEST_KEY")
        .stdin(std::process::Stdio::null());
    for (k, v) in ec2.env() {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let run: Run = cmd.output().unwrap().into();
    std::fs::remove_file(&file).unwrap();
    run
}

/// `key`'s value in `v`, as a string.
fn text<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key:?} in {v}"))
}

/// The README's CI examples, run as written (their `run:` scripts and CodeBuild commands; the
/// checkout, credentials and `cargo install` steps are the runner's) against a docker project
/// whose ledger is in the local EC2's S3: the GitHub Actions bake passes the release to the
/// promote job through `$GITHUB_OUTPUT`, the promote job serves it, a second promotion of it
/// exits 5 with `::error::` lines, a bake whose verify fails exits 4 and passes no release on;
/// CodeBuild's bake exports `RELEASE` and its promote project serves that release.
#[test]
fn the_readme_ci_jobs_run_as_written() {
    ensure_box();
    let ec2 = local_ec2::hold();
    let port = free_port();
    let p = Project::new(
        "ci",
        &docker_pipelinefile(port),
        &[("www/index.html", "shared, baked by GitHub Actions\n")],
    );
    create_bucket(&ec2, &p.name);
    let gha = ["--noprofile", "--norc", "-eo", "pipefail"];

    // GitHub Actions: the two jobs and how the release goes from one to the other.
    let wf = readme_yaml("# .github/workflows/pipe.yml");
    let bake_job = &wf["jobs"]["bake"];
    let promote_job = &wf["jobs"]["promote"];
    assert_eq!(
        text(&bake_job["outputs"], "release"),
        "${{ steps.bake.outputs.release }}"
    );
    assert_eq!(text(promote_job, "needs"), "bake");
    assert_eq!(text(promote_job, "environment"), "production");
    let step = |job: &serde_json::Value, key: &str, value: &str| -> serde_json::Value {
        job["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s[key] == value)
            .unwrap_or_else(|| panic!("no step with {key} = {value:?}"))
            .clone()
    };
    let bake = step(bake_job, "id", "bake");
    let promote = step(promote_job, "name", "Promote");
    assert_eq!(
        text(&promote["env"], "RELEASE"),
        "${{ needs.bake.outputs.release }}"
    );
    let output = p.path().join(".github-output");
    let github_output = output.to_str().unwrap();

    // The bake job: the release id goes to $GITHUB_OUTPUT.
    std::fs::write(&output, "").unwrap();
    let r = ci_shell(
        &p,
        &ec2,
        &gha,
        text(&bake, "run"),
        &[("GITHUB_OUTPUT", github_output)],
    );
    r.ok();
    let outputs = std::fs::read_to_string(&output).unwrap();
    let release = outputs
        .strip_prefix("release=")
        .and_then(|s| s.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("GITHUB_OUTPUT: {outputs:?}"))
        .to_string();
    let baked: Vec<String> = history(&p, &ec2)
        .iter()
        .filter(|e| e["event"] == "bake")
        .map(|e| e["release"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(baked, std::slice::from_ref(&release));
    assert!(p.path().join("bake.ndjson").exists());

    // The promote job, with the bake job's output as RELEASE.
    let with_release = [("RELEASE", release.as_str())];
    let r = ci_shell(&p, &ec2, &gha, text(&promote, "run"), &with_release);
    r.ok();
    let (status, body) = http_get_retry(port, "/", 30);
    assert_eq!(
        (status, body.trim()),
        (200, "shared, baked by GitHub Actions")
    );

    // The same job again: the release already serves, a refusal (5) with its error shown.
    let r = ci_shell(&p, &ec2, &gha, text(&promote, "run"), &with_release);
    assert_eq!(r.code, 5, "{}", r.all());
    assert!(
        r.stdout.contains("::error::a promotion gate refused"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("::error::") && l.contains("(hint: ")),
        "{}",
        r.all()
    );

    // A bake whose verify fails: exit 4, said so, and no release for the promote job.
    p.write("www/index.html", "broken\n");
    std::fs::write(&output, "").unwrap();
    let r = ci_shell(
        &p,
        &ec2,
        &gha,
        text(&bake, "run"),
        &[("GITHUB_OUTPUT", github_output)],
    );
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(
        r.stdout
            .contains("::error::verification failed: the release is recorded"),
        "{}",
        r.all()
    );
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "");

    // CodeBuild: one bash per phase list (commands share the shell, a failing one fails the
    // build); the exported RELEASE is read after the build phase, as CodeBuild does.
    let spec = readme_yaml("# buildspec.yml");
    assert_eq!(text(&spec["env"], "shell"), "bash");
    assert_eq!(
        spec["env"]["exported-variables"],
        serde_json::json!(["RELEASE"])
    );
    let commands = |spec: &serde_json::Value, phases: &[&str]| -> String {
        let mut script = String::from("set -e\n");
        for phase in phases {
            for c in spec["phases"][phase]["commands"].as_array().unwrap() {
                script.push_str(c.as_str().unwrap());
                script.push('\n');
            }
        }
        script
    };
    p.write("www/index.html", "shared, baked by CodeBuild\n");
    let exported = p.path().join(".exported");
    let script = format!(
        "{}printf '%s' \"$RELEASE\" > {}\n",
        commands(&spec, &["pre_build", "build"]),
        exported.display()
    );
    let r = ci_shell(&p, &ec2, &[], &script, &[]);
    r.ok();
    let codebuild_release = std::fs::read_to_string(&exported).unwrap();
    assert!(
        r.stdout
            .contains(&format!("baked release {codebuild_release}")),
        "{}",
        r.all()
    );
    assert_ne!(codebuild_release, release);

    let promote_spec =
        readme_yaml("# buildspec-promote.yml (RELEASE comes from the approved bake)");
    let r = ci_shell(
        &p,
        &ec2,
        &[],
        &commands(&promote_spec, &["build"]),
        &[("RELEASE", codebuild_release.as_str())],
    );
    r.ok();
    let (status, body) = http_get_retry(port, "/", 30);
    assert_eq!((status, body.trim()), (200, "shared, baked by CodeBuild"));
    pipe(&p, &ec2, &["history", "--verify"]).ok();
}
