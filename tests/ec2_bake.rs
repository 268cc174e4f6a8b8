//! `pipe bake` on the ec2 target against the local EC2 (real machines: every instance is a
//! systemd container reached over SSH on its own 127.0.0.x): base and app AMIs with their tags,
//! the release verified on a fresh instance and recorded as `ec2:<region>`, reuse by digest,
//! nothing left behind, the security group and launch settings as sent, a failing call, a
//! newer source AMI that re-bakes the base.

mod common;
#[path = "support/local_ec2.rs"]
mod local_ec2;

#[path = "support/ec2_project.rs"]
mod ec2_project;

use common::Project;
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

    // Nothing changed: both layers are reused, no AMI is made and no instance launched: the
    // release verified with this very Pipelinefile and app AMI stands (`pipe verify` below
    // checks again on demand).
    ec2.clear_requests();
    let r = bake(&p, &ec2);
    r.ok();
    assert!(
        r.all().matches("reusing").count() == 2,
        "both layers reused: {}",
        r.all()
    );
    assert!(r.all().contains("verified as release"), "{}", r.all());
    assert_eq!(ec2.requests("CreateImage").len(), 0);
    assert_eq!(ec2.requests("RunInstances").len(), 0, "{}", r.all());
    assert_eq!(ec2.images(&p.name).len(), 2);
    let ledger: Vec<Value> = p
        .ledger_lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ledger.len(), 2, "a second release");
    assert_eq!(ledger[1]["release"]["verify"]["ok"], true);
    assert_nothing_left(&p, &ec2);

    // A Pipelinefile edit that no layer sees (a comment) is still a change [verify] might
    // care about: the release is verified again, on one instance.
    let text = std::fs::read_to_string(p.path().join("Pipelinefile.toml")).unwrap();
    p.write("Pipelinefile.toml", &format!("{text}\n# edited\n"));
    ec2.clear_requests();
    let r = bake(&p, &ec2);
    r.ok();
    let launches = ec2.requests("RunInstances");
    assert_eq!(launches.len(), 1, "the verify instance only: {}", r.all());
    assert!(
        launches[0]
            .iter()
            .any(|(k, v)| k.starts_with("TagSpecification.1.Tag.") && v == "verify"),
        "{:?}",
        launches[0]
    );
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

    // An app edit makes only an app AMI, from an instance of the base AMI.
    let base = images
        .iter()
        .find(|(_, t)| t["pipe:layer"] == "base")
        .unwrap()
        .0
        .clone();
    p.write("www/index.html", "<h1>edited</h1>\n");
    ec2.clear_requests();
    let r = bake(&p, &ec2);
    r.ok();
    assert_eq!(
        r.all().matches("reusing").count(),
        1,
        "the base: {}",
        r.all()
    );
    assert_eq!(ec2.requests("CreateImage").len(), 1, "{}", r.all());
    let launches = ec2.requests("RunInstances");
    assert_eq!(launches.len(), 2, "build app, verify: {}", r.all());
    assert_eq!(launches[0]["ImageId"], base.as_str(), "{:?}", launches[0]);
    let now = ec2.images(&p.name);
    assert_eq!(now.len(), 3, "{now:?}");
    let new_app = now
        .iter()
        .find(|(id, t)| t["pipe:layer"] == "app" && *id != app.0)
        .expect("a new app AMI");
    assert_eq!(new_app.1["pipe:parent"], base.as_str());
    assert_nothing_left(&p, &ec2);
}

