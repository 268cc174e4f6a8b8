//! `pipe promote` and `pipe rollback` on ec2 against the local EC2: an Auto Scaling group of two
//! real machines behind a load balancer that really forwards HTTP on 127.0.0.1. A client sends
//! requests through it without pause while the group is refreshed to a new release and rolled
//! back: not one request may fail. A release whose instances never get healthy, and a Ctrl-C
//! during a refresh, leave the previous release serving on every instance. Also: the lock
//! (a second promotion of the same environment is refused), `--plan` (changes nothing), drift,
//! and a production environment in another account and region (the AMI copied and shared,
//! the role assumed) with the bake and the promotion published to an SNS topic. Blue/green
//! (a new group per release) on a small pipeline, with Ctrl-C at each step. And the
//! repository's example itself (nginx and node, the base precached), promoted both ways.
//!
//! Durations AWS counts in tens of seconds (health checks, grace, warm-up, draining) are scaled
//! down to a tenth by the local EC2's timing knob, so one refresh takes seconds, not minutes.

mod common;
#[path = "support/local_ec2.rs"]
mod local_ec2;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Project, spawn_pipe};
use serde_json::Value;

/// An HTTP server in perl (perl-base is in every Debian image): a process per connection, so a
/// slow client never blocks the load balancer's health checks. Serves /srv/www/<path> (index.html
/// for /), 404 when there is no such file.
const SERVER: &str = r#"perl -MIO::Socket::INET -e '$SIG{CHLD}="IGNORE"; $s=IO::Socket::INET->new(LocalAddr=>"0.0.0.0",LocalPort=>80,Listen=>128,ReuseAddr=>1) or die "listen: $!"; while(1){ $c=$s->accept or next; $p=fork(); if(!defined $p || $p){ close $c; next } close $s; $l=<$c>; ($m,$u)=split(" ",$l); while($h=<$c>){ last if $h=~/^\r?\n$/ } $u="/index.html" if $u eq "/"; $u=~s/[^a-z.\/]//g; if(open(F,"<","/srv/www$u")){ local $/; $b=<F>; close F; print $c "HTTP/1.0 200 OK\r\nContent-Length: ".length($b)."\r\n\r\n".$b } else { print $c "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n" } close $c; exit 0 }'"#;

fn pipelinefile() -> String {
    format!(
        r#"[pipeline]
name = "@NAME@"

[vars]
greeting = "one"

[box]
ec2 = {{ ami_filter = {{ name = "debian-12-amd64-*", owners = ["136693071363"] }} }}

[base]
provision = [ {{ inline = ["echo base > /base.txt"] }} ]

[app]
provision = [
  {{ file = "www/", to = "/srv/www" }},
  {{ inline = ["echo 'release {{{{ vars.greeting }}}}' > /srv/www/index.html"] }},
]

[[service]]
name = "web"
command = '''{SERVER}'''
port = 80
publish = false

[verify]
http = [{{ url = "http://127.0.0.1/", status = 200, contains = "release" }}]
timeout = 30

[env.staging]
target = "ec2"
region = "us-east-1"

[env.production]
target = "ec2"
promote_from = "staging"
region = "us-east-1"
auto_scaling_group = "@NAME@"
launch_template = "@NAME@"
ssm_parameter = "/@NAME@/production/ami"
refresh = {{ min_healthy_percentage = 100, max_healthy_percentage = 200, instance_warmup = 10 }}
"#
    )
}

struct Env {
    pairs: Vec<(&'static str, String)>,
}

impl Env {
    fn of(ec2: &local_ec2::LocalEc2) -> Self {
        Env { pairs: ec2.env() }
    }

    fn with<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut v: Vec<(&str, &str)> = self.pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        v.extend_from_slice(extra);
        v
    }
}

/// Bakes staging with `greeting`, `health` deciding whether /health exists; returns the app AMI.
fn bake(p: &Project, env: &Env, greeting: &str, health: bool) -> String {
    if health {
        p.write("www/health", "ok\n");
    } else {
        let _ = std::fs::remove_file(p.path().join("www/health"));
    }
    bake_with(p, env, &format!("greeting={greeting}"))
}

/// Bakes staging with one `--var NAME=VALUE`; returns the app AMI.
fn bake_with(p: &Project, env: &Env, var: &str) -> String {
    let r = p.pipe_env(
        &["bake", "--env", "staging", "--no-progress", "--var", var],
        &env.with(&[]),
    );
    r.ok();
    let release: Value = serde_json::from_str(p.ledger_lines().last().unwrap()).unwrap();
    release["release"]["artifacts"]["ec2:us-east-1"]
        .as_str()
        .unwrap_or_else(|| panic!("no AMI in {release}: {}", r.all()))
        .to_string()
}

/// Runs `python -m local_ec2.stack create ...` (the moto venv's python) in us-east-1: JSON on
/// stdout.
fn stack(ec2: &local_ec2::LocalEc2, args: &[&str]) -> Value {
    stack_in(ec2, "us-east-1", args)
}

