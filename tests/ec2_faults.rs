//! An ec2 bake against the local EC2 when things go wrong: calls that keep failing, SSH that
//! never answers or is cut mid-provisioning, a failing verify, waits that give up; throttling
//! and `pending` states that a bake must get through; SIGINT and SIGTERM at every step; and a
//! sensitive value that must never reach AWS, the output or `.pipe/`.
//!
//! Every failure ends with an error naming the step and the resource, and with nothing of the
//! run left: no instance, key pair, security group, key folder or journal, and no AMI that is
//! not a finished layer.

mod common;
#[path = "support/ec2_project.rs"]
mod ec2_project;
#[path = "support/local_ec2.rs"]
mod local_ec2;

use std::time::{Duration, Instant};

use common::Project;
use ec2_project::{SLOW_APP, assert_nothing_left, bake, project, project_with, spawn_bake};
use serde_json::Value;

/// Adds `lines` to `[env.staging]`.
fn staging(p: &Project, lines: &str) {
    let anchor = "instance_type = \"t3.micro\"\n";
    edit(p, anchor, &format!("{anchor}{lines}\n"));
}

/// The error pipe ended with: from its last line that starts with `error: `.
fn final_error(stderr: &str) -> &str {
    let at = stderr
        .rfind("\nerror: ")
        .map(|i| i + 1)
        .or_else(|| stderr.starts_with("error: ").then_some(0))
        .unwrap_or_else(|| panic!("no error in:\n{stderr}"));
    &stderr[at..]
}

/// Replaces `from` with `to` in the Pipelinefile (which must contain it).
fn edit(p: &Project, from: &str, to: &str) {
    let path = p.path().join("Pipelinefile.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from:?} not in the Pipelinefile");
    std::fs::write(path, text.replace(from, to)).unwrap();
}

fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The recorded requests whose text contains `text` (also url- or base64-decoded).
fn requests_containing(ec2: &local_ec2::LocalEc2, text: &str) -> Vec<Value> {
    let body = ec2.ctl("GET", &format!("/_local_ec2/requests?contains={text}"), "");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["requests"].as_array().unwrap().clone()
}

