//! The environment's promotion gates against the real Docker engine (`--local`): `min_soak`
//! refuses a release verified too recently and says how long is left, `require_approval`
//! refuses the promoter's own approval and takes another user's (`USER` differs), `pipe
//! approve` records who approved what, and `--plan` shows every gate's verdict.

mod common;

use std::time::Duration;

use common::{Project, Run, ensure_box, free_port, http_get_retry};

const SERVER: &str = r#"perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalAddr=>"0.0.0.0",LocalPort=>$ARGV[0],Listen=>5,ReuseAddr=>1) or die "listen: $!"; while($c=$s->accept){ <$c>; open(F,"<","/srv/www/index.html"); local $/; $b=<F>; close F; print $c "HTTP/1.0 200 OK\r\nContent-Length: ".length($b)."\r\n\r\n".$b; close $c }' 8000"#;

/// Seconds of soak production asks for: long enough that the checks right after the bake
/// come before it, short enough to wait for.
const SOAK: u64 = 12;

fn pipelinefile(port: u16) -> String {
    format!(
        r#"[pipeline]
name = "@NAME@"

[box]
docker = {{ box = "debian-12" }}
ec2 = {{ ami_filter = {{ name = "debian-12-amd64-*", owners = ["136693071363"] }} }}

[app]
provision = [ {{ file = "www/", to = "/srv/www" }} ]

[[service]]
name = "web"
command = '''{SERVER}'''
port = 8000
host_port = {port}

[verify]
http = [{{ url = "http://127.0.0.1:8000/", status = 200, contains = "gated" }}]
timeout = 15

[env.production]
target = "ec2"
region = "us-east-1"
promote_from = "staging"
min_soak = "{SOAK}s"
require_approval = true

[env.staging]
target = "ec2"
region = "us-east-1"
"#
    )
}

/// `pipe ARGS` as `user`.
fn as_user(p: &Project, user: &str, args: &[&str]) -> Run {
    p.pipe_env(args, &[("USER", user), ("LOGNAME", user)])
}

fn last_entry(p: &Project) -> serde_json::Value {
    serde_json::from_str(p.ledger_lines().last().unwrap()).unwrap()
}

