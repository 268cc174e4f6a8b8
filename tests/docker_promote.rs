//! Local promotion against the real Docker engine: staging and production are ec2 environments
//! run with `--local`, as in the example. Plan, promote, a failed promotion that keeps the old
//! container serving, rollback, reject.

mod common;

use common::{Project, ensure_box, free_port, http_get_retry};

const SERVER: &str = r#"perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalAddr=>"0.0.0.0",LocalPort=>$ARGV[0],Listen=>5,ReuseAddr=>1) or die "listen: $!"; while($c=$s->accept){ <$c>; open(F,"<","/srv/www/index.html"); local $/; $b=<F>; close F; print $c "HTTP/1.0 200 OK\r\nContent-Length: ".length($b)."\r\n\r\n".$b; close $c }' 8000"#;

/// Production is the first environment, so it serves on `port` itself (offset 0).
fn pipelinefile(port: u16) -> String {
    format!(
        r#"[pipeline]
name = "@NAME@"

[box]
docker = {{ box = "debian-12" }}
ec2 = {{ ami_filter = {{ name = "debian-12-amd64-*", owners = ["136693071363"] }} }}

[app]
provision = [
  {{ file = "www/", to = "/srv/www" }},
  {{ inline = ["echo 'baked for {{{{ environment }}}}' >> /srv/www/index.html"] }},
]

[[service]]
name = "web"
command = '''{SERVER}'''
port = 8000
host_port = {port}

[verify]
http = [{{ url = "http://127.0.0.1:8000/", status = 200, contains = "baked for" }}]
timeout = 15

[env.production]
target = "ec2"
region = "us-east-1"
promote_from = "staging"

[env.staging]
target = "ec2"
region = "us-east-1"
"#
    )
}

fn serving(p: &Project) -> Vec<String> {
    p.containers()
        .into_iter()
        .filter(|c| c.contains("-production-"))
        .collect()
}

fn bake(p: &Project, page: &str) -> String {
    p.write("www/index.html", page);
    let r = p.pipe(&["bake", "--env", "staging", "--local", "--no-progress"]);
    r.ok();
    let last: serde_json::Value = serde_json::from_str(p.ledger_lines().last().unwrap()).unwrap();
    assert_eq!(last["release"]["target"], "docker");
    last["release"]["alias"].as_str().unwrap().to_string()
}