/// The instance of `pipeline` tagged for `layer` (`base`, `app`, `verify`), once it exists: its
/// id and 127.0.0.x address.
fn launched(ec2: &local_ec2::LocalEc2, pipeline: &str, layer: &str) -> (String, String) {
    let started = Instant::now();
    loop {
        let v = ec2.ec2(
            "describe_instances",
            &format!(
                r#"{{"Filters": [{{"Name": "tag:pipe:pipeline", "Values": ["{pipeline}"]}}, {{"Name": "tag:pipe:layer", "Values": ["{layer}"]}}]}}"#
            ),
        );
        let ids: Vec<String> = v["Reservations"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["Instances"].as_array().unwrap().iter())
            .map(|i| i["InstanceId"].as_str().unwrap().to_string())
            .collect();
        if let Some(id) = ids.first() {
            let machines: Value =
                serde_json::from_str(&ec2.ctl("GET", "/_local_ec2/instances", "")).unwrap();
            let address = machines["instances"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["instance_id"] == id.as_str())
                .and_then(|m| m["address"].as_str())
                .map(str::to_string);
            if let Some(address) = address {
                return (id.clone(), address);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "no {layer} instance"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until sshd answers on `address`:22 with its banner.
fn wait_for_sshd(address: &str) {
    use std::io::Read;
    let started = Instant::now();
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect((address, 22)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut banner = [0u8; 4];
            if s.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "sshd never answered on {address}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_create_image_that_keeps_failing_names_the_ami_and_no_half_made_ami_is_left() {
    let ec2 = local_ec2::hold();
    let p = project("ec2createimage");
    // Three failures: the SDK's three attempts all fail.
    ec2.fault(r#"{"fail": {"action": "CreateImage", "code": "InternalError", "count": 3}}"#);
    let r = bake(&p, &ec2);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all().contains("!!  build base layer"),
        "the step: {}",
        r.all()
    );
    let error = final_error(&r.stderr);
    assert!(
        error.contains(&format!("AMI pipe-{}-base-", p.name)),
        "the AMI: {error}"
    );
    assert!(error.contains("from instance i-"), "{error}");
    assert!(
        error.contains("CreateImage failed: InternalError"),
        "{error}"
    );
    assert!(error.contains("AWS_MAX_ATTEMPTS"), "a hint: {error}");
    assert_eq!(ec2.requests("CreateImage").len(), 3);
    assert_eq!(ec2.images(&p.name).len(), 0);
    assert_nothing_left(&p, &ec2);

    // An AMI that was made but whose layer failed after it (its snapshots could not be
    // tagged) is half-made: it is deregistered, its snapshots deleted.
    ec2.clear_requests();
    ec2.fault(r#"{"fail": {"action": "CreateTags", "code": "InternalError", "count": 3}}"#);
    let r = bake(&p, &ec2);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("CreateTags failed"), "{}", r.all());
    assert!(r.stderr.contains("(ami-"), "the AMI's id: {}", r.stderr);
    let made = ec2.requests("CreateImage");
    assert_eq!(made.len(), 1);
    assert_eq!(ec2.requests("DeregisterImage").len(), 1, "{}", r.all());
    assert_eq!(ec2.images(&p.name).len(), 0);
    let snapshots = ec2.ec2("describe_snapshots", r#"{"OwnerIds": ["self"]}"#);
    let left: Vec<&Value> = snapshots["Snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s.to_string().contains(&p.name))
        .collect();
    assert!(left.is_empty(), "snapshots left: {left:?}");
    assert_nothing_left(&p, &ec2);
}

#[test]
fn an_instance_that_cannot_be_terminated_stays_in_the_journal_for_pipe_clean() {
    let ec2 = local_ec2::hold();
    let p = project("ec2noterminate");
    // The base build instance is disposed of once its AMI is made; all three attempts fail.
    ec2.fault(r#"{"fail": {"action": "TerminateInstances", "code": "InternalError", "count": 3}}"#);
    let r = bake(&p, &ec2);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains("!!  build base layer"), "{}", r.all());
    let error = final_error(&r.stderr);
    assert!(
        error.contains(&format!("ec2 instance pipe-{}-build-base-", p.name)),
        "the instance: {error}"
    );
    assert!(
        error.contains("TerminateInstances failed: InternalError"),
        "{error}"
    );
    assert!(error.contains("pipe clean"), "what to do: {error}");
    assert_eq!(ec2.live_instances(&p.name).len(), 1, "{}", r.all());
    assert_eq!(p.journals().len(), 1, "the instance is still journaled");
    let images = ec2.images(&p.name);
    assert_eq!(images.len(), 1, "the base AMI was finished: {images:?}");

    let clean = p.pipe_env(&["clean"], &as_refs(&ec2.env()));
    clean.ok();
    assert!(
        clean.stdout.contains("removed ec2 instance"),
        "{}",
        clean.stdout
    );
    assert_nothing_left(&p, &ec2);
    assert_eq!(ec2.images(&p.name).len(), 1, "results are never cleaned");
}

#[test]
fn ssh_that_never_answers_fails_after_ssh_timeout_naming_the_instance() {
    let ec2 = local_ec2::hold();
    let p = project("ec2nossh");
    staging(&p, "ssh_timeout = 4");
    // The instance shows `pending` for a while, so that its SSH is cut before pipe tries it.
    ec2.fault(r#"{"pending": {"instances": 6}}"#);
    let child = spawn_bake(&p, &ec2, &[]);
    let (id, address) = launched(&ec2, &p.name, "base");
    wait_for_sshd(&address);
    ec2.fault(&format!(
        r#"{{"cut_ssh": {{"instance_id": "{id}", "seconds": 300}}}}"#
    ));
    let (code, stderr) = child.finish();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("!!  build base layer"),
        "the step: {stderr}"
    );
    let error = final_error(&stderr);
    assert!(
        error.contains(&format!("no SSH to pipe-{}-build-base-", p.name)),
        "{error}"
    );
    assert!(error.contains(&format!("({id})")), "{error}");
    assert!(error.contains(&format!("{address}:22")), "{error}");
    assert!(error.contains("no connection within 4s"), "{error}");
    assert!(error.contains("ssh_timeout"), "the hint: {error}");
    assert_nothing_left(&p, &ec2);
}

#[test]
fn an_ssh_cut_mid_provisioning_fails_the_build_clearly() {
    let ec2 = local_ec2::hold();
    let p = project_with("ec2sshcut", SLOW_APP);
    let mut child = spawn_bake(&p, &ec2, &[]);
    child.wait_for("APP-PROVISIONING-NOW", 240);
    let (id, _) = launched(&ec2, &p.name, "app");
    ec2.fault(&format!(
        r#"{{"cut_ssh": {{"instance_id": "{id}", "seconds": 300}}}}"#
    ));
    let (code, stderr) = child.finish();
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("!!  build app layer"), "the step: {stderr}");
    let error = final_error(&stderr);
    assert!(error.contains("app/inline"), "the provisioner: {error}");
    assert!(error.contains("ssh admin@127.0.0."), "the machine: {error}");
    let images = ec2.images(&p.name);
    assert_eq!(images.len(), 1, "only the base layer: {images:?}");
    assert_eq!(images[0].1["pipe:layer"], "base");
    assert!(p.ledger_lines().is_empty());
    assert_nothing_left(&p, &ec2);
}

#[test]
fn a_failing_verify_on_ec2_is_a_recorded_unpromotable_release_and_exits_4() {
    let ec2 = local_ec2::hold();
    let p = project("ec2badverify");
    edit(
        &p,
        "contains = \"hello from staging\"",
        "contains = \"not on the page\"",
    );
    edit(&p, "timeout = 30", "timeout = 5");
    let r = bake(&p, &ec2);
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(r.stderr.contains("verification failed"), "{}", r.stderr);
    assert!(
        r.stderr.contains("does not contain"),
        "the excerpt: {}",
        r.stderr
    );
    let ledger: Vec<Value> = p
        .ledger_lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ledger.len(), 1);
    let release = &ledger[0]["release"];
    assert_eq!(release["verify"]["ok"], false, "{release}");
    assert_eq!(release["target"], "ec2");
    assert!(
        release["artifacts"]["ec2:us-east-1"]
            .as_str()
            .unwrap()
            .starts_with("ami-")
    );
    let releases = p.pipe_env(&["releases"], &as_refs(&ec2.env()));
    assert!(releases.stdout.contains("failed"), "{}", releases.stdout);
    // The verify instance is gone with everything else; both layers are results.
    let verify = ec2.requests("RunInstances");
    assert_eq!(verify.len(), 3, "build base, build app, verify");
    assert_eq!(ec2.images(&p.name).len(), 2);
    assert_nothing_left(&p, &ec2);
}

#[test]
fn waits_that_give_up_name_the_resource_the_state_and_the_time_waited() {
    let ec2 = local_ec2::hold();
    let p = project("ec2waits");
    staging(&p, "wait_timeout = 3");

    // An instance that stays `pending`.
    ec2.fault(r#"{"pending": {"instances": 1000}}"#);
    let r = bake(&p, &ec2);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains("!!  build base layer"), "{}", r.all());
    let error = final_error(&r.stderr);
    let id = ec2.requests("DescribeInstances")[0]["InstanceId.1"]
        .as_str()
        .map(str::to_string)
        .expect("the waiter describes the instance by id");
    assert!(
        error.contains(&format!(
            "instance {id} was not running after 3s (last seen: pending)"
        )),
        "{error}"
    );
    assert!(
        error.contains(&format!("pipe-{}-build-base-", p.name)),
        "{error}"
    );
    assert!(error.contains("wait_timeout"), "the hint: {error}");
    assert_nothing_left(&p, &ec2);

    // An AMI that stays `pending`: deregistered, not left half-made.
    ec2.ctl("DELETE", "/_local_ec2/faults", "");
    ec2.clear_requests();
    ec2.fault(r#"{"pending": {"images": 1000}}"#);
    let r = bake(&p, &ec2);
    assert_eq!(r.code, 1, "{}", r.all());
    let error = final_error(&r.stderr);
    let made = ec2.requests("CreateImage");
    assert_eq!(made.len(), 1);
    assert!(
        error.contains(&format!("AMI pipe-{}-base-", p.name)),
        "{error}"
    );
    assert!(
        error.contains("was not available after 3s (last seen: pending)"),
        "{error}"
    );
    assert!(error.contains("image ami-"), "{error}");
    assert_eq!(ec2.requests("DeregisterImage").len(), 1);
    assert_eq!(ec2.images(&p.name).len(), 0);
    assert_nothing_left(&p, &ec2);
}

/// The calls of a bake, each throttled or refused with a server error twice before it goes
/// through (the SDK's three attempts get past two).
const THROTTLED: &[(&str, &str)] = &[
    ("DescribeImages", "RequestLimitExceeded"),
    ("ImportKeyPair", "ServiceUnavailable"),
    ("DescribeKeyPairs", "RequestLimitExceeded"),
    ("CreateSecurityGroup", "RequestLimitExceeded"),
    ("AuthorizeSecurityGroupIngress", "InternalError"),
    ("RunInstances", "RequestLimitExceeded"),
    ("StopInstances", "RequestLimitExceeded"),
    ("CreateImage", "ServiceUnavailable"),
    ("CreateTags", "RequestLimitExceeded"),
    ("TerminateInstances", "RequestLimitExceeded"),
    ("DeleteKeyPair", "InternalError"),
    ("DescribeSecurityGroups", "RequestLimitExceeded"),
    ("DeleteSecurityGroup", "RequestLimitExceeded"),
];

#[test]
fn throttling_and_pending_states_across_the_bake_are_waited_through() {
    let ec2 = local_ec2::hold();
    let p = project("ec2throttle");
    let mut faults: Vec<String> = THROTTLED
        .iter()
        .map(|(action, code)| {
            format!(r#"{{"fail": {{"action": "{action}", "code": "{code}", "count": 2}}}}"#)
        })
        .collect();
    // The first waiter's describes: five failures are more than one call's retries, so the
    // waiter itself must look again.
    faults.push(
        r#"{"fail": {"action": "DescribeInstances", "code": "RequestLimitExceeded", "count": 5}}"#
            .into(),
    );
    faults.push(r#"{"pending": {"instances": 3, "images": 3}}"#.into());
    ec2.fault(&format!("[{}]", faults.join(",")));

    let r = bake(&p, &ec2);
    r.ok();
    assert!(r.stdout.contains("verified"), "{}", r.all());
    assert_eq!(ec2.images(&p.name).len(), 2);
    assert_nothing_left(&p, &ec2);

    // Every fault was met (and so every call retried), none is left over.
    let armed: Value = serde_json::from_str(&ec2.ctl("GET", "/_local_ec2/faults", "")).unwrap();
    assert_eq!(armed["fail"], serde_json::json!([]), "{armed}");
    for (action, _) in THROTTLED {
        let calls = ec2.requests(action).len();
        assert!(calls >= 3, "{action}: {calls} calls, two of them refused");
    }
    assert!(ec2.requests("DescribeInstances").len() >= 6);
    // Each instance and image was seen `pending` before it was seen running or available:
    // three looks at least for each of the three instances and two AMIs.
    assert!(ec2.requests("DescribeImages").len() >= 2 + 2 * 3);
}

/// Where an ec2 bake can be when a signal lands: each runner step, and inside them the moments
/// an instance was launched, a build instance stopped, an AMI requested (`PIPE_TEST_PAUSE_AT`
/// pauses there), with the layers that are finished by then.
fn signal_cases(name: &str) -> Vec<(String, i32, &'static [&'static str])> {
    let (int, term) = (libc::SIGINT, libc::SIGTERM);
    vec![
        ("build base layer".into(), int, &[]),
        (
            format!("instance launched pipe-{name}-build-base"),
            term,
            &[],
        ),
        (format!("instance stopped pipe-{name}-build-base"), int, &[]),
        (format!("AMI requested pipe-{name}-base"), term, &[]),
        ("build app layer".into(), int, &["base"]),
        (
            format!("instance launched pipe-{name}-build-app"),
            term,
            &["base"],
        ),
        (
            format!("instance stopped pipe-{name}-build-app"),
            int,
            &["base"],
        ),
        (format!("AMI requested pipe-{name}-app"), term, &["base"]),
        ("verify app layer".into(), int, &["app", "base"]),
        (
            format!("instance launched pipe-{name}-verify"),
            term,
            &["app", "base"],
        ),
        ("verify machine started".into(), int, &["app", "base"]),
    ]
}

#[test]
fn sigint_and_sigterm_at_every_step_of_an_ec2_bake_leave_only_finished_layers() {
    let ec2 = local_ec2::hold();
    let p = project("ec2signals");
    // One project throughout: the base is built once (by the first run that pauses in the
    // app layer's step) and reused from then on, as is the app layer later.
    for (step, sig, layers) in signal_cases(&p.name) {
        ec2.clear_requests();
        let mut child = spawn_bake(&p, &ec2, &[("PIPE_TEST_PAUSE_AT", &step)]);
        child.wait_for(&format!("test hook: paused at `{step}"), 240);
        let journals = p.journals();
        child.signal(sig);
        let (code, stderr) = child.finish();
        assert_eq!(code, 130, "{step}: {stderr}");
        assert!(stderr.contains("interrupted"), "{step}: {stderr}");
        assert_eq!(journals.len(), 1, "{step}: the run's journal while paused");

        let mut found: Vec<String> = ec2
            .images(&p.name)
            .iter()
            .map(|(_, tags)| tags["pipe:layer"].as_str().unwrap().to_string())
            .collect();
        found.sort();
        assert_eq!(found, layers, "{step}: only finished layers are results");
        let (made, deregistered) = (
            ec2.requests("CreateImage").len(),
            ec2.requests("DeregisterImage").len(),
        );
        if step.starts_with("AMI requested") {
            assert_eq!((made, deregistered), (1, 1), "{step}: the half-made AMI");
        } else if step.starts_with("instance stopped") {
            assert_eq!((made, deregistered), (0, 0), "{step}: no AMI after Ctrl-C");
        } else {
            assert_eq!(deregistered, 0, "{step}");
        }
        assert!(p.ledger_lines().is_empty(), "{step}: no release");
        assert_nothing_left(&p, &ec2);
    }
}

const CANARY: &str = "canary-ec2-3b9d71f0-never-send-me";

/// Every file under `dir`, with its text (lossy).
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    out
}

#[track_caller]
fn assert_no_canary_in_pipe_folder(p: &Project) -> usize {
    let files = files_under(&p.path().join(".pipe"));
    for (path, text) in &files {
        assert!(
            !text.contains(CANARY),
            "the secret is in {}",
            path.display()
        );
    }
    files.len()
}

#[test]
fn a_sensitive_value_reaches_only_the_commands_and_services_that_use_it() {
    use sha2::{Digest, Sha256};
    let ec2 = local_ec2::hold();
    let hash = hex::encode(Sha256::digest(CANARY.as_bytes()));
    // The app's provisioner and a service get the value in their environment and check its
    // hash; nothing else may ever see it.
    let p = project_with(
        "ec2secret",
        &r#"
  { inline = ["test \"$(printf %s \"$TOKEN\" | sha256sum | cut -c1-64)\" = HASH", "echo token is \"$TOKEN\""], env = { TOKEN = "{{ vars.token }}" } },"#
            .replace("HASH", &hash),
    );
    edit(
        &p,
        "greeting = \"hello\"\n",
        "greeting = \"hello\"\ntoken = { env = \"PIPE_TEST_TOKEN\", sensitive = true }\n",
    );
    edit(
        &p,
        "\"cat /base.txt\"]",
        &format!("\"cat /base.txt\", \"grep -qx {hash} /run/token.sha\"]"),
    );
    let path = p.path().join("Pipelinefile.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(
        r#"
[[service]]
name = "tokencheck"
command = 'printf %s "$TOKEN" | sha256sum | cut -c1-64 > /run/token.sha; exec sleep 100000'
env = { TOKEN = "{{ vars.token }}" }
"#,
    );
    std::fs::write(&path, text).unwrap();

    let env = ec2.env();
    let mut env = as_refs(&env);
    env.push(("PIPE_TEST_TOKEN", CANARY));
    let r = p.pipe_env(&["bake", "--env", "staging", "--no-progress", "-v"], &env);
    r.ok();
    assert!(
        r.stdout.contains("verified"),
        "the service had it: {}",
        r.all()
    );
    assert!(r.all().contains("token is ********"), "{}", r.all());
    assert!(!r.all().contains(CANARY), "pipe printed the secret");

    // Mid-run, the journal and the key folders: `pipe verify` (a second bake with nothing
    // changed starts no machine) paused with its verify instance up.
    let mut child = common::spawn_pipe(
        p.path(),
        &["verify", "--no-progress", "-v"],
        &[
            env.as_slice(),
            &[("PIPE_TEST_PAUSE_AT", "verify machine started")],
        ]
        .concat(),
    );
    child.wait_for("test hook: paused at", 240);
    assert_eq!(p.journals().len(), 1, "the run's journal");
    assert!(
        assert_no_canary_in_pipe_folder(&p) >= 3,
        "journal, key, known_hosts"
    );
    child.signal(libc::SIGINT);
    let (code, stderr) = child.finish();
    assert_eq!(code, 130, "{stderr}");
    assert!(!stderr.contains(CANARY), "pipe printed the secret");
    // The ledger and what is left in .pipe.
    assert!(!p.ledger_lines().is_empty());
    assert_no_canary_in_pipe_folder(&p);

    // No API request carried it, in any encoding the harness decodes (user data is base64);
    // the same search finds what requests did carry (the pipeline's name, in tags).
    assert_eq!(requests_containing(&ec2, CANARY), Vec::<Value>::new());
    assert!(!requests_containing(&ec2, &p.name).is_empty());
    // Nor what AWS keeps: tags, AMI names and descriptions, instances, key pairs, groups.
    let filter = format!(
        r#"{{"Filters": [{{"Name": "tag:pipe:pipeline", "Values": ["{}"]}}]}}"#,
        p.name
    );
    for call in [
        "describe_images",
        "describe_instances",
        "describe_key_pairs",
        "describe_security_groups",
        "describe_snapshots",
        "describe_volumes",
    ] {
        let answer = ec2.ec2(call, &filter).to_string();
        assert!(!answer.contains(CANARY), "{call}: {answer}");
        if call == "describe_images" {
            assert!(
                answer.contains(&format!("pipe {} app layer", p.name)),
                "{answer}"
            );
        }
    }
}
