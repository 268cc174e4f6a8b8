//! `pipe prune` against the local EC2: four baked releases of staging (only a file changes
//! between bakes, so the base AMI is reused), two older ones recorded here on AMIs copied from
//! the source AMI (one protected from deregistration, one a launch template version refers
//! to), production's current and previous written to the ledger as promotions, and a copy
//! of the prunable release in another region as a promotion would have made it. `--plan`
//! changes nothing and says why each release stays; a prune that fails half-way is finished by
//! the next; `prune` removes exactly that release's AMIs and snapshots in both regions,
//! records it, and a pruned release is not promoted.

mod common;
#[path = "support/local_ec2.rs"]
mod local_ec2;

#[path = "support/ec2_project.rs"]
mod ec2_project;

use std::collections::BTreeMap;

use common::Project;
use pipe::config::TargetKind;
use pipe::ledger::{Event, Ledger, Release, VerifyOutcome};
use serde_json::{Value, json};

/// A verified release of staging on `ami`, as a bake would have recorded it.
fn record(p: &Project, ami: &str, digest: &str) -> Release {
    let release = Release {
        id: String::new(),
        alias: String::new(),
        pipeline: p.name.clone(),
        env: "staging".into(),
        target: TargetKind::Ec2,
        artifacts: BTreeMap::from([("ec2:us-east-1".to_string(), ami.to_string())]),
        base_digest: "b".into(),
        app_digest: digest.into(),
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
    ledger(p)
        .append(
            "carol@ci",
            Event::Bake {
                release: Box::new(release.clone()),
            },
        )
        .unwrap();
    release
}

fn ledger(p: &Project) -> Ledger {
    Ledger::open(&p.path().join(".pipe"))
}

fn promote(p: &Project, release: &str, previous: Option<&str>) {
    ledger(p)
        .append(
            "carol@ci",
            Event::Promote {
                release: release.into(),
                env: "production".into(),
                ok: true,
                previous: previous.map(str::to_string),
                detail: None,
            },
        )
        .unwrap();
}

fn copy(ec2: &local_ec2::LocalEc2, region: &str, ami: &str, name: &str) -> String {
    ec2.call(
        "ec2",
        region,
        "copy_image",
        &json!({"SourceImageId": ami, "SourceRegion": "us-east-1", "Name": name}).to_string(),
    )["ImageId"]
        .as_str()
        .unwrap()
        .to_string()
}

fn image(ec2: &local_ec2::LocalEc2, region: &str, id: &str) -> Option<Value> {
    let v = ec2.call(
        "ec2",
        region,
        "describe_images",
        &json!({"Filters": [{"Name": "image-id", "Values": [id]}]}).to_string(),
    );
    v["Images"].as_array().unwrap().first().cloned()
}

fn snapshots_of(image: &Value) -> Vec<String> {
    image["BlockDeviceMappings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["Ebs"]["SnapshotId"].as_str().map(str::to_string))
        .collect()
}

fn all_snapshots(ec2: &local_ec2::LocalEc2, region: &str) -> Vec<String> {
    ec2.call(
        "ec2",
        region,
        "describe_snapshots",
        r#"{"OwnerIds": ["self"]}"#,
    )["Snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["SnapshotId"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn prune_keeps_what_is_used_removes_the_rest_everywhere_and_records_it() {
    let ec2 = local_ec2::hold();
    let text = ec2_project::pipelinefile("")
        .replacen(
            "promote_from = \"staging\"\nregion = \"us-east-1\"\n",
            "promote_from = \"staging\"\nregion = \"us-east-1\"\nauto_scaling_group = \"@NAME@\"\nlaunch_template = \"@NAME@\"\n",
            1,
        )
        + "\n[env.dr]\ntarget = \"ec2\"\npromote_from = \"staging\"\nregion = \"us-west-2\"\n";
    common::ensure_box();
    let p = Project::new(
        "ec2prune",
        &text,
        &[
            (
                "base.sh",
                "#!/bin/sh\nset -e\necho base-layer > /base.txt\n",
            ),
            ("www/index.html", "<h1>page 0</h1>\n"),
        ],
    );
    let env = ec2.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // Two old releases on plain copies of the source AMI: one protected, one a launch
    // template version of production's template refers to.
    let protected_ami = copy(&ec2, "us-east-1", &ec2.source_ami, "old-protected");
    ec2.ec2(
        "enable_image_deregistration_protection",
        &json!({"ImageId": protected_ami}).to_string(),
    );
    let protected = record(&p, &protected_ami, "sha256:old-1");
    let templated_ami = copy(&ec2, "us-east-1", &ec2.source_ami, "old-templated");
    ec2.ec2(
        "create_launch_template",
        &json!({"LaunchTemplateName": p.name, "LaunchTemplateData": {"ImageId": templated_ami, "InstanceType": "t3.micro"}})
            .to_string(),
    );
    let templated = record(&p, &templated_ami, "sha256:old-22");

    // Four bakes, a page edit apart: four app AMIs on one base AMI.
    let mut baked = Vec::new();
    for n in 1..=4 {
        p.write("www/index.html", &format!("<h1>page {n}</h1>\n"));
        let r = p.pipe_env(&["bake", "--env", "staging", "--no-progress"], &env);
        r.ok();
        let line = p.ledger_lines().last().unwrap().clone();
        let e: Value = serde_json::from_str(&line).unwrap();
        let r = &e["release"];
        baked.push((
            r["id"].as_str().unwrap().to_string(),
            r["alias"].as_str().unwrap().to_string(),
            r["artifacts"]["ec2:us-east-1"]
                .as_str()
                .unwrap()
                .to_string(),
        ));
    }
    let bases: Vec<_> = ec2
        .images(&p.name)
        .into_iter()
        .filter(|(_, t)| t["pipe:layer"] == "base")
        .collect();
    assert_eq!(bases.len(), 1, "the base AMI is reused: {bases:?}");
    let [
        (r1, _, ami1),
        (r2, _, ami2),
        (r3, alias3, ami3),
        (_, _, ami4),
    ] = &baked[..]
    else {
        unreachable!()
    };
    // Production runs release 2 (release 1 before it).
    promote(&p, r1, None);
    promote(&p, r2, Some(r1));
    // A promotion into us-west-2 copied release 3's AMI there, tagged like it.
    let west = copy(&ec2, "us-west-2", ami3, "r3-west");
    let tags = image(&ec2, "us-east-1", ami3).unwrap()["Tags"].clone();
    let west_snaps = snapshots_of(&image(&ec2, "us-west-2", &west).unwrap());
    assert!(!west_snaps.is_empty());
    let mut tagged = vec![west.clone()];
    tagged.extend(west_snaps.iter().cloned());
    ec2.call(
        "ec2",
        "us-west-2",
        "create_tags",
        &json!({"Resources": tagged, "Tags": tags}).to_string(),
    );
    let east_snaps = snapshots_of(&image(&ec2, "us-east-1", ami3).unwrap());
    assert!(!east_snaps.is_empty());

    // --plan: nothing changes; each release that stays says why.
    let before = (
        all_snapshots(&ec2, "us-east-1"),
        all_snapshots(&ec2, "us-west-2"),
    );
    let plan = p.pipe_env(
        &["prune", "--env", "staging", "--keep", "1", "--plan"],
        &env,
    );
    plan.ok();
    let out = &plan.stdout;
    for want in [
        format!("would remove {alias3}"),
        format!("{ami3} in us-east-1"),
        format!("{west} in us-west-2"),
        format!("keep {}: one of the newest 1 of `staging`", &baked[3].1),
        format!("keep {}: current in `production`", &baked[1].1),
        format!("keep {}: previous in `production`", &baked[0].1),
        format!(
            "keep {}: its image {templated_ami}: launch template {} version 1 (env `production`) refers to it",
            templated.alias, p.name
        ),
        format!(
            "keep {}: its AMI {protected_ami} in us-east-1 is protected from deregistration",
            protected.alias
        ),
        "nothing was changed (--plan)".to_string(),
    ] {
        assert!(out.contains(&want), "missing {want:?} in:\n{}", plan.all());
    }
    assert!(image(&ec2, "us-east-1", ami3).is_some());
    assert_eq!(
        before,
        (
            all_snapshots(&ec2, "us-east-1"),
            all_snapshots(&ec2, "us-west-2")
        )
    );

    // A prune that fails between deregistering the AMI and deleting its snapshots names the
    // snapshot, records nothing, and the next prune finishes it.
    ec2.fault(
        r#"{"fail": {"action": "DeleteSnapshot", "code": "UnauthorizedOperation", "status": 403}}"#,
    );
    let failed = p.pipe_env(&["prune", "--env", "staging", "--keep", "1"], &env);
    assert_eq!(failed.code, 1, "{}", failed.all());
    assert!(
        failed.stderr.contains(&format!(
            "deleting snapshot {} of AMI {ami3} in us-east-1",
            east_snaps[0]
        )),
        "{}",
        failed.all()
    );
    assert!(
        failed
            .stderr
            .contains("`pipe prune` again finishes what is left"),
        "{}",
        failed.all()
    );
    assert!(
        image(&ec2, "us-east-1", ami3).is_none(),
        "deregistered first"
    );
    assert!(
        !p.ledger_lines()
            .iter()
            .any(|l| l.contains(r#""event":"prune""#))
    );

    // prune: exactly release 3's AMIs and snapshots, in both regions.
    let run = p.pipe_env(
        &["--json", "prune", "--env", "staging", "--keep", "1"],
        &env,
    );
    run.ok();
    let result: Value = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["event"] == "result")
        .unwrap_or_else(|| panic!("{}", run.all()));
    let removed = result["data"]["removed"].as_array().unwrap();
    assert_eq!(removed.len(), 1, "{result}");
    assert_eq!(removed[0]["release"], r3.as_str());
    assert_eq!(result["data"]["kept"].as_array().unwrap().len(), 5);
    assert!(image(&ec2, "us-east-1", ami3).is_none());
    assert!(image(&ec2, "us-west-2", &west).is_none());
    let (east, west_left) = (
        all_snapshots(&ec2, "us-east-1"),
        all_snapshots(&ec2, "us-west-2"),
    );
    for s in &east_snaps {
        assert!(!east.contains(s), "{s} left in us-east-1");
    }
    for s in &west_snaps {
        assert!(!west_left.contains(s), "{s} left in us-west-2");
    }
    assert_eq!(east.len() + east_snaps.len(), before.0.len());
    assert_eq!(west_left.len() + west_snaps.len(), before.1.len());
    for ami in [ami1, ami2, ami4, &protected_ami, &templated_ami] {
        assert!(image(&ec2, "us-east-1", ami).is_some(), "{ami} was removed");
    }
    assert_eq!(
        ec2.images(&p.name)
            .iter()
            .filter(|(_, t)| t["pipe:layer"] == "base")
            .count(),
        1,
        "the base AMI stays"
    );

    // Recorded, shown, marked; a second prune has nothing to do.
    let history = p.pipe(&["history"]);
    history.ok();
    assert!(
        history.stdout.contains(&format!(
            "prune     staging      {} removed {ami3} in us-east-1",
            &r3[..10]
        )),
        "{}",
        history.all()
    );
    let releases = p.pipe(&["releases"]);
    assert!(
        releases
            .stdout
            .lines()
            .any(|l| l.starts_with(alias3.as_str()) && l.contains("pruned")),
        "{}",
        releases.all()
    );
    let again = p.pipe_env(&["prune", "--env", "staging", "--keep", "1"], &env);
    again.ok();
    assert!(
        again.stdout.contains("nothing to remove"),
        "{}",
        again.all()
    );

    // A pruned release is not promoted: the gate says why (exit 5), before any AWS call.
    let refused = p.pipe_env(&["promote", "production", "--release", alias3], &env);
    assert_eq!(refused.code, 5, "{}", refused.all());
    assert!(
        refused.stderr.contains(&format!(
            "release {alias3} was pruned (`pipe prune`): its images are gone"
        )),
        "{}",
        refused.all()
    );
}