#[test]
fn promote_plan_rollback_reject_on_one_machine() {
    ensure_box();
    let port = free_port();
    let p = Project::new(
        "promote",
        &pipelinefile(port),
        &[("www/index.html", "<h1>one</h1>\n")],
    );
    // Without --local and without AWS credentials the ec2 environments say how to run them
    // here (no instance metadata service asked: nothing leaves the loopback).
    let no_local = p.pipe_env(
        &["bake", "--env", "staging"],
        &[
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/nonexistent"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_PROFILE", ""),
        ],
    );
    assert_eq!(no_local.code, 1, "{}", no_local.all());
    assert!(
        no_local.stderr.contains("no AWS credentials"),
        "{}",
        no_local.stderr
    );
    assert!(no_local.stderr.contains("--local"), "{}", no_local.stderr);

    let one = bake(&p, "<h1>one</h1>\n");
    // Nothing to promote from production itself; the newest verified staging release is taken.
    let plan = p.pipe(&["promote", "production", "--local", "--plan"]);
    plan.ok();
    assert!(
        plan.stdout.contains(&format!("release {one}")),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("nothing was changed"),
        "{}",
        plan.stdout
    );
    assert_eq!(p.ledger_lines().len(), 1, "--plan records nothing");
    assert!(serving(&p).is_empty(), "--plan starts nothing");

    // A release baked locally is promoted locally only: on ec2 there is no verified release.
    let remote = p.pipe(&["promote", "production"]);
    assert_eq!(remote.code, 5, "{}", remote.all());
    assert!(
        remote
            .stderr
            .contains("no verified ec2 release of env `staging`"),
        "{}",
        remote.stderr
    );

    let up = p.pipe(&["promote", "production", "--local", "--no-progress"]);
    up.ok();
    let (status, body) = http_get_retry(port, "/", 30);
    assert_eq!(status, 200);
    assert!(
        body.contains("one") && body.contains("baked for staging"),
        "{body}"
    );
    assert_eq!(serving(&p).len(), 1);
    assert!(p.journals().is_empty());
    // Only temporaries carry `pipe.run`: not the serving container, nor the layers it comes
    // from (issue 13).
    let pipeline = format!("label=pipe.pipeline={}", p.name);
    let labelled = common::docker(&[
        "ps",
        "-aq",
        "--filter",
        "label=pipe.run",
        "--filter",
        &pipeline,
    ]);
    assert!(labelled.trim().is_empty(), "{labelled}");
    let labelled = common::docker(&[
        "images",
        "-q",
        "--filter",
        "label=pipe.run",
        "--filter",
        &pipeline,
    ]);
    assert!(labelled.trim().is_empty(), "{labelled}");
    // The image is tagged for the environment.
    assert!(
        common::docker(&["images", &format!("pipe/{}:production", p.name)]).contains("production")
    );

    let again = p.pipe(&["promote", "production", "--local"]);
    assert_eq!(again.code, 5, "{}", again.all());
    assert!(again.stderr.contains("already current"), "{}", again.stderr);

    let two = bake(&p, "<h1>two</h1>\n");
    p.pipe(&["promote", "production", "--local"]).ok();
    let (_, body) = http_get_retry(port, "/", 30);
    assert!(body.contains("two"), "{body}");
    let names = serving(&p);
    assert_eq!(names.len(), 1, "the old container is gone: {names:?}");
    assert!(names[0].ends_with(&two), "{names:?}");

    // A promotion that fails its checks keeps the current container serving.
    let _three = bake(&p, "<h1>three</h1>\n");
    let pf = std::fs::read_to_string(p.path().join("Pipelinefile.toml")).unwrap();
    p.write(
        "Pipelinefile.toml",
        &pf.replace("contains = \"baked for\"", "contains = \"never there\"")
            .replace("timeout = 15", "timeout = 3"),
    );
    let failed = p.pipe(&["promote", "production", "--local"]);
    assert_eq!(failed.code, 4, "{}", failed.all());
    // Its verify step says it failed, not `ok` (issue 13).
    assert!(
        failed.stderr.contains("!!  verify release") && failed.stderr.contains("the checks failed"),
        "{}",
        failed.stderr
    );
    assert!(
        !failed.stderr.contains("ok  verify release"),
        "{}",
        failed.stderr
    );
    let (_, body) = http_get_retry(port, "/", 30);
    assert!(body.contains("two"), "old release still serves: {body}");
    assert_eq!(serving(&p), names);
    let last: serde_json::Value = serde_json::from_str(p.ledger_lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "promote");
    assert_eq!(last["ok"], false);
    p.write("Pipelinefile.toml", &pf);

    // Rollback goes back to `one`, a second rollback to `two`.
    let plan = p.pipe(&["rollback", "production", "--local", "--plan"]);
    plan.ok();
    assert!(plan.stdout.contains(&one), "{}", plan.stdout);
    p.pipe(&["rollback", "production", "--local"]).ok();
    let (_, body) = http_get_retry(port, "/", 30);
    assert!(body.contains("one"), "{body}");
    let history = p.pipe(&["history", "--env", "production"]);
    assert!(history.stdout.contains("rollback"), "{}", history.stdout);
    assert!(history.stdout.contains("FAILED"), "{}", history.stdout);

    // A rejected release can neither be promoted nor rolled back to.
    let rej = p.pipe(&["reject", &two, "--reason", "bad page"]);
    rej.ok();
    let r = p.pipe(&["rollback", "production", "--local"]);
    assert_eq!(r.code, 5, "{}", r.all());
    assert!(r.stderr.contains("rejected"), "{}", r.stderr);
    let r = p.pipe(&["promote", "production", "--local", "--release", &two]);
    assert_eq!(r.code, 5, "{}", r.all());
    let releases = p.pipe(&["releases"]);
    assert!(releases.stdout.contains("rejected"), "{}", releases.stdout);
    assert!(
        releases.stdout.contains("production"),
        "{}",
        releases.stdout
    );
    p.pipe(&["history", "--verify"]).ok();

    // Destroying the container that serves production records that production serves
    // nothing: no release is current there any more, and the one that served can be promoted
    // again (before, it was "already current" with nothing running).
    let d = p.pipe(&["destroy", "--env", "production"]);
    d.ok();
    assert!(
        d.stdout.contains("`production` serves nothing"),
        "{}",
        d.stdout
    );
    assert!(serving(&p).is_empty());
    let listed = p.pipe(&["--json", "releases"]);
    listed.ok();
    let result: serde_json::Value =
        serde_json::from_str(listed.stdout.lines().last().unwrap()).unwrap();
    let views = result["data"].as_array().unwrap();
    assert!(
        views
            .iter()
            .all(|v| v["current_in"].as_array().unwrap().is_empty()),
        "{}",
        listed.stdout
    );
    let history = p.pipe(&["history", "--env", "production"]);
    assert!(
        history.stdout.contains("serves nothing"),
        "{}",
        history.stdout
    );
    p.pipe(&["promote", "production", "--local", "--release", &one])
        .ok();
    let (_, body) = http_get_retry(port, "/", 30);
    assert!(body.contains("one"), "{body}");
    p.pipe(&["history", "--verify"]).ok();
}

#[test]
fn ctrl_c_while_switching_brings_the_old_container_back() {
    ensure_box();
    let port = free_port();
    let p = Project::new(
        "promote-int",
        &pipelinefile(port),
        &[("www/index.html", "<h1>one</h1>\n")],
    );
    let _one = bake(&p, "<h1>one</h1>\n");
    p.pipe(&["promote", "production", "--local"]).ok();
    let before = serving(&p);
    let _two = bake(&p, "<h1>two</h1>\n");
    let lines = p.ledger_lines().len();
    // Before the switch, right after the old container stopped (the Ctrl-C ends that step),
    // and while the new one starts.
    for pause in ["verify release", "old container stopped", "start pipe-"] {
        let mut child = common::spawn_pipe(
            p.path(),
            &["promote", "production", "--local", "--no-progress"],
            &[("PIPE_TEST_PAUSE_AT", pause)],
        );
        child.wait_for("test hook: paused at", 120);
        child.signal(libc::SIGINT);
        let (code, stderr) = child.finish();
        assert_eq!(code, 130, "{stderr}");
        let (status, body) = http_get_retry(port, "/", 30);
        assert_eq!(status, 200, "{stderr}");
        assert!(
            body.contains("one"),
            "the old release serves again: {body}\n{stderr}"
        );
        assert_eq!(serving(&p), before, "{stderr}");
        assert!(p.journals().is_empty(), "{stderr}");
        assert_eq!(p.ledger_lines().len(), lines, "nothing recorded: {stderr}");
    }
}
