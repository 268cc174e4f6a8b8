//! `pipe bake` on the ec2 target against the local EC2 (real machines: every instance is a
//! systemd container reached over SSH on its own 127.0.0.x): base and app AMIs with their tags,
//! the release verified on a fresh instance and recorded as `ec2:<region>`, reuse by digest,
//! nothing left behind, the security group and launch settings as sent, a failing call.

mod common;
#[path = "support/local_ec2.rs"]
mod local_ec2;

#[path = "support/ec2_project.rs"]
mod ec2_project;

use ec2_project::{
    SLOW_APP, assert_nothing_left, bake, machine_folders, project, project_with, spawn_bake,
};
use serde_json::Value;

#[test]
fn bake_makes_tagged_amis_verifies_records_the_region_reuses_and_leaves_nothing() {
    let ec2 = local_ec2::hold();
    let p = project("ec2bake");
    let r = bake(&p, &ec2);
    r.ok();
    assert!(r.stdout.contains("verified"), "{}", r.all());

    // Two AMIs, tagged with what finds them again.
    let images = ec2.images(&p.name);
    assert_eq!(images.len(), 2, "{images:?}");
    let mut layers: Vec<&str> = images
        .iter()
        .map(|(_, t)| t["pipe:layer"].as_str().unwrap())
        .collect();
    layers.sort();
    assert_eq!(layers, ["app", "base"]);
    for (id, tags) in &images {
        for key in [
            "pipe:digest",
            "pipe:env",
            "pipe:git-commit",
            "pipe:pipeline",
        ] {
            assert!(tags.contains_key(key), "{id} lacks {key}: {tags:?}");
        }
        assert!(tags["pipe:digest"].as_str().unwrap().starts_with("sha256:"));
        assert_eq!(tags["pipe:env"], "staging");
    }
    let app = images
        .iter()
        .find(|(_, t)| t["pipe:layer"] == "app")
        .unwrap();

    // The release: verified, its artifact the app AMI under ec2:<region>.
    let ledger: Vec<Value> = p
        .ledger_lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let release = &ledger.last().unwrap()["release"];
    assert_eq!(
        release["artifacts"]["ec2:us-east-1"],
        app.0.as_str(),
        "{release}"
    );
    assert_eq!(release["verify"]["ok"], true, "{release}");
    assert_eq!(release["target"], "ec2");

    assert_nothing_left(&p, &ec2);

    // The security groups let only TCP 22 in, from a /32; instances require IMDSv2.
    let groups = ec2.requests("CreateSecurityGroup");
    assert_eq!(groups.len(), 3, "build base, build app, verify");
    let rules = ec2.requests("AuthorizeSecurityGroupIngress");
    assert_eq!(rules.len(), 3);
    for rule in &rules {
        let mut keys: Vec<&str> = rule
            .keys()
            .map(String::as_str)
            .filter(|k| k.starts_with("IpPermissions"))
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "IpPermissions.1.FromPort",
                "IpPermissions.1.IpProtocol",
                "IpPermissions.1.IpRanges.1.CidrIp",
                "IpPermissions.1.ToPort",
            ],
            "one rule with one range: {rule:?}"
        );
        assert_eq!(rule["IpPermissions.1.IpProtocol"], "tcp");
        assert_eq!(rule["IpPermissions.1.FromPort"], "22");
        assert_eq!(rule["IpPermissions.1.ToPort"], "22");
        assert_eq!(rule["IpPermissions.1.IpRanges.1.CidrIp"], "127.0.0.1/32");
    }
    let launches = ec2.requests("RunInstances");
    assert_eq!(launches.len(), 3);
    for launch in &launches {
        assert_eq!(
            launch["MetadataOptions.HttpTokens"], "required",
            "{launch:?}"
        );
    }

    // Nothing changed: both layers are reused, no AMI is made, and the only instance is the
    // one that verifies the release again.
    ec2.clear_requests();
    let r = bake(&p, &ec2);
    r.ok();
    assert!(
        r.all().matches("reusing").count() == 2,
        "both layers reused: {}",
        r.all()
    );
    assert_eq!(ec2.requests("CreateImage").len(), 0);
    let launches = ec2.requests("RunInstances");
    assert_eq!(launches.len(), 1, "the verify instance only");
    assert!(
        launches[0]
            .iter()
            .any(|(k, v)| k.starts_with("TagSpecification.1.Tag.") && v == "verify"),
        "{:?}",
        launches[0]
    );
    assert_eq!(ec2.images(&p.name).len(), 2);
    assert_nothing_left(&p, &ec2);

    // `pipe verify` runs [verify] again on a fresh instance from the release's AMI.
    let env = ec2.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ec2.clear_requests();
    p.pipe_env(&["verify", "--no-progress"], &env).ok();
    let launches = ec2.requests("RunInstances");
    assert_eq!(launches.len(), 1);
    assert_eq!(launches[0]["ImageId"], app.0.as_str());
    assert_nothing_left(&p, &ec2);
}