#[test]
fn a_newer_source_ami_rebakes_the_base_from_it_and_the_app_on_that_base() {
    let ec2 = local_ec2::hold();
    let p = project("ec2newsrc");
    bake(&p, &ec2).ok();
    let first = ec2.images(&p.name);
    let layer = |images: &[(String, serde_json::Map<String, Value>)], layer: &str| {
        images
            .iter()
            .filter(|(_, t)| t["pipe:layer"] == layer)
            .cloned()
            .collect::<Vec<_>>()
    };
    let base1 = layer(&first, "base");
    assert_eq!(base1.len(), 1, "{first:?}");
    assert_eq!(base1[0].1["pipe:parent"], ec2.source_ami.as_str());

    // Debian publishes a newer AMI: the filter now resolves to it, so the base digest changes.
    let newer = ec2.register_source_ami();
    assert_ne!(newer, ec2.source_ami);
    ec2.clear_requests();
    let r = bake(&p, &ec2);
    r.ok();
    assert_eq!(
        r.all().matches("reusing").count(),
        0,
        "nothing reused: {}",
        r.all()
    );
    let launches = ec2.requests("RunInstances");
    assert_eq!(launches.len(), 3, "build base, build app, verify");
    assert_eq!(launches[0]["ImageId"], newer.as_str(), "{:?}", launches[0]);

    let second = ec2.images(&p.name);
    assert_eq!(second.len(), 4, "two more AMIs: {second:?}");
    let base2: Vec<_> = layer(&second, "base")
        .into_iter()
        .filter(|(id, _)| *id != base1[0].0)
        .collect();
    assert_eq!(base2.len(), 1, "{second:?}");
    assert_eq!(base2[0].1["pipe:parent"], newer.as_str());
    assert_ne!(base2[0].1["pipe:digest"], base1[0].1["pipe:digest"]);
    let app2: Vec<_> = layer(&second, "app")
        .into_iter()
        .filter(|(_, t)| t["pipe:parent"] == base2[0].0.as_str())
        .collect();
    assert_eq!(app2.len(), 1, "an app AMI on the new base: {second:?}");
    assert_eq!(
        launches[1]["ImageId"],
        base2[0].0.as_str(),
        "the app builds on it"
    );
    assert_eq!(
        launches[2]["ImageId"],
        app2[0].0.as_str(),
        "and it is verified"
    );
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
fn without_credentials_a_bake_fails_fast_and_promote_needs_a_release() {
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

    // Promotion on ec2 exists: with nothing baked, the gate refuses before AWS is asked.
    let r = p.pipe_env(&["promote", "production"], &none);
    assert_eq!(r.code, 5, "{}", r.all());
    assert!(
        r.stderr
            .contains("no verified ec2 release of env `staging` to promote into `production`"),
        "{}",
        r.all()
    );
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
    // Its private key, readable by its owner only, stays until `pipe clean`.
    let folders = machine_folders(&p);
    assert_eq!(folders.len(), 1, "{folders:?}");
    let key = p
        .path()
        .join(".pipe/ec2")
        .join(&folders[0])
        .join("id_ed25519");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", key.display());
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

/// A project whose staging environment also has `settings` (TOML lines).
fn project_with_settings(prefix: &str, app_extra: &str, settings: &str) -> Project {
    let p = project_with(prefix, app_extra);
    let text = std::fs::read_to_string(p.path().join("Pipelinefile.toml")).unwrap();
    let text = text.replacen(
        "instance_type = \"t3.micro\"\n",
        &format!("instance_type = \"t3.micro\"\n{settings}\n"),
        1,
    );
    p.write("Pipelinefile.toml", &text);
    p
}

/// A recorded request's parameters that start with `prefix`, by name.
fn params<'a>(
    request: &'a serde_json::Map<String, Value>,
    prefix: &str,
) -> std::collections::BTreeMap<&'a str, &'a str> {
    request
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default()))
        .collect()
}