/// [`stack`] in `region`.
fn stack_in(ec2: &local_ec2::LocalEc2, region: &str, args: &[&str]) -> Value {
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(local_ec2::python())
        .args(["-m", "local_ec2.stack", "--endpoint", &ec2.endpoint])
        .args(["--region", region, "create"])
        .args(args)
        .env("PYTHONPATH", repo.join("tests"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("the moto venv's python");
    assert!(
        out.status.success(),
        "stack {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A client sending GET / through the load balancer without pause, on a fresh connection each
/// time, recording every answer (status and body, or the error).
struct Hammer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<(u16, String)>>>,
}

impl Hammer {
    fn start(url: &str) -> Self {
        let addr = url.trim_start_matches("http://").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let started = Instant::now();
            // Bounded: at most 10 minutes and 60,000 requests.
            while !flag.load(Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(600)
                && seen.len() < 60_000
            {
                seen.push(get(&addr));
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        Hammer {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<(u16, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// One GET /: status and body; status 0 and the error for a failed connection.
fn get(addr: &str) -> (u16, String) {
    let attempt = || -> std::io::Result<(u16, String)> {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: lb\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
        Ok((status, body.to_string()))
    };
    attempt().unwrap_or_else(|e| (0, e.to_string()))
}

/// The answers that were not a 200 with a release's page.
fn failures(seen: &[(u16, String)]) -> Vec<&(u16, String)> {
    seen.iter()
        .filter(|(s, b)| *s != 200 || !b.starts_with("release "))
        .collect()
}

/// The distinct pages in the order they were first seen.
fn pages(seen: &[(u16, String)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, b) in seen {
        if out.last() != Some(b) && !out.contains(b) {
            out.push(b.clone());
        }
    }
    out
}

fn status(p: &Project, env: &Env) -> Value {
    let r = p.pipe_env(&["--json", "status", "--env", "production"], &env.with(&[]));
    r.ok();
    let line = r
        .stdout
        .lines()
        .find(|l| l.contains("\"event\":\"result\""))
        .unwrap_or_else(|| panic!("no result: {}", r.all()))
        .to_string();
    serde_json::from_str::<Value>(&line).unwrap()["data"].clone()
}

fn row(st: &Value, what: &str) -> String {
    st["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["what"] == what)
        .map(|r| r["value"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn promote_and_roll_back_through_the_load_balancer_without_a_failed_request() {
    let ec2 = local_ec2::hold();
    ec2.ctl(
        "POST",
        "/_local_ec2/timing",
        r#"{"scale": 0.1, "refresh_timeout": 60}"#,
    );
    common::ensure_box();
    let p = Project::new("ec2promo", &pipelinefile(), &[("www/health", "ok\n")]);
    let env = Env::of(&ec2);
    let one = bake(&p, &env, "one", true);

    // Production as Terraform would have made it: a group of two on release one's AMI, behind
    // the load balancer, health-checked on /health.
    let made = stack(
        &ec2,
        &[
            "--name",
            &p.name,
            "--ami",
            &one,
            "--capacity",
            "2",
            "--path",
            "/health",
        ],
    );
    let url = made["url"].as_str().unwrap().to_string();
    assert_eq!(get(url.trim_start_matches("http://")).1, "release one");

    // --plan changes nothing in AWS or the ledger.
    let ledger_before = p.ledger_lines();
    let recorded = ec2.actions().len();
    let plan = p.pipe_env(&["promote", "production", "--plan"], &env.with(&[]));
    plan.ok();
    assert!(
        plan.stdout.contains("instance refresh of group"),
        "{}",
        plan.all()
    );
    assert!(
        plan.stdout.contains("nothing was changed"),
        "{}",
        plan.all()
    );
    let mutating: Vec<String> = ec2
        .actions()
        .into_iter()
        .skip(recorded)
        .filter(|a| !a.starts_with("Describe") && !a.starts_with("Get"))
        .collect();
    assert_eq!(mutating, Vec::<String>::new(), "--plan only reads");
    assert_eq!(p.ledger_lines(), ledger_before);

    // The first promotion adopts the group: release one, now recorded.
    p.pipe_env(&["promote", "production"], &env.with(&[])).ok();

    // Release two, through the load balancer under load.
    let two = bake(&p, &env, "two", true);
    let hammer = Hammer::start(&url);
    let r = p.pipe_env(&["promote", "production", "--no-progress"], &env.with(&[]));
    std::thread::sleep(Duration::from_secs(1));
    let seen = hammer.finish();
    r.ok();
    assert!(seen.len() > 50, "the client kept sending: {}", seen.len());
    assert_eq!(failures(&seen), Vec::<&(u16, String)>::new(), "{}", r.all());
    assert_eq!(pages(&seen), ["release one", "release two"], "{}", r.all());

    // Every instance runs it, the template's default names it, SSM reads it: no drift.
    let st = status(&p, &env);
    assert_eq!(st["drift"], serde_json::json!([]), "{st}");
    assert_eq!(st["expected_image"], two.as_str());
    assert!(row(&st, "template default").ends_with(&two), "{st}");
    assert!(row(&st, "ssm").ends_with(&two), "{st}");
    let instances = row(&st, "instances");
    assert_eq!(instances.matches(&two).count(), 2, "{instances}");

    // Rollback: release one again, without a failed request.
    let hammer = Hammer::start(&url);
    let r = p.pipe_env(&["rollback", "production", "--no-progress"], &env.with(&[]));
    std::thread::sleep(Duration::from_secs(1));
    let seen = hammer.finish();
    r.ok();
    assert_eq!(failures(&seen), Vec::<&(u16, String)>::new(), "{}", r.all());
    assert_eq!(pages(&seen), ["release two", "release one"], "{}", r.all());
    let st = status(&p, &env);
    assert_eq!(st["drift"], serde_json::json!([]), "{st}");
    assert_eq!(st["expected_image"], one.as_str());

    // A release whose instances never get healthy (no /health): the refresh fails and rolls
    // back, release one keeps serving on every instance, no request fails, the promotion is
    // recorded as failed with the reason.
    let broken = bake(&p, &env, "three", false);
    let hammer = Hammer::start(&url);
    let r = p.pipe_env(&["promote", "production", "--no-progress"], &env.with(&[]));
    let seen = hammer.finish();
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("instance refresh"), "{}", r.all());
    assert!(r.stderr.contains("Rollback"), "{}", r.all());
    assert!(!r.stderr.contains("cleanup also failed"), "{}", r.all());
    assert_eq!(failures(&seen), Vec::<&(u16, String)>::new(), "{}", r.all());
    assert_eq!(pages(&seen), ["release one"], "{}", r.all());
    let last: Value = serde_json::from_str(p.ledger_lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "promote");
    assert_eq!(last["ok"], false);
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .contains("instance refresh"),
        "{last}"
    );
    let st = status(&p, &env);
    assert_eq!(st["drift"], serde_json::json!([]), "{st}");
    assert_eq!(row(&st, "instances").matches(&one).count(), 2, "{st}");
    assert!(!row(&st, "template default").contains(&broken), "{st}");

    // Ctrl-C during a refresh to release two: rolled back, recorded; meanwhile a second
    // promotion of production is refused by the lock.
    let hammer = Hammer::start(&url);
    let mut child = spawn_pipe(
        p.path(),
        &[
            "promote",
            "production",
            "--release",
            &two_id(&p),
            "--no-progress",
        ],
        &env.with(&[("PIPE_TEST_PAUSE_AT", "instance refresh in progress")]),
    );
    child.wait_for("test hook: paused at `instance refresh in progress`", 300);
    let second = p.pipe_env(&["promote", "production"], &env.with(&[]));
    assert_eq!(second.code, 5, "{}", second.all());
    assert!(
        second
            .stderr
            .contains("another promotion of `production` is in progress"),
        "{}",
        second.all()
    );
    child.signal(libc::SIGINT);
    let (code, stderr) = child.finish();
    let seen = hammer.finish();
    assert_eq!(code, 130, "{stderr}");
    assert!(!stderr.contains("cleanup also failed"), "{stderr}");
    assert_eq!(failures(&seen), Vec::<&(u16, String)>::new(), "{stderr}");
    let st = status(&p, &env);
    assert_eq!(st["drift"], serde_json::json!([]), "{st}");
    assert_eq!(row(&st, "instances").matches(&one).count(), 2, "{st}");
    assert_eq!(get(url.trim_start_matches("http://")).1, "release one");
    let last: Value = serde_json::from_str(p.ledger_lines().last().unwrap()).unwrap();
    assert_eq!(last["ok"], false, "{last}");

    // `pipe rollback production` while another terminal's promotion refreshes the group: the
    // refresh is rolled back, and the promotion, stopped, records its failure.
    let hammer = Hammer::start(&url);
    let mut child = spawn_pipe(
        p.path(),
        &[
            "promote",
            "production",
            "--release",
            &two_id(&p),
            "--no-progress",
        ],
        &env.with(&[("PIPE_TEST_PAUSE_AT", "instance refresh in progress")]),
    );
    child.wait_for("test hook: paused at `instance refresh in progress`", 300);
    let r = p.pipe_env(&["rollback", "production"], &env.with(&[]));
    r.ok();
    assert!(
        r.stdout.contains("rolled back instance refresh"),
        "{}",
        r.all()
    );
    child.signal(libc::SIGTERM);
    let (code, stderr) = child.finish();
    let seen = hammer.finish();
    assert_eq!(code, 130, "{stderr}");
    assert_eq!(failures(&seen), Vec::<&(u16, String)>::new(), "{stderr}");
    assert_eq!(pages(&seen), ["release one"], "{stderr}");
    let st = status(&p, &env);
    assert_eq!(st["drift"], serde_json::json!([]), "{st}");

    // Drift behind pipe's back: the SSM parameter changed, the group on $Latest, and then an
    // instance that runs another AMI (a new version with the broken release's AMI, and an
    // instance replaced from it).
    let param = format!("/{}/production/ami", p.name);
    ec2.call(
        "ssm",
        "us-east-1",
        "put_parameter",
        &serde_json::json!({"Name": param, "Value": two, "Overwrite": true, "Type": "String"})
            .to_string(),
    );
    ec2.call(
        "autoscaling",
        "us-east-1",
        "update_auto_scaling_group",
        &serde_json::json!({"AutoScalingGroupName": p.name, "LaunchTemplate": {"LaunchTemplateName": p.name, "Version": "$Latest"}})
            .to_string(),
    );
    let st = status(&p, &env);
    let drift = st["drift"].to_string();
    assert!(
        drift.contains(&format!("SSM parameter {param} is {two}")),
        "{drift}"
    );
    assert!(drift.contains("$Latest"), "{drift}");
    ec2.call(
        "ec2",
        "us-east-1",
        "create_launch_template_version",
        &serde_json::json!({"LaunchTemplateName": p.name, "SourceVersion": "$Default", "LaunchTemplateData": {"ImageId": broken}})
            .to_string(),
    );
    let victim = made["instances"][0].as_str().map(str::to_string);
    let group = ec2.call(
        "autoscaling",
        "us-east-1",
        "describe_auto_scaling_groups",
        &serde_json::json!({"AutoScalingGroupNames": [p.name]}).to_string(),
    );
    let victim = group["AutoScalingGroups"][0]["Instances"][0]["InstanceId"]
        .as_str()
        .map(str::to_string)
        .or(victim)
        .unwrap();
    ec2.call(
        "autoscaling",
        "us-east-1",
        "terminate_instance_in_auto_scaling_group",
        &serde_json::json!({"InstanceId": victim, "ShouldDecrementDesiredCapacity": false})
            .to_string(),
    );
    let started = Instant::now();
    loop {
        let st = status(&p, &env);
        let drift = st["drift"].to_string();
        if drift.contains(&format!("AMI is {broken}")) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "no instance of {broken} reported: {st}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The account production runs in, and the role pipe assumes there.
const PROD_ACCOUNT: &str = "210987654321";
const PROD_ROLE: &str = "arn:aws:iam::210987654321:role/pipe-promote";

/// An SNS topic (in the bake account, us-east-1) with an SQS queue subscribed to it: the topic
/// ARN and the queue URL.
fn topic_with_queue(ec2: &local_ec2::LocalEc2, name: &str) -> (String, String) {
    let call = |service: &str, call: &str, args: Value| {
        ec2.call(service, "us-east-1", call, &args.to_string())
    };
    let topic = call("sns", "create_topic", serde_json::json!({"Name": name}))["TopicArn"]
        .as_str()
        .unwrap()
        .to_string();
    let queue = call(
        "sqs",
        "create_queue",
        serde_json::json!({"QueueName": name}),
    )["QueueUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let arn = call(
        "sqs",
        "get_queue_attributes",
        serde_json::json!({"QueueUrl": queue, "AttributeNames": ["QueueArn"]}),
    )["Attributes"]["QueueArn"]
        .as_str()
        .unwrap()
        .to_string();
    call(
        "sns",
        "subscribe",
        serde_json::json!({"TopicArn": topic, "Protocol": "sqs", "Endpoint": arn}),
    );
    (topic, queue)
}

/// The SNS notifications the queue received since the last look: (subject, message).
fn notifications(ec2: &local_ec2::LocalEc2, queue: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    loop {
        let got = ec2.call(
            "sqs",
            "us-east-1",
            "receive_message",
            &serde_json::json!({"QueueUrl": queue, "MaxNumberOfMessages": 10}).to_string(),
        );
        let Some(messages) = got["Messages"].as_array().filter(|m| !m.is_empty()) else {
            return out;
        };
        for m in messages {
            let body: Value = serde_json::from_str(m["Body"].as_str().unwrap()).unwrap();
            let message = serde_json::from_str(body["Message"].as_str().unwrap()).unwrap();
            out.push((body["Subject"].as_str().unwrap().to_string(), message));
            ec2.call(
                "sqs",
                "us-east-1",
                "delete_message",
                &serde_json::json!({"QueueUrl": queue, "ReceiptHandle": m["ReceiptHandle"]})
                    .to_string(),
            );
        }
    }
}

/// Who may use an AMI and its snapshots in `region` (the bake account's view): the launch
/// permissions' accounts, and each snapshot with its create-volume permissions' accounts.
fn shared_with(
    ec2: &local_ec2::LocalEc2,
    region: &str,
    ami: &str,
) -> (Vec<String>, Vec<(String, Vec<String>)>) {
    let ids = |v: &Value, key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["UserId"].as_str().map(str::to_string))
            .collect()
    };
    let image = ec2.call(
        "ec2",
        region,
        "describe_image_attribute",
        &serde_json::json!({"ImageId": ami, "Attribute": "launchPermission"}).to_string(),
    );
    let described = ec2.call(
        "ec2",
        region,
        "describe_images",
        &serde_json::json!({"ImageIds": [ami]}).to_string(),
    );
    let snapshots = described["Images"][0]["BlockDeviceMappings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["Ebs"]["SnapshotId"].as_str())
        .map(|s| {
            let perms = ec2.call(
                "ec2",
                region,
                "describe_snapshot_attribute",
                &serde_json::json!({"SnapshotId": s, "Attribute": "createVolumePermission"})
                    .to_string(),
            );
            (s.to_string(), ids(&perms, "CreateVolumePermissions"))
        })
        .collect();
    (ids(&image, "LaunchPermissions"), snapshots)
}

/// Production in another account and region: the release's AMI is copied to that region
/// (encrypted) by the account that bakes, shared with production's account (the copy and its
/// snapshots, recorded in the ledger) before a launch template version names it, and the
/// group there is refreshed through the role pipe assumes. The bake and the promotion are
/// published to an SNS topic, read back from an SQS queue subscribed to it.
#[test]
fn a_promotion_into_another_account_and_region_shares_the_encrypted_copy_and_notifies() {
    let ec2 = local_ec2::hold();
    ec2.ctl(
        "POST",
        "/_local_ec2/timing",
        r#"{"scale": 0.1, "refresh_timeout": 60}"#,
    );
    common::ensure_box();
    let (topic, queue) = topic_with_queue(&ec2, "ec2xaccount");
    let text = pipelinefile().replacen(
        "region = \"us-east-1\"\nauto_scaling_group",
        &format!(
            "region = \"us-west-2\"\nkms_key_id = \"alias/prod-amis\"\naccount_id = \"{PROD_ACCOUNT}\"\nrole_arn = \"{PROD_ROLE}\"\nauto_scaling_group"
        ),
        1,
    ) + &format!("\n[notify]\nsns_topic_arn = \"{topic}\"\n");
    assert!(text.contains("us-west-2"));
    let p = Project::new("ec2xaccount", &text, &[("www/health", "ok\n")]);
    let env = Env::of(&ec2);
    let one = bake(&p, &env, "one", true);

    // The bake was published: its AMI, verified.
    let notes = notifications(&ec2, &queue);
    assert_eq!(notes.len(), 1, "{notes:?}");
    let (subject, baked) = &notes[0];
    assert!(subject.contains("baked in staging (verified)"), "{subject}");
    assert_eq!(baked["event"], "bake");
    assert_eq!(baked["env"], "staging");
    assert_eq!(baked["amis"]["us-east-1"], one.as_str(), "{baked}");
    assert_eq!(baked["outcome"], "verified");

    // Production in the other account and us-west-2 runs a plain copy of release one's AMI,
    // made and shared by hand.
    let seed = ec2.call(
        "ec2",
        "us-west-2",
        "copy_image",
        &serde_json::json!({"SourceImageId": one, "SourceRegion": "us-east-1", "Name": "seed"})
            .to_string(),
    )["ImageId"]
        .as_str()
        .unwrap()
        .to_string();
    ec2.call(
        "ec2",
        "us-west-2",
        "modify_image_attribute",
        &serde_json::json!({"ImageId": seed, "LaunchPermission": {"Add": [{"UserId": PROD_ACCOUNT}]}})
            .to_string(),
    );
    let made = stack_in(
        &ec2,
        "us-west-2",
        &[
            "--name",
            &p.name,
            "--ami",
            &seed,
            "--capacity",
            "2",
            "--path",
            "/health",
            "--role-arn",
            PROD_ROLE,
        ],
    );
    let url = made["url"].as_str().unwrap().to_string();

    let plan = p.pipe_env(&["promote", "production", "--plan"], &env.with(&[]));
    plan.ok();
    for step in [
        format!("copy AMI {one} from us-east-1 to us-west-2, encrypted with alias/prod-amis"),
        format!(
            "grant account {PROD_ACCOUNT} launch permission on the copy and create-volume permission on its snapshots"
        ),
    ] {
        assert!(plan.stdout.contains(&step), "{step}\n{}", plan.all());
    }
    ec2.clear_requests();
    let hammer = Hammer::start(&url);
    let r = p.pipe_env(&["promote", "production", "--no-progress"], &env.with(&[]));
    let seen = hammer.finish();
    r.ok();
    assert_eq!(failures(&seen), Vec::<&(u16, String)>::new(), "{}", r.all());
    let copies = ec2.requests("CopyImage");
    assert_eq!(copies.len(), 1, "{}", r.all());
    assert_eq!(copies[0]["SourceImageId"], one.as_str());
    assert_eq!(copies[0]["SourceRegion"], "us-east-1");
    assert_eq!(copies[0]["Encrypted"], "true");
    assert_eq!(copies[0]["KmsKeyId"], "alias/prod-amis");
    // The copy is encrypted: production's account needs the key too, which pipe only says.
    assert!(
        r.stderr.contains(&format!(
            "is encrypted: instances in account {PROD_ACCOUNT} start from it only if that account may use its KMS key"
        )),
        "{}",
        r.all()
    );
    // The role was assumed for production's calls.
    let assumed = ec2.requests("AssumeRole");
    assert!(!assumed.is_empty(), "{}", r.all());
    assert!(
        assumed.iter().all(|a| a["RoleArn"] == PROD_ROLE),
        "{assumed:?}"
    );
    assert_eq!(
        assumed[0]["RoleSessionName"],
        format!("pipe-{}-production", p.name).as_str()
    );

    // The group (in production's account) runs pipe's copy, with no drift.
    let st = status(&p, &env);
    assert_eq!(st["region"], "us-west-2", "{st}");
    assert_eq!(st["drift"], serde_json::json!([]), "{st}");
    let copy = st["expected_image"].as_str().unwrap().to_string();
    assert_ne!(copy, one);
    assert_ne!(copy, seed);
    assert_eq!(row(&st, "instances").matches(&copy).count(), 2, "{st}");
    assert!(row(&st, "ssm").ends_with(&copy), "{st}");
    assert_eq!(get(url.trim_start_matches("http://")).1, "release one");

    // The copy and each of its snapshots are shared with production's account, before the
    // launch template version named it, and the ledger says so.
    let (launch, snapshots) = shared_with(&ec2, "us-west-2", &copy);
    assert_eq!(launch, [PROD_ACCOUNT], "{}", r.all());
    assert!(!snapshots.is_empty(), "the copy has snapshots");
    for (snap, accounts) in &snapshots {
        assert_eq!(accounts, &[PROD_ACCOUNT], "{snap}: {}", r.all());
    }
    let actions = ec2.actions();
    let at = |a: &str| {
        actions
            .iter()
            .position(|x| x == a)
            .unwrap_or_else(|| panic!("no {a}: {actions:?}"))
    };
    assert!(
        at("ModifySnapshotAttribute") < at("CreateLaunchTemplateVersion"),
        "{actions:?}"
    );
    assert!(
        at("ModifyImageAttribute") < at("CreateLaunchTemplateVersion"),
        "{actions:?}"
    );
    let shares: Vec<Value> = p
        .ledger_lines()
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "share")
        .collect();
    assert_eq!(shares.len(), 1, "{shares:?}");
    assert_eq!(shares[0]["account"], PROD_ACCOUNT);
    assert_eq!(shares[0]["env"], "production");
    assert_eq!(shares[0]["region"], "us-west-2");
    assert_eq!(shares[0]["image"], copy.as_str());
    let recorded: Vec<&str> = shares[0]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let listed: Vec<&str> = snapshots.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(recorded, listed);

    // The promotion was published: the copy that serves, in which account and region.
    let notes = notifications(&ec2, &queue);
    assert_eq!(notes.len(), 1, "{notes:?}");
    let (subject, promoted) = &notes[0];
    assert!(subject.contains("promoted to production (ok)"), "{subject}");
    assert_eq!(promoted["event"], "promote");
    assert_eq!(promoted["serving_ami"], copy.as_str(), "{promoted}");
    assert_eq!(promoted["region"], "us-west-2");
    assert_eq!(promoted["account_id"], PROD_ACCOUNT);
    assert_eq!(promoted["amis"]["us-east-1"], one.as_str());
    assert_eq!(promoted["outcome"], "ok");

    // A publish that fails does not fail the bake it reports: a warning.
    ec2.fault(r#"{"fail": {"action": "Publish", "code": "InternalError", "count": 3}}"#);
    let r = p.pipe_env(
        &[
            "bake",
            "--env",
            "staging",
            "--no-progress",
            "--var",
            "greeting=two",
        ],
        &env.with(&[]),
    );
    r.ok();
    assert!(
        r.stderr.contains(&format!(
            "publishing the bake notice to SNS topic {topic} failed"
        )),
        "{}",
        r.all()
    );
    assert!(notifications(&ec2, &queue).is_empty());

    // A follow-up that fails once the group runs the new release (the SSM read-back, throttled
    // past the SDK's retries): exit 1 naming it, but the ledger says what serves.
    ec2.fault(
        r#"{"fail": {"action": "GetParameter", "code": "ThrottlingException", "status": 400, "count": 3}}"#,
    );
    let r = p.pipe_env(&["promote", "production", "--no-progress"], &env.with(&[]));
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("did not finish"), "{}", r.all());
    assert!(r.stderr.contains("SSM parameter"), "{}", r.all());
    let last: Value = serde_json::from_str(p.ledger_lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "promote");
    assert_eq!(last["ok"], true, "{last}");
    assert!(
        last["detail"].as_str().unwrap().contains("not finished"),
        "{last}"
    );
    assert_eq!(get(url.trim_start_matches("http://")).1, "release two");
}

/// The id of the release whose page says "two".
fn two_id(p: &Project) -> String {
    p.ledger_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "bake")
        .nth(1)
        .map(|e| e["release"]["id"].as_str().unwrap().to_string())
        .unwrap()
}

/// The production environment as blue/green: a new group per promotion, the old one kept.
fn blue_green_pipelinefile() -> String {
    let text = pipelinefile().replacen(
        "refresh = { min_healthy_percentage = 100, max_healthy_percentage = 200, instance_warmup = 10 }",
        "strategy = \"blue-green\"\nkeep_previous = 1\nwait_timeout = 45",
        1,
    );
    assert!(text.contains("blue-green"));
    text
}

/// The groups of the family named `base` (it and `base-*`): name -> (desired, instances,
/// `pipe:state`).
fn groups(
    ec2: &local_ec2::LocalEc2,
    base: &str,
) -> std::collections::BTreeMap<String, (i64, usize, String)> {
    let all = ec2.call(
        "autoscaling",
        "us-east-1",
        "describe_auto_scaling_groups",
        "{}",
    );
    all["AutoScalingGroups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| {
            let n = g["AutoScalingGroupName"].as_str().unwrap();
            n == base || n.starts_with(&format!("{base}-"))
        })
        .map(|g| {
            let state = g["Tags"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["Key"] == "pipe:state")
                .map_or("-".to_string(), |t| {
                    t["Value"].as_str().unwrap().to_string()
                });
            (
                g["AutoScalingGroupName"].as_str().unwrap().to_string(),
                (
                    g["DesiredCapacity"].as_i64().unwrap(),
                    g["Instances"].as_array().unwrap().len(),
                    state,
                ),
            )
        })
        .collect()
}

/// Instances not terminated that a group launched (by its `aws:autoscaling:groupName` tag).
fn live_instances_of(ec2: &local_ec2::LocalEc2, group: &str) -> usize {
    let out = ec2.ec2(
        "describe_instances",
        &serde_json::json!({"Filters": [
            {"Name": "tag:aws:autoscaling:groupName", "Values": [group]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped", "shutting-down"]},
        ]})
        .to_string(),
    );
    out["Reservations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Instances"].as_array().unwrap().len())
        .sum()
}

fn template_versions(ec2: &local_ec2::LocalEc2, name: &str) -> usize {
    ec2.ec2(
        "describe_launch_template_versions",
        &serde_json::json!({"LaunchTemplateName": name}).to_string(),
    )["LaunchTemplateVersions"]
        .as_array()
        .unwrap()
        .len()
}

/// The alias of the ledger's bake whose page says `greeting`.
fn alias_of(p: &Project, greeting: &str) -> String {
    let n = ["one", "two", "three", "four"]
        .iter()
        .position(|g| *g == greeting)
        .unwrap();
    nth_alias(p, n)
}

/// The alias of the ledger's `n`th bake (from 0).
fn nth_alias(p: &Project, n: usize) -> String {
    p.ledger_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "bake")
        .nth(n)
        .map(|e| e["release"]["alias"].as_str().unwrap().to_string())
        .unwrap()
}

/// The last `n` answers all show `page`: the responses moved there.
fn ends_on(seen: &[(u16, String)], page: &str, n: usize) -> bool {
    seen.len() >= n && seen[seen.len() - n..].iter().all(|(_, b)| b == page)
}

#[test]
fn blue_green_promotion_rollback_a_release_that_never_serves_and_ctrl_c_at_each_step() {
    let ec2 = local_ec2::hold();
    let t0 = Instant::now();
    let at = |what: &str| eprintln!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
    ec2.ctl("POST", "/_local_ec2/timing", r#"{"scale": 0.1}"#);
    common::ensure_box();
    let p = Project::new(
        "ec2bg",
        &blue_green_pipelinefile(),
        &[("www/health", "ok\n")],
    );
    let env = Env::of(&ec2);
    let base = p.name.clone();
    let one = bake(&p, &env, "one", true);
    let made = stack(
        &ec2,
        &[
            "--name",
            &base,
            "--ami",
            &one,
            "--capacity",
            "2",
            "--path",
            "/health",
        ],
    );
    let url = made["url"].as_str().unwrap().to_string();

    at("stack made");
    // --plan names the groups and changes nothing.
    let recorded = ec2.actions().len();
    let plan = p.pipe_env(&["promote", "production", "--plan"], &env.with(&[]));
    plan.ok();
    let g_one = format!("{base}-{}", alias_of(&p, "one"));
    assert!(
        plan.stdout.contains(&format!("create group {g_one}")),
        "{}",
        plan.all()
    );
    assert!(
        plan.stdout.contains(&format!("detach group {base}")),
        "{}",
        plan.all()
    );
    let mutating: Vec<String> = ec2
        .actions()
        .into_iter()
        .skip(recorded)
        .filter(|a| !a.starts_with("Describe") && !a.starts_with("Get"))
        .collect();
    assert_eq!(mutating, Vec::<String>::new(), "--plan only reads");

    at("plan checked");
    // The first promotion moves release one from Terraform's group into a group of its own;
    // Terraform's is kept at zero (pipe never deletes a group it did not make).
    let hammer = Hammer::start(&url);
    let r = p.pipe_env(&["promote", "production", "--no-progress"], &env.with(&[]));
    let seen = hammer.finish();
    r.ok();
    assert_eq!(failures(&seen), Vec::<&(u16, String)>::new(), "{}", r.all());
    let g = groups(&ec2, &base);
    assert_eq!(g[&base].0, 0, "{g:?}");
    assert_eq!(g[&g_one], (2, 2, "serving".into()), "{g:?}");

    at("first promotion");
    // Release two: a new group serves, with not one failed request; one's group is kept.
    let two = bake(&p, &env, "two", true);
    let g_two = format!("{base}-{}", alias_of(&p, "two"));
    let hammer = Hammer::start(&url);
    let r = p.pipe_env(&["promote", "production", "--no-progress"], &env.with(&[]));
    std::thread::sleep(Duration::from_secs(1));
    let seen = hammer.finish();
    r.ok();
    assert!(seen.len() > 50, "the client kept sending: {}", seen.len());
    assert_eq!(failures(&seen), Vec::<&(u16, String)>::new(), "{}", r.all());
    assert_eq!(pages(&seen), ["release one", "release two"], "{}", r.all());
    assert!(ends_on(&seen, "release two", 20), "{}", r.all());
    let g = groups(&ec2, &base);
    assert_eq!(g[&g_two], (2, 2, "serving".into()), "{g:?}");
    assert_eq!(g[&g_one], (0, 0, "previous".into()), "{g:?}");
    assert_eq!(live_instances_of(&ec2, &g_one), 0);
    let st = status(&p, &env);
    assert_eq!(st["drift"], serde_json::json!([]), "{st}");
    assert_eq!(row(&st, "instances").matches(&two).count(), 2, "{st}");
    assert!(row(&st, "group").starts_with(&g_two), "{st}");

    at("promoted two");
    // Rollback scales one's kept group back up and switches to it: no failed request.
    let hammer = Hammer::start(&url);
    let r = p.pipe_env(&["rollback", "production", "--no-progress"], &env.with(&[]));
    std::thread::sleep(Duration::from_secs(1));
    let seen = hammer.finish();
    r.ok();
    assert!(
        r.stdout.contains(&format!("group {g_one} serves")),
        "{}",
        r.all()
    );
    assert_eq!(failures(&seen), Vec::<&(u16, String)>::new(), "{}", r.all());
    assert_eq!(pages(&seen), ["release two", "release one"], "{}", r.all());
    assert!(ends_on(&seen, "release one", 20), "{}", r.all());
    let g = groups(&ec2, &base);
    assert_eq!(g[&g_one], (2, 2, "serving".into()), "{g:?}");
    assert_eq!(g[&g_two], (0, 0, "previous".into()), "{g:?}");
    let st = status(&p, &env);
    assert_eq!(st["drift"], serde_json::json!([]), "{st}");

    at("rolled back");
    // A release that never gets healthy: its group is removed, one's never stopped serving,
    // the template version is deleted, the promotion is recorded as failed.
    let versions = template_versions(&ec2, &base);
    bake(&p, &env, "three", false);
    let g_three = format!("{base}-{}", alias_of(&p, "three"));
    let hammer = Hammer::start(&url);
    let r = p.pipe_env(&["promote", "production", "--no-progress"], &env.with(&[]));
    let seen = hammer.finish();
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("never served"), "{}", r.all());
    assert!(!r.stderr.contains("cleanup also failed"), "{}", r.all());
    assert_eq!(failures(&seen), Vec::<&(u16, String)>::new(), "{}", r.all());
    assert_eq!(pages(&seen), ["release one"], "{}", r.all());
    let g = groups(&ec2, &base);
    assert!(!g.contains_key(&g_three), "{g:?}");
    assert_eq!(live_instances_of(&ec2, &g_three), 0);
    assert_eq!(template_versions(&ec2, &base), versions);
    let last: Value = serde_json::from_str(p.ledger_lines().last().unwrap()).unwrap();
    assert_eq!(
        (last["event"].as_str(), last["ok"].as_bool()),
        (Some("promote"), Some(false))
    );

    at("never-healthy done");
    // At each step of a promotion of a fourth release, the promotion is stopped: by `pipe
    // rollback` from another terminal (then Ctrl-C), by Ctrl-C, by SIGKILL and `pipe clean`,
    // by SIGTERM. Release one serves afterwards from its group alone, nothing of four's group,
    // instances or template version is left, the lock is free, and not one request failed.
    bake(&p, &env, "four", true);
    let g_four = format!("{base}-{}", alias_of(&p, "four"));
    enum Stop {
        RollbackThenInt,
        Signal(i32),
        KillThenClean,
    }
    let steps = [
        ("incoming group created", Stop::RollbackThenInt),
        ("incoming group healthy", Stop::Signal(libc::SIGINT)),
        ("old group detached", Stop::KillThenClean),
        ("old group scaled to zero", Stop::Signal(libc::SIGTERM)),
    ];
    for (step, stop) in steps {
        let hammer = Hammer::start(&url);
        let mut child = spawn_pipe(
            p.path(),
            &["promote", "production", "--no-progress"],
            &env.with(&[("PIPE_TEST_PAUSE_AT", step)]),
        );
        child.wait_for(&format!("test hook: paused at `{step}`"), 300);
        let expected = match stop {
            Stop::Signal(sig) => {
                child.signal(sig);
                130
            }
            Stop::RollbackThenInt => {
                let r = p.pipe_env(&["rollback", "production"], &env.with(&[]));
                r.ok();
                assert!(
                    r.stdout.contains(&format!(
                        "rolled back the promotion bringing in group {g_four}"
                    )),
                    "{}",
                    r.all()
                );
                child.signal(libc::SIGINT);
                130
            }
            Stop::KillThenClean => {
                child.signal(libc::SIGKILL);
                128 + libc::SIGKILL
            }
        };
        let (code, stderr) = child.finish();
        if code == 128 + libc::SIGKILL {
            let r = p.pipe_env(&["clean"], &env.with(&[]));
            r.ok();
            assert!(r.stdout.contains(&g_four), "{}", r.all());
        }
        std::thread::sleep(Duration::from_secs(1));
        let seen = hammer.finish();
        assert_eq!(code, expected, "{step}: {stderr}");
        assert!(!stderr.contains("cleanup also failed"), "{step}: {stderr}");
        assert_eq!(
            failures(&seen),
            Vec::<&(u16, String)>::new(),
            "{step}: {stderr}"
        );
        assert!(
            ends_on(&seen, "release one", 10),
            "{step}: {:?}",
            pages(&seen)
        );
        let g = groups(&ec2, &base);
        assert!(!g.contains_key(&g_four), "{step}: {g:?}");
        assert_eq!(live_instances_of(&ec2, &g_four), 0, "{step}");
        assert_eq!(g[&g_one], (2, 2, "serving".into()), "{step}: {g:?}");
        let serving: Vec<&String> = g.iter().filter(|(_, v)| v.0 > 0).map(|(k, _)| k).collect();
        assert_eq!(serving, [&g_one], "{step}: {g:?}");
        assert_eq!(template_versions(&ec2, &base), versions, "{step}");
        let st = status(&p, &env);
        assert_eq!(st["drift"], serde_json::json!([]), "{step}: {st}");
        at(step);
    }

    at("ctrl-c steps done");
    // Four, to the end: keep_previous = 1 keeps one's group (it served last) and deletes
    // two's; Terraform's group stays.
    let r = p.pipe_env(&["promote", "production", "--no-progress"], &env.with(&[]));
    r.ok();
    let g = groups(&ec2, &base);
    assert_eq!(g[&g_four], (2, 2, "serving".into()), "{g:?}");
    assert_eq!(g[&g_one].0, 0, "{g:?}");
    assert!(!g.contains_key(&g_two), "{g:?}");
    assert!(g.contains_key(&base), "{g:?}");
    assert_eq!(get(url.trim_start_matches("http://")).1, "release four");

    // Retention: two's group went with its template version; prune may remove three's AMI
    // (it never served), and keeps what serves, what a rollback would bring back, and two's
    // (protected from deregistration when it was promoted).
    let images: Vec<String> = ec2.ec2(
        "describe_launch_template_versions",
        &serde_json::json!({"LaunchTemplateName": base}).to_string(),
    )["LaunchTemplateVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v["LaunchTemplateData"]["ImageId"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert!(!images.contains(&two), "{images:?}");
    let plan = p.pipe_env(
        &["prune", "--env", "staging", "--keep", "0", "--plan"],
        &env.with(&[]),
    );
    plan.ok();
    for want in [
        format!("would remove {}", alias_of(&p, "three")),
        format!("keep {}: current in `production`", alias_of(&p, "four")),
        format!("keep {}: previous in `production`", alias_of(&p, "one")),
        format!(
            "keep {}: its AMI {two} in us-east-1 is protected",
            alias_of(&p, "two")
        ),
    ] {
        assert!(
            plan.stdout.contains(&want),
            "missing {want:?} in:\n{}",
            plan.all()
        );
    }
}

/// The SERVER_NAME the example's page shows: the release's server name, baked into nginx's
/// configuration (nginx passes it to node in X-Server-Name).
fn server_name(body: &str) -> Option<&str> {
    let (_, rest) = body.split_once("<p>SERVER_NAME=")?;
    rest.split_once("</p>").map(|(name, _)| name)
}

/// The example's answers that were not a 200 with its page.
fn example_failures(seen: &[(u16, String)]) -> Vec<&(u16, String)> {
    seen.iter()
        .filter(|(s, b)| *s != 200 || server_name(b).is_none())
        .collect()
}

/// The example's releases (their server names) in the order the answers first showed them.
fn example_releases(seen: &[(u16, String)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in seen.iter().filter_map(|(_, b)| server_name(b)) {
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    out
}

/// The repository's example as shipped (nginx in front of node, the npm dependencies
/// precached in the base; its production refreshes the group): baked for staging, promoted
/// onto the group of two instances behind the load balancer, a second release promoted and
/// rolled back, a client sending requests without pause through all of it, and not one failed.
#[test]
fn the_example_promotes_by_instance_refresh_and_rolls_back_without_a_failed_request() {
    promote_the_example(false);
}

/// The same with the example's production switched to blue/green: a group per release.
#[test]
fn the_example_promotes_blue_green_and_rolls_back_without_a_failed_request() {
    promote_the_example(true);
}

fn promote_the_example(blue_green: bool) {
    let ec2 = local_ec2::hold();
    let t0 = Instant::now();
    let at = |what: &str| eprintln!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
    ec2.ctl(
        "POST",
        "/_local_ec2/timing",
        r#"{"scale": 0.1, "refresh_timeout": 120}"#,
    );
    common::ensure_box();
    let p = common::example("ec2ex", common::free_port());
    if blue_green {
        let text = std::fs::read_to_string(p.path().join("Pipelinefile.toml")).unwrap();
        let changed = text.replacen(
            "refresh = { min_healthy_percentage = 100, max_healthy_percentage = 200 }",
            "strategy = \"blue-green\"\nkeep_previous = 1\nwait_timeout = 180",
            1,
        );
        assert!(
            changed.contains("blue-green"),
            "the example's production changed"
        );
        p.write("Pipelinefile.toml", &changed);
    }
    let env = Env::of(&ec2);
    // Each release shows its own server name (an app-layer var: the base is baked once).
    let bake = |name: &str| bake_with(&p, &env, &format!("server_name={name}"));
    let one = bake("one");
    at("release one baked");
    // The group Terraform would own, named as the example's production names it.
    let family = "ponyfoo-production";
    let made = stack(
        &ec2,
        &[
            "--name",
            family,
            "--ami",
            &one,
            "--capacity",
            "2",
            "--path",
            "/health",
        ],
    );
    let url = made["url"].as_str().unwrap().to_string();

    let promote = |args: &[&str], from: &str, to: &str| {
        let hammer = Hammer::start(&url);
        let r = p.pipe_env(args, &env.with(&[]));
        std::thread::sleep(Duration::from_secs(1));
        let seen = hammer.finish();
        r.ok();
        assert!(seen.len() > 50, "the client kept sending: {}", seen.len());
        assert_eq!(
            example_failures(&seen),
            Vec::<&(u16, String)>::new(),
            "{}",
            r.all()
        );
        let releases = example_releases(&seen);
        let want: Vec<&str> = if from == to { vec![to] } else { vec![from, to] };
        assert_eq!(releases, want, "{}", r.all());
        let last: Vec<Option<&str>> = seen[seen.len() - 20..]
            .iter()
            .map(|(_, b)| server_name(b))
            .collect();
        assert_eq!(last, vec![Some(to); 20], "the answers moved to {to}");
    };

    // Release one: blue/green moves it from Terraform's group into a group of its own; a
    // refresh adopts the group as it is.
    promote(&["promote", "production", "--no-progress"], "one", "one");
    let g_one = format!("{family}-{}", nth_alias(&p, 0));
    let g = groups(&ec2, family);
    if blue_green {
        assert_eq!(g[family].0, 0, "{g:?}");
        assert_eq!(g[&g_one], (2, 2, "serving".into()), "{g:?}");
    } else {
        assert_eq!(g.keys().collect::<Vec<_>>(), [family], "{g:?}");
    }
    at("release one promoted");

    let two = bake("two");
    at("release two baked");
    promote(&["promote", "production", "--no-progress"], "one", "two");
    let g_two = format!("{family}-{}", nth_alias(&p, 1));
    // Which group serves which release, and that the AWS side says the same as the ledger:
    // every instance on the release's AMI, the template's default version and the SSM
    // parameter naming it, no drift.
    let check = |release: &str, serving: &str, previous: &str| {
        let g = groups(&ec2, family);
        if blue_green {
            assert_eq!(g[serving], (2, 2, "serving".into()), "{g:?}");
            assert_eq!(g[previous], (0, 0, "previous".into()), "{g:?}");
        } else {
            assert_eq!(g.keys().collect::<Vec<_>>(), [family], "{g:?}");
            assert_eq!(g[family].0, 2, "{g:?}");
        }
        let st = status(&p, &env);
        assert_eq!(st["drift"], serde_json::json!([]), "{st}");
        assert_eq!(st["expected_image"], release, "{st}");
        assert_eq!(row(&st, "instances").matches(release).count(), 2, "{st}");
        assert!(row(&st, "ssm").ends_with(release), "{st}");
    };
    check(&two, &g_two, &g_one);
    at("release two promoted");

    promote(&["rollback", "production", "--no-progress"], "two", "one");
    check(&one, &g_one, &g_two);
    at("rolled back to release one");
}