#[test]
fn a_run_instances_that_keeps_failing_names_the_call_and_leaves_nothing() {
    let ec2 = local_ec2::hold();
    let p = project("ec2fault");
    ec2.fault(
        r#"{"fail": {"action": "RunInstances", "code": "RequestLimitExceeded", "count": 5}}"#,
    );
    let r = bake(&p, &ec2);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr
            .contains("RunInstances failed: RequestLimitExceeded"),
        "{}",
        r.all()
    );
    assert!(r.all().contains("build base layer"), "{}", r.all());
    // The SDK's standard retry mode tried three times, with back-off, then gave up.
    assert_eq!(ec2.requests("RunInstances").len(), 3);
    assert_eq!(ec2.images(&p.name).len(), 0);
    assert_nothing_left(&p, &ec2);

    // AWS_MAX_ATTEMPTS sets the attempts: with two, two failures end the bake; with the
    // default three, the third call launches. (Two failures of the first fault are left.)
    ec2.ctl("DELETE", "/_local_ec2/faults", "");
    ec2.clear_requests();
    let twice =
        r#"{"fail": {"action": "RunInstances", "code": "RequestLimitExceeded", "count": 2}}"#;
    ec2.fault(twice);
    let env = ec2.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("AWS_MAX_ATTEMPTS", "2"));
    let r = p.pipe_env(&["bake", "--env", "staging", "--no-progress"], &env);
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(ec2.requests("RunInstances").len(), 2);
    assert_nothing_left(&p, &ec2);
    ec2.fault(twice);
    env.pop();
    bake(&p, &ec2).ok();
    assert_nothing_left(&p, &ec2);
}

#[test]
fn without_credentials_a_bake_fails_fast_and_promote_is_not_built_yet() {
    let p = project("ec2nocreds");
    let none = [
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/nonexistent"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_SECRET_ACCESS_KEY", ""),
        ("AWS_PROFILE", ""),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
    ];
    let started = std::time::Instant::now();
    let r = p.pipe_env(&["bake", "--env", "staging", "--no-progress"], &none);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("no AWS credentials found"), "{}", r.all());
    assert!(r.stderr.contains("AWS_PROFILE"), "a hint: {}", r.all());
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());

    // Machine commands refuse ec2 before asking AWS anything.
    let r = p.pipe_env(&["up", "--env", "staging"], &none);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("add --local"), "{}", r.all());

    let r = p.pipe_env(&["promote", "production"], &none);
    assert_eq!(r.code, 69, "{}", r.all());
    assert!(
        r.stderr.contains("`pipe promote` is not implemented yet"),
        "{}",
        r.all()
    );
    assert!(r.stderr.contains("runs on ec2"), "{}", r.all());
    assert!(r.stderr.contains("--local"), "{}", r.all());
}

/// The app layer's provisioning prints this, then sleeps.
#[test]
fn sigint_during_the_app_build_leaves_nothing_but_the_base_ami() {
    let ec2 = local_ec2::hold();
    let p = project_with("ec2sigint", SLOW_APP);
    let mut child = spawn_bake(&p, &ec2, &[]);
    child.wait_for("APP-PROVISIONING-NOW", 240);
    child.signal(libc::SIGINT);
    let (code, stderr) = child.finish();
    assert_eq!(code, 130, "{stderr}");
    let images = ec2.images(&p.name);
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(
        images[0].1["pipe:layer"], "base",
        "the base layer is a result"
    );
    assert_nothing_left(&p, &ec2);
    assert!(p.ledger_lines().is_empty(), "no release");
}