#[test]
fn launch_options_reach_run_instances_and_the_app_ami_is_copied_to_other_regions() {
    let ec2 = local_ec2::hold();
    // What an account has before the bake: an instance profile, a group, a subnet.
    ec2.call(
        "iam",
        "us-east-1",
        "create_instance_profile",
        r#"{"InstanceProfileName": "pipe-build"}"#,
    );
    let subnets = ec2.ec2(
        "describe_subnets",
        r#"{"Filters": [{"Name": "default-for-az", "Values": ["true"]}]}"#,
    );
    let subnet = subnets["Subnets"][0]["SubnetId"]
        .as_str()
        .unwrap()
        .to_string();
    let extra = ec2.ec2(
        "create_security_group",
        r#"{"GroupName": "corp-monitoring", "Description": "an account's own group"}"#,
    )["GroupId"]
        .as_str()
        .unwrap()
        .to_string();
    let settings = format!(
        r#"subnet_id = "{subnet}"
associate_public_ip = true
security_group_ids = ["{extra}"]
iam_instance_profile = "pipe-build"
root_volume = {{ size_gb = 12, type = "gp3", kms_key_id = "alias/pipe-build" }}
ssh_cidrs = ["127.0.0.0/8", "10.20.0.0/16"]
ssh_interface = "private_ip"
ami_regions = ["us-west-2"]
region_kms_key_ids = {{ "us-west-2" = "alias/pipe-copies" }}"#
    );
    let p = project_with_settings("ec2opts", "", &settings);
    let r = bake(&p, &ec2);
    r.ok();
    assert!(r.stdout.contains("verified"), "{}", r.all());

    // Every launch (base, app, verify) carries the options.
    let launches = ec2.requests("RunInstances");
    assert_eq!(launches.len(), 3);
    for launch in &launches {
        assert_eq!(
            launch["IamInstanceProfile.Name"], "pipe-build",
            "{launch:?}"
        );
        let disk = params(launch, "BlockDeviceMapping.1.");
        // On the root device of the AMI launched (the source AMI's, then the base AMI's).
        let image = launch["ImageId"].as_str().unwrap();
        let described = ec2.ec2(
            "describe_images",
            &format!(r#"{{"ImageIds": ["{image}"]}}"#),
        );
        assert_eq!(
            disk["BlockDeviceMapping.1.DeviceName"],
            described["Images"][0]["RootDeviceName"].as_str().unwrap(),
            "{launch:?}"
        );
        assert_eq!(disk["BlockDeviceMapping.1.Ebs.VolumeSize"], "12");
        assert_eq!(disk["BlockDeviceMapping.1.Ebs.VolumeType"], "gp3");
        assert_eq!(
            disk["BlockDeviceMapping.1.Ebs.Encrypted"], "true",
            "implied by the key"
        );
        assert_eq!(
            disk["BlockDeviceMapping.1.Ebs.KmsKeyId"],
            "alias/pipe-build"
        );
        assert_eq!(disk["BlockDeviceMapping.1.Ebs.DeleteOnTermination"], "true");
        let nic = params(launch, "NetworkInterface.1.");
        assert_eq!(
            nic["NetworkInterface.1.AssociatePublicIpAddress"], "true",
            "{launch:?}"
        );
        assert_eq!(nic["NetworkInterface.1.SubnetId"], subnet.as_str());
        assert_eq!(nic["NetworkInterface.1.DeviceIndex"], "0");
        let groups: Vec<&str> = nic
            .iter()
            .filter(|(k, _)| k.starts_with("NetworkInterface.1.SecurityGroupId."))
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(
            groups.len(),
            2,
            "the temporary group and the extra one: {launch:?}"
        );
        assert!(
            groups[0].starts_with("sg-") && groups[0] != extra,
            "{groups:?}"
        );
        assert_eq!(groups[1], extra);
        assert!(
            !launch.contains_key("SubnetId") && !launch.contains_key("SecurityGroupId.1"),
            "subnet and groups go on the interface only: {launch:?}"
        );
    }
    // The temporary group's rule: port 22 from the configured CIDRs, not this host's /32.
    for rule in ec2.requests("AuthorizeSecurityGroupIngress") {
        let ranges = params(&rule, "IpPermissions.1.IpRanges.");
        assert_eq!(
            ranges.values().copied().collect::<Vec<_>>(),
            ["127.0.0.0/8", "10.20.0.0/16"],
            "{rule:?}"
        );
        assert_eq!(rule["IpPermissions.1.FromPort"], "22");
        assert_eq!(rule["IpPermissions.1.ToPort"], "22");
    }
    // ssh_interface = "private_ip": the local EC2 reports the same 127.0.0.x as both.
    assert!(r.all().contains("SSH up on 127.0.0."), "{}", r.all());

    // The app AMI was copied to us-west-2: encrypted with that region's key, tagged like
    // the app AMI, snapshots too.
    let app = ec2
        .images(&p.name)
        .into_iter()
        .find(|(_, t)| t["pipe:layer"] == "app")
        .unwrap();
    let base = ec2
        .images(&p.name)
        .into_iter()
        .find(|(_, t)| t["pipe:layer"] == "base")
        .unwrap();
    let copies = ec2.images_in("us-west-2", &p.name);
    assert_eq!(copies.len(), 1, "{copies:?}");
    let (copy, tags) = &copies[0];
    for key in [
        "pipe:digest",
        "pipe:layer",
        "pipe:pipeline",
        "pipe:env",
        "Name",
    ] {
        assert_eq!(tags[key], app.1[key], "{key}: {tags:?}");
    }
    assert_eq!(tags["pipe:source-ami"], app.0.as_str());
    assert_eq!(tags["pipe:source-region"], "us-east-1");
    let asked = ec2.requests_in("CopyImage");
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].0, "us-west-2");
    assert_eq!(asked[0].1["SourceRegion"], "us-east-1");
    assert_eq!(asked[0].1["SourceImageId"], app.0.as_str());
    assert_eq!(asked[0].1["Encrypted"], "true");
    assert_eq!(asked[0].1["KmsKeyId"], "alias/pipe-copies");

    // The release: the AMI per region, the base AMI, the snapshots of each.
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
    assert_eq!(
        release["artifacts"]["ec2:us-west-2"],
        copy.as_str(),
        "{release}"
    );
    assert_eq!(release["base_artifact"], base.0.as_str(), "{release}");
    let snaps = |key: &str| -> Vec<String> {
        let mut v: Vec<String> = release["snapshots"][key]
            .as_array()
            .unwrap_or_else(|| panic!("{key}: {release}"))
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let west = snaps("ec2:us-west-2");
    assert!(!west.is_empty());
    assert_eq!(west, ec2.snapshots_in("us-west-2", &p.name), "tagged");
    assert!(!snaps("ec2:us-east-1").is_empty());
    let env = ec2.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let listed = p.pipe_env(&["releases"], &env);
    listed.ok();
    assert!(
        listed.stdout.contains(&format!("ec2:us-west-2 {copy}")),
        "{}",
        listed.stdout
    );
    let json = p.pipe_env(&["--json", "releases"], &env);
    json.ok();
    assert!(
        json.stdout
            .contains(&format!("\"ec2:us-west-2\":\"{copy}\"")),
        "{}",
        json.stdout
    );
    assert_nothing_left(&p, &ec2);

    // Unchanged app, one more region: the us-west-2 copy is reused, eu-west-1 is made.
    let text = std::fs::read_to_string(p.path().join("Pipelinefile.toml")).unwrap();
    p.write(
        "Pipelinefile.toml",
        &text.replace(
            r#"ami_regions = ["us-west-2"]"#,
            r#"ami_regions = ["us-west-2", "eu-west-1"]"#,
        ),
    );
    ec2.clear_requests();
    let r = bake(&p, &ec2);
    r.ok();
    assert!(
        r.all().contains("app AMI in us-west-2: reusing"),
        "{}",
        r.all()
    );
    let asked = ec2.requests_in("CopyImage");
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].0, "eu-west-1");
    assert!(!asked[0].1.contains_key("KmsKeyId"), "no key for eu-west-1");
    let eu = ec2.images_in("eu-west-1", &p.name);
    assert_eq!(eu.len(), 1);
    let ledger: Vec<Value> = p
        .ledger_lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let release = &ledger.last().unwrap()["release"];
    assert_eq!(
        release["artifacts"]["ec2:us-west-2"],
        copy.as_str(),
        "{release}"
    );
    assert_eq!(
        release["artifacts"]["ec2:eu-west-1"],
        eu[0].0.as_str(),
        "{release}"
    );
    assert_nothing_left(&p, &ec2);

    // `pipe verify` runs the AMI of the environment's own region, not the first copy.
    ec2.clear_requests();
    p.pipe_env(&["verify", "--no-progress"], &env).ok();
    let launches = ec2.requests_in("RunInstances");
    assert_eq!(launches.len(), 1);
    assert_eq!(launches[0].0, "us-east-1");
    assert_eq!(launches[0].1["ImageId"], app.0.as_str());
    assert_nothing_left(&p, &ec2);
}