#[test]
fn soak_time_and_another_users_approval_gate_a_promotion() {
    ensure_box();
    let port = free_port();
    let p = Project::new(
        "gates",
        &pipelinefile(port),
        &[("www/index.html", "<h1>gated</h1>\n")],
    );
    as_user(
        &p,
        "bob",
        &["bake", "--env", "staging", "--local", "--no-progress"],
    )
    .ok();
    let bake = last_entry(&p);
    let alias = bake["release"]["alias"].as_str().unwrap().to_string();
    let baked_at = chrono::DateTime::parse_from_rfc3339(bake["time"].as_str().unwrap()).unwrap();

    // Right after the bake: too early, and nobody approved it. Both are said at once.
    let early = as_user(&p, "bob", &["promote", "production", "--local"]);
    assert_eq!(early.code, 5, "{}", early.all());
    assert!(
        early.stderr.contains(&format!(
            "takes releases verified at least {SOAK}s ago (min_soak)"
        )) && early.stderr.contains("left"),
        "{}",
        early.stderr
    );
    assert!(
        early
            .stderr
            .contains(&format!("release {alias} is not approved for `production`")),
        "{}",
        early.stderr
    );
    assert!(
        early
            .stderr
            .contains(&format!("pipe approve {alias} --env production")),
        "{}",
        early.stderr
    );

    // --plan shows every gate's verdict and still exits 5; it records and starts nothing.
    let plan = as_user(&p, "bob", &["promote", "production", "--local", "--plan"]);
    assert_eq!(plan.code, 5, "{}", plan.all());
    for line in [
        "  verified  passed ",
        "  target    passed   baked on docker",
        "  source    passed   baked in `staging`",
        "  min_soak  REFUSED ",
        "  approval  REFUSED ",
    ] {
        assert!(plan.stdout.contains(line), "{line:?} in\n{}", plan.stdout);
    }
    assert!(
        plan.stdout.contains("nothing was changed"),
        "{}",
        plan.stdout
    );
    let json = as_user(
        &p,
        "bob",
        &["--json", "promote", "production", "--local", "--plan"],
    );
    assert_eq!(json.code, 5, "{}", json.all());
    let result: serde_json::Value = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "result")
        .expect("a result event");
    let gates: Vec<(String, String)> = result["data"]["gates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["gate"].as_str().unwrap().to_string(),
                g["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        gates,
        [
            ("verified", "passed"),
            ("target", "passed"),
            ("source", "passed"),
            ("min_soak", "refused"),
            ("approval", "refused"),
        ]
        .map(|(g, o)| (g.to_string(), o.to_string()))
    );
    assert_eq!(
        p.ledger_lines().len(),
        1,
        "refusals and plans record nothing"
    );
    assert!(p.containers().iter().all(|c| !c.contains("-production-")));

    // An approval needs --env; bob approves, which does not count when bob promotes.
    let no_env = as_user(&p, "bob", &["approve", &alias]);
    assert_eq!(no_env.code, 2, "{}", no_env.all());
    as_user(&p, "bob", &["approve", &alias, "--env", "production"]).ok();
    let entry = last_entry(&p);
    assert_eq!(entry["event"], "approve");
    assert_eq!(entry["release"], bake["release"]["id"]);
    assert_eq!(entry["env"], "production");
    assert!(
        entry["who"].as_str().unwrap().starts_with("bob@"),
        "{entry}"
    );
    let again = as_user(&p, "bob", &["approve", &alias, "--env", "production"]);
    again.ok();
    assert!(
        again.stdout.contains("already approved"),
        "{}",
        again.stdout
    );
    assert_eq!(
        p.ledger_lines().len(),
        2,
        "a second approval by bob is not recorded"
    );
    let own = as_user(&p, "bob", &["promote", "production", "--local"]);
    assert_eq!(own.code, 5, "{}", own.all());
    assert!(
        own.stderr
            .contains("only by bob, who is promoting it: an approval must come from another user"),
        "{}",
        own.stderr
    );

    // Alice approves (JSON result), which counts for bob.
    let alice = as_user(
        &p,
        "alice",
        &["--json", "approve", &alias, "--env", "production"],
    );
    alice.ok();
    assert!(
        alice.stdout.contains(r#""already":false"#) && alice.stdout.contains(r#""who":"alice@"#),
        "{}",
        alice.stdout
    );
    let entry = last_entry(&p);
    assert_eq!(entry["event"], "approve");
    assert!(
        entry["who"].as_str().unwrap().starts_with("alice@"),
        "{entry}"
    );

    // Still inside the soak time (unless this machine is very slow): only min_soak refuses now.
    let soaked = (chrono::Utc::now() - baked_at.with_timezone(&chrono::Utc)).num_seconds();
    if soaked < SOAK as i64 - 1 {
        let plan = as_user(&p, "bob", &["promote", "production", "--local", "--plan"]);
        assert_eq!(plan.code, 5, "{}", plan.all());
        assert!(
            plan.stdout
                .contains("  approval  passed   approved by alice@"),
            "{}",
            plan.stdout
        );
        assert!(
            plan.stdout.contains("  min_soak  REFUSED "),
            "{}",
            plan.stdout
        );
    }

    // Once the soak time has passed, bob promotes.
    let ready = baked_at + chrono::Duration::seconds(SOAK as i64 + 1);
    if let Ok(wait) = (ready.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std() {
        std::thread::sleep(wait + Duration::from_millis(200));
    }
    let up = as_user(
        &p,
        "bob",
        &["promote", "production", "--local", "--no-progress"],
    );
    up.ok();
    let (status, body) = http_get_retry(port, "/", 30);
    assert_eq!((status, body.contains("gated")), (200, true), "{body}");
    let entry = last_entry(&p);
    assert_eq!(
        (entry["event"].as_str(), entry["ok"].as_bool()),
        (Some("promote"), Some(true))
    );
    assert!(
        entry["who"].as_str().unwrap().starts_with("bob@"),
        "{entry}"
    );

    // history and releases show the approvals.
    let history = as_user(&p, "bob", &["history", "--env", "production"]);
    history.ok();
    let approvals: Vec<&str> = history
        .stdout
        .lines()
        .filter(|l| l.contains(&format!("approve   production   {alias}")))
        .collect();
    assert_eq!(approvals.len(), 2, "{}", history.stdout);
    assert!(approvals[0].contains("bob@") && approvals[1].contains("alice@"));
    let releases = as_user(&p, "bob", &["releases"]);
    assert!(
        releases
            .stdout
            .contains("production by bob, production by alice"),
        "{}",
        releases.stdout
    );
    let json = as_user(&p, "bob", &["--json", "releases"]);
    let line = json.stdout.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let approvals = &v["data"][0]["approvals"];
    assert_eq!(approvals.as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(approvals[1]["env"], "production");
    assert_eq!(v["data"][0]["verified_at"], bake["time"]);

    // A rejected release cannot be approved; a local environment has no lock to break.
    as_user(&p, "carol", &["reject", &alias]).ok();
    let rejected = as_user(&p, "carol", &["approve", &alias, "--env", "production"]);
    assert_eq!(rejected.code, 5, "{}", rejected.all());
    assert!(
        rejected.stderr.contains(&format!(
            "cannot approve release {alias} for `production`: release {alias} was rejected"
        )),
        "{}",
        rejected.stderr
    );
    let lines = p.ledger_lines().len();
    let lock = as_user(
        &p,
        "carol",
        &["promote", "production", "--local", "--break-lock"],
    );
    lock.ok();
    assert!(
        lock.stdout.contains("no promotion lock on docker"),
        "{}",
        lock.stdout
    );
    assert_eq!(
        p.ledger_lines().len(),
        lines,
        "nothing broken, nothing recorded"
    );
    as_user(&p, "bob", &["history", "--verify"]).ok();
}