#[test]
fn sigint_while_the_app_ami_is_made_deregisters_it() {
    let ec2 = local_ec2::hold();
    let p = project("ec2sigami");
    // Base first, so that the only image made while images stay pending is the app's.
    bake(&p, &ec2).ok();
    p.write("www/index.html", "<h1>page 2</h1>\n");
    ec2.clear_requests();
    ec2.fault(r#"{"pending": {"images": 1000}}"#);
    let child = spawn_bake(&p, &ec2, &[]);
    let started = std::time::Instant::now();
    while ec2.requests("CreateImage").is_empty() {
        assert!(started.elapsed().as_secs() < 240, "no CreateImage");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    child.signal(libc::SIGINT);
    let (code, stderr) = child.finish();
    assert_eq!(code, 130, "{stderr}");
    assert_eq!(ec2.requests("DeregisterImage").len(), 1, "{stderr}");
    let images = ec2.images(&p.name);
    assert_eq!(
        images.len(),
        2,
        "the first bake's two, not the half-made one: {images:?}"
    );
    assert_nothing_left(&p, &ec2);
}

#[test]
fn a_killed_bake_is_removed_by_pipe_clean_from_its_journal_or_by_tag() {
    let ec2 = local_ec2::hold();
    let env = ec2.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let p = project_with("ec2kill", SLOW_APP);

    for by_tag in [false, true] {
        let mut child = spawn_bake(&p, &ec2, &[]);
        child.wait_for("APP-PROVISIONING-NOW", 240);
        child.signal(libc::SIGKILL);
        let (code, _) = child.finish();
        assert_eq!(code, 128 + libc::SIGKILL);
        assert_eq!(ec2.live_instances(&p.name).len(), 1);
        assert_eq!(ec2.key_pairs(&p.name).len(), 1);
        assert_eq!(ec2.security_groups(&p.name).len(), 1);
        let run = p.journal_runs().pop().expect("the killed run's journal");
        if by_tag {
            std::fs::remove_dir_all(p.path().join(".pipe/journal")).unwrap();
        }
        let clean = p.pipe_env(&["clean"], &env);
        clean.ok();
        for what in ["ec2 instance", "ec2 security group", "ec2 key pair"] {
            assert!(clean.stdout.contains(what), "{what}: {}", clean.stdout);
        }
        if by_tag {
            assert!(
                clean.stdout.contains(&format!("labelled pipe.run={run}")),
                "{}",
                clean.stdout
            );
        }
        assert_nothing_left(&p, &ec2);
    }
}

#[test]
fn keep_on_error_keeps_the_build_instance_until_pipe_clean() {
    let ec2 = local_ec2::hold();
    let env = ec2.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let p = project_with("ec2keep", "\n  { inline = [\"exit 3\"] },");
    let r = p.pipe_env(
        &[
            "bake",
            "--env",
            "staging",
            "--no-progress",
            "--keep-on-error",
        ],
        &env,
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("kept the build machine"), "{}", r.all());
    assert!(r.stderr.contains("ssh -i "), "how to get in: {}", r.all());
    assert_eq!(
        ec2.live_instances(&p.name).len(),
        1,
        "the app build instance"
    );
    assert_eq!(
        p.journals(),
        Vec::<String>::new(),
        "kept, so out of the journal"
    );

    let dry = p.pipe_env(&["clean", "--dry-run"], &env);
    dry.ok();
    assert!(
        dry.stdout.contains("would remove ec2 instance"),
        "{}",
        dry.stdout
    );
    assert_eq!(
        ec2.live_instances(&p.name).len(),
        1,
        "--dry-run removes nothing"
    );

    let clean = p.pipe_env(&["clean"], &env);
    clean.ok();
    assert!(
        clean.stdout.contains("removed ec2 instance"),
        "{}",
        clean.stdout
    );
    assert_eq!(ec2.live_instances(&p.name), vec![]);
    assert_eq!(ec2.key_pairs(&p.name), Vec::<String>::new());
    assert_eq!(ec2.security_groups(&p.name), Vec::<String>::new());
    assert_eq!(
        machine_folders(&p),
        Vec::<String>::new(),
        "the key folder goes too"
    );
}