#[test]
fn sigint_while_the_app_ami_is_copied_deregisters_the_copy() {
    let ec2 = local_ec2::hold();
    let p = project_with_settings("ec2sigcopy", "", r#"ami_regions = ["us-west-2"]"#);
    let child = spawn_bake(&p, &ec2, &[]);
    // Once the verify instance is launched the app AMI exists: copies made from then on stay
    // pending.
    let started = std::time::Instant::now();
    while ec2.requests("RunInstances").len() < 3 {
        assert!(started.elapsed().as_secs() < 300, "no verify instance");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    ec2.fault(r#"{"pending": {"images": 1000}}"#);
    while ec2.requests("CopyImage").is_empty() {
        assert!(started.elapsed().as_secs() < 400, "no CopyImage");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    child.signal(libc::SIGINT);
    let (code, stderr) = child.finish();
    assert_eq!(code, 130, "{stderr}");
    let deregistered = ec2.requests_in("DeregisterImage");
    assert_eq!(deregistered.len(), 1, "{stderr}");
    assert_eq!(deregistered[0].0, "us-west-2");
    assert_eq!(
        ec2.images_in("us-west-2", &p.name),
        vec![],
        "the copy is gone"
    );
    assert_eq!(
        ec2.images(&p.name).len(),
        2,
        "base and app AMIs are results"
    );
    assert_nothing_left(&p, &ec2);
    assert!(p.ledger_lines().is_empty(), "no release");
}

/// A bastion on this host's loopback: sshd on 127.0.0.1:`port` in a container that shares the
/// host's network (so what it forwards to, an instance's 127.0.0.x:22, is on the loopback too),
/// letting root in with `public_key`. Removed when dropped.
struct LoopbackBastion {
    name: String,
    port: u16,
}

impl LoopbackBastion {
    fn start(public_key: &str) -> Self {
        let port = common::free_port();
        let name = common::unique("pipe-test-bastion");
        let script = format!(
            "set -e; mkdir -p /run/sshd /root/.ssh; echo '{}' > /root/.ssh/authorized_keys; chmod 700 /root/.ssh; chmod 600 /root/.ssh/authorized_keys; ssh-keygen -A >/dev/null; exec /usr/sbin/sshd -D -e -p {port} -o ListenAddress=127.0.0.1 -o AllowTcpForwarding=yes -o PermitRootLogin=prohibit-password -o LogLevel=DEBUG1",
            public_key.trim()
        );
        common::docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "host",
            "--entrypoint",
            "/bin/sh",
            "pipe-local-ec2/debian-12-cloud:latest",
            "-c",
            &script,
        ]);
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed().as_secs() < 30,
                "the bastion's sshd did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Self { name, port }
    }

    fn log(&self) -> String {
        let out = std::process::Command::new("docker")
            .args(["logs", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }
}

impl Drop for LoopbackBastion {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
    }
}

#[test]
fn a_bake_through_a_bastion_reaches_every_instance_through_it() {
    let ec2 = local_ec2::hold();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("bastion");
    let made = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "pipe-bastion-test",
            "-f",
        ])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let bastion =
        LoopbackBastion::start(&std::fs::read_to_string(key.with_extension("pub")).unwrap());
    let settings = format!(
        r#"ssh_interface = "private_ip"
bastion = {{ host = "127.0.0.1", port = {}, user = "root", key = "{}" }}"#,
        bastion.port,
        key.display()
    );
    let p = project_with_settings("ec2bastion", "", &settings);
    let r = bake(&p, &ec2);
    let log = bastion.log();
    r.ok();
    assert!(r.stdout.contains("verified"), "{}", r.all());
    // Three instances (base, app, verify), each reached by a channel the bastion opened to
    // its 127.0.0.x:22.
    let forwards: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("server_request_direct_tcpip"))
        .collect();
    assert!(forwards.len() >= 3, "{log}");
    for f in &forwards {
        let target = f.split("target ").nth(1).unwrap_or_default();
        assert!(
            target.starts_with("127.0.0.") && target.ends_with(" port 22"),
            "{f}"
        );
    }
    assert!(
        log.matches("Accepted publickey for root").count() >= 3,
        "{log}"
    );
    assert_nothing_left(&p, &ec2);
}
