//! Promotion on EC2, the blue/green strategy (`strategy = "blue-green"`), as seed 2's deploy
//! script does it and Spinnaker calls red/black: per promotion a **new Auto Scaling group**
//! beside the one serving, from a launch template version that names the release's AMI, with
//! the serving group's subnets, target groups, capacity, health checks and tags. Once every
//! new instance is InService and healthy at every target group, the old group is detached
//! from the target groups (its instances drain for the deregistration delay), scaled to zero
//! and **kept** for `keep_previous` promotions, so `pipe rollback` scales it back up and
//! switches to it the same way. Older groups pipe made are deleted; a group pipe did not make
//! (the one Terraform or the console made, named by `auto_scaling_group`) is never deleted.
//!
//! The groups of an environment (its *family*) are the one `auto_scaling_group` names and
//! those tagged `pipe:blue-green = <that name>` by the pipeline. What a promotion in flight
//! must undo is written on the incoming group's tags (`pipe:state = launching`, the group it
//! replaces and the capacity that group served with), so the journaled group's cleanup
//! ([`AwsClient::undo_incoming_group`]), `pipe clean` after SIGKILL and `pipe rollback` from another terminal all bring
//! the old group back first, wait until it serves, and only then remove the incoming one:
//! whatever is interrupted, one of the two groups serves, and no half-made group stays.

use serde_json::json;

use super::promote::{self, Rollout};
use crate::config::Pipelinefile;
use crate::engine::aws::switch::{
    Capacity, TAG_CAPACITY, TAG_REPLACES, TAG_REPLACES_CAPACITY, TAG_RETIRED, TAG_REUSED, TAG_STATE,
};
use crate::engine::aws::{AwsClient, AwsError, GroupInfo, GroupSpec};
use crate::error::{Error, Result};
use crate::ledger::Release;
use crate::runner::{Resource, Runner};
use crate::targets::fleet::{FleetPlan, RolledOut, Running};
use crate::targets::resource::{self, Destroyer};
use crate::ui::Printer;

/// On a group pipe made: the name of the group the environment names (its family).
pub const TAG_FAMILY: &str = "pipe:blue-green";
/// The release and AMI a group pipe made runs.
pub const TAG_RELEASE: &str = "pipe:release";
pub const TAG_IMAGE: &str = "pipe:image";

/// The environment's groups: the one it names and those the pipeline made for it.
pub fn family(client: &AwsClient, pipeline: &str, r: &Rollout) -> Result<Vec<GroupInfo>> {
    let mut groups: Vec<GroupInfo> = client
        .groups()?
        .into_iter()
        .filter(|g| {
            g.name == r.group
                || (g.tag(TAG_FAMILY) == Some(r.group.as_str())
                    && g.tag("pipe:pipeline") == Some(pipeline))
        })
        .collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.created));
    Ok(groups)
}

/// Who serves in a family, and what is in flight.
#[derive(Debug)]
pub struct Serving<'a> {
    /// Groups with capacity that are not being brought in.
    pub serving: Vec<&'a GroupInfo>,
    /// Groups a promotion is bringing in (or a dead one left).
    pub launching: Vec<&'a GroupInfo>,
}

pub fn serving(family: &[GroupInfo]) -> Serving<'_> {
    let launching: Vec<&GroupInfo> = family
        .iter()
        .filter(|g| g.tag(TAG_STATE) == Some("launching"))
        .collect();
    let serving = family
        .iter()
        .filter(|g| g.desired > 0 && g.tag(TAG_STATE) != Some("launching"))
        .collect();
    Serving { serving, launching }
}

/// The one group serving the environment, or why there is not exactly one.
fn the_serving<'a>(env: &str, r: &Rollout, family: &'a [GroupInfo]) -> Result<&'a GroupInfo> {
    let s = serving(family);
    if let Some(g) = s.launching.first() {
        return Err(Error::Gate {
            message: format!(
                "group {} is still being brought into `{env}` by a promotion that did not finish",
                g.name
            ),
            hint: Some(format!(
                "if that run is dead, `pipe clean` (on its host) or `pipe rollback {env}` brings the group it was replacing back and removes it"
            )),
        });
    }
    match s.serving.as_slice() {
        [one] => Ok(one),
        [] => Err(Error::runtime(
            format!(
                "no group of `{env}` has capacity (looked at {}{})",
                r.group,
                family
                    .iter()
                    .filter(|g| g.name != r.group)
                    .map(|g| format!(", {}", g.name))
                    .collect::<String>()
            ),
            Some(format!(
                "give group {} a desired capacity (or create it), then promote",
                r.group
            )),
        )),
        many => Err(Error::runtime(
            format!(
                "{} groups of `{env}` have capacity: {}",
                many.len(),
                many.iter()
                    .map(|g| format!("{} ({})", g.name, g.desired))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some(
                "a blue/green environment is served by one group at a time: scale the others to zero"
                    .into(),
            ),
        )),
    }
}

/// The group a promotion of `release` brings in: a kept group of the family that runs its
/// AMI (a rollback), else a new one by this name.
fn incoming_name(r: &Rollout, release: &Release) -> String {
    format!("{}-{}", r.group, release.alias)
}

fn kept_with<'a>(family: &'a [GroupInfo], ami: &str, serving: &str) -> Option<&'a GroupInfo> {
    family
        .iter()
        .find(|g| g.name != serving && g.tag(TAG_IMAGE) == Some(ami) && g.template.is_some())
}

/// What a blue/green promotion of `release` into `env` would do.
pub fn plan(
    client: &AwsClient,
    pf: &Pipelinefile,
    env: &str,
    r: &Rollout,
    release: &Release,
) -> Result<FleetPlan> {
    let pipeline = &pf.pipeline.name.value;
    let fam = family(client, pipeline, r)?;
    let old = the_serving(env, r, &fam)?;
    let (ami, before) = promote::planned_ami(client, pipeline, r, release)?;
    let cap = Capacity::of(old);
    let mut steps = vec![format!(
        "take the promotion lock {} (an SSM parameter)",
        promote::lock_name(pipeline, env)
    )];
    steps.extend(before);
    let kept = kept_with(&fam, &ami, &old.name);
    let name = kept.map_or_else(|| incoming_name(r, release), |g| g.name.clone());
    match kept {
        Some(g) => steps.push(format!(
            "scale kept group {} (release {}) back to {} instances ({}), attached to {}",
            g.name,
            g.tag(TAG_RELEASE).unwrap_or("?"),
            cap.desired,
            cap.tag(),
            targets_human(&old.target_groups)
        )),
        None => {
            let template = client.launch_template(&r.template)?.ok_or_else(|| {
                Error::runtime(
                    format!("launch template {} does not exist", r.template),
                    None,
                )
            })?;
            steps.push(format!(
                "create version {} of launch template {} from its default version {} with only the image changed to {ami}",
                template.latest_version + 1,
                r.template,
                template.default_version
            ));
            steps.push(format!(
                "create group {name} from that version: {} instances ({}), {}, the subnets, health checks and tags of {}",
                cap.desired,
                cap.tag(),
                targets_human(&old.target_groups),
                old.name
            ));
        }
    }
    steps.extend([
        format!(
            "wait until its {} instances are InService and healthy at every target group (up to {}s)",
            cap.desired,
            r.healthy_wait.as_secs()
        ),
        format!(
            "detach group {} from the target groups (its instances drain), scale it to zero and keep it for rollback",
            old.name
        ),
    ]);
    let doomed = to_delete(&fam, &old.name, &name, r.keep_previous);
    if !doomed.is_empty() {
        steps.push(format!(
            "delete older groups (keep_previous = {}): {}",
            r.keep_previous,
            doomed.join(", ")
        ));
    }
    steps.push(format!(
        "make that version the default of {}, protect {ami} from deregistration",
        r.template
    ));
    if let Some(p) = &r.ssm_parameter {
        steps.push(format!("write {ami} to SSM parameter {p} and read it back"));
    }
    Ok(FleetPlan {
        steps,
        json: json!({
            "strategy": "blue-green",
            "region": client.region(),
            "serving_group": old.name,
            "instances": cap.desired,
            "image_next": ami,
            "incoming_group": name,
            "reuses_kept_group": kept.is_some(),
            "launch_template": r.template,
            "delete_groups": doomed,
            "keep_previous": r.keep_previous,
            "ssm_parameter": r.ssm_parameter,
        }),
    })
}

fn targets_human(arns: &[String]) -> String {
    if arns.is_empty() {
        return "no target group".into();
    }
    let names: Vec<&str> = arns
        .iter()
        .map(|a| a.split('/').nth(1).unwrap_or(a))
        .collect();
    format!("target group{} {}", plural(names.len()), names.join(", "))
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Groups pipe made for the family that no longer serve, beyond the `keep` that stopped
/// serving last (`retiring`, the group serving until now, counts as the latest). Never the
/// incoming group, one with capacity, or one pipe did not make (it is not counted either).
fn to_delete(family: &[GroupInfo], retiring: &str, incoming: &str, keep: u32) -> Vec<String> {
    let mut previous: Vec<&GroupInfo> = family
        .iter()
        .filter(|g| g.name != incoming && (g.name == retiring || g.desired == 0))
        .collect();
    previous.sort_by_key(|g| {
        std::cmp::Reverse(if g.name == retiring {
            i64::MAX
        } else {
            retired_at(g)
        })
    });
    previous
        .into_iter()
        .filter(|g| g.tag(TAG_FAMILY).is_some())
        .skip(keep as usize)
        .map(|g| g.name.clone())
        .collect()
}

/// The explicit template version number group `name` ran, when no other group of the family
/// runs it and it is not `default` (the version just made the template's default).
fn version_of_deleted(family: &[GroupInfo], name: &str, default: &str) -> Option<i64> {
    let version = |g: &GroupInfo| g.template.as_ref().and_then(|t| t.version.clone());
    let v = family.iter().find(|g| g.name == name).and_then(version)?;
    let shared = family
        .iter()
        .any(|g| g.name != name && version(g).as_deref() == Some(v.as_str()));
    (!shared && v != default).then(|| v.parse().ok()).flatten()
}

/// When the group stopped serving (seconds since the epoch), else when it was made.
fn retired_at(g: &GroupInfo) -> i64 {
    g.tag(TAG_RETIRED)
        .and_then(|t| t.parse().ok())
        .unwrap_or(g.created)
}

/// Promotes `release` into `env` by a new group (see the module doc).
pub fn roll_out(
    runner: &mut Runner<'_>,
    client: &AwsClient,
    pf: &Pipelinefile,
    env: &str,
    r: &Rollout,
    release: &Release,
    printer: &Printer,
) -> Result<RolledOut> {
    let region = client.region().to_string();
    let endpoint = client.endpoint().map(str::to_string);
    let destroyer = || Destroyer::with_aws(client.clone());
    let pipeline = &pf.pipeline.name.value;

    let lock = promote::take_lock(runner, client, pipeline, env, release)?;
    let ami = promote::release_ami_step(runner, client, pf, env, r, release, printer)?;
    let fam = runner.step(&format!("read the groups of `{env}`"), |_| {
        family(client, pipeline, r)
    })?;
    let old = the_serving(env, r, &fam)?.clone();
    let cap = Capacity::of(&old);
    let tgs = old.target_groups.clone();
    if tgs.is_empty() {
        printer.warn(
            format!(
                "group {} is attached to no target group: the switch has no load balancer to move",
                old.name
            ),
            Some("attach the group to its target groups (not a classic load balancer)".into()),
        );
    }
    let kept = kept_with(&fam, &ami, &old.name).cloned();
    let name = kept
        .as_ref()
        .map_or_else(|| incoming_name(r, release), |g| g.name.clone());
    let group_res = Resource::Ec2Group {
        region: region.clone(),
        endpoint: endpoint.clone(),
        name: name.clone(),
        role: client.role().map(str::to_string),
    };
    let replaces = [
        (TAG_STATE, "launching".to_string()),
        (TAG_REPLACES, old.name.clone()),
        (TAG_REPLACES_CAPACITY, cap.tag()),
    ];

    let mut version_res = None;
    let version: String = match &kept {
        Some(g) => {
            runner.step(
                &format!(
                    "scale kept group {} back to {} instances",
                    g.name, cap.desired
                ),
                |runner| {
                    resource::create(runner, destroyer(), &group_res, || {
                        let mut tags: Vec<(&str, &str)> =
                            replaces.iter().map(|(k, v)| (*k, v.as_str())).collect();
                        tags.push((TAG_REUSED, "yes"));
                        client.tag_group(&g.name, &tags)?;
                        client.attach_target_groups(&g.name, &tgs)?;
                        client.set_capacity(&g.name, cap.min, cap.max, cap.desired)?;
                        Ok(())
                    })
                },
            )?;
            g.template
                .as_ref()
                .and_then(|t| t.version.clone())
                .unwrap_or_else(|| "$Default".into())
        }
        None => {
            let template = client.launch_template(&r.template)?.ok_or_else(|| {
                Error::runtime(
                    format!("launch template {} does not exist in {region}", r.template),
                    None,
                )
            })?;
            let (number, res) = promote::new_template_version(
                runner, client, pipeline, env, r, release, &template, &ami,
            )?;
            version_res = Some(res);
            let mut tags: Vec<(String, String, bool)> = old
                .tags
                .iter()
                .filter(|(k, _, _)| !k.starts_with("aws:") && !k.starts_with("pipe:"))
                .cloned()
                .collect();
            tags.extend(
                [
                    ("pipe:pipeline", pipeline.to_string()),
                    ("pipe:env", env.to_string()),
                    (TAG_FAMILY, r.group.clone()),
                    (TAG_RELEASE, release.alias.clone()),
                    (TAG_IMAGE, ami.clone()),
                ]
                .into_iter()
                .chain(replaces.iter().cloned())
                .map(|(k, v)| (k.to_string(), v, false)),
            );
            let spec = GroupSpec {
                name: name.clone(),
                template_id: template.id.clone(),
                version: number.to_string(),
                min: cap.min,
                max: cap.max,
                desired: cap.desired,
                subnets: old.subnets.clone(),
                zones: old.zones.clone(),
                target_groups: tgs.clone(),
                health_check_type: old.health_check_type.clone(),
                health_check_grace: old.health_check_grace,
                tags,
            };
            runner.step(
                &format!(
                    "create group {name}: {} instances of {ami} ({})",
                    cap.desired,
                    targets_human(&tgs)
                ),
                |runner| {
                    resource::create(runner, destroyer(), &group_res, || {
                        client.create_group(&spec).map_err(|e| {
                            super::failed(format!("creating Auto Scaling group {name}"))(e)
                        })
                    })
                },
            )?;
            number.to_string()
        }
    };
    checkpoint(runner, "incoming group created")?;

    runner.step(
        &format!("wait until group {name} is healthy at every target group"),
        |_| {
            client
                .wait_group_serving(
                    &name,
                    cap.desired,
                    &tgs,
                    r.healthy_wait,
                    &crate::interrupt::requested,
                    &mut |line| printer.info(format!("group {name}: {line}")),
                )
            .map_err(|e| match e {
                AwsError::Interrupted => Error::Interrupted,
                e => Error::runtime(
                    format!("{e}: release {} never served", release.alias),
                    Some(format!(
                        "the group {} still serves; look at the new instances' health checks (their console output, the target group's reason) before promoting again",
                        old.name
                    )),
                )
                .caused_by(e),
            })
        },
    )?;
    checkpoint(runner, "incoming group healthy")?;

    runner.step(
        &format!("take group {} out of the target groups", old.name),
        |_| {
            let now = chrono::Utc::now().timestamp().to_string();
            client.tag_group(
                &old.name,
                &[(TAG_CAPACITY, &cap.tag()), (TAG_RETIRED, &now)],
            )?;
            client.detach_target_groups(&old.name, &tgs)?;
            client
                .wait_group_drained(
                    &old.name,
                    &tgs,
                    r.healthy_wait,
                    &crate::interrupt::requested,
                )
                .map_err(interrupted_or(format!("draining group {}", old.name)))
        },
    )?;
    checkpoint(runner, "old group detached")?;

    runner.step(
        &format!("scale group {} to zero and keep it", old.name),
        |_| {
            client.set_capacity(&old.name, 0, cap.max, 0)?;
            client
                .wait_group_empty(&old.name, r.healthy_wait, &crate::interrupt::requested)
                .map_err(interrupted_or(format!(
                    "scaling group {} to zero",
                    old.name
                )))
        },
    )?;
    checkpoint(runner, "old group scaled to zero")?;

    // The incoming group serves alone now: what made it so stays.
    client.tag_group(&name, &[(TAG_STATE, "serving")])?;
    runner.keep(&group_res)?;
    if let Some(v) = &version_res {
        runner.keep(v)?;
    }
    let mut unfinished = Vec::new();
    let mut finish = |what: String, result: Result<()>| {
        if let Err(e) = result {
            printer.warn(format!("{what}: {e}"), e.hint());
            unfinished.push(what);
        }
    };
    finish(
        format!("marking group {} as kept", old.name),
        client
            .tag_group(&old.name, &[(TAG_STATE, "previous")])
            .map_err(Error::from),
    );
    let template = client.launch_template(&r.template)?;
    if let (Some(t), Ok(n)) = (&template, version.parse::<i64>()) {
        finish(
            format!("making version {n} the default of {}", r.template),
            client.set_default_version(&t.id, n).map_err(Error::from),
        );
    }
    let fresh = family(client, pipeline, r).unwrap_or(fam);
    let doomed = to_delete(&fresh, &name, &name, r.keep_previous);
    for g in &doomed {
        finish(
            format!("deleting group {g} (keep_previous = {})", r.keep_previous),
            client.delete_group(g).map(|_| ()).map_err(Error::from),
        );
        // Its template version goes with it (so `pipe prune` can remove its AMI), unless it
        // is the default or another group runs it.
        if let (Some(t), Some(n)) = (&template, version_of_deleted(&fresh, g, &version)) {
            finish(
                format!("deleting version {n} of {} (group {g}'s)", r.template),
                client
                    .delete_template_version(&t.id, n)
                    .map(|_| ())
                    .map_err(Error::from),
            );
        }
    }
    promote::follow_ups(client, pipeline, env, r, release, &ami, &mut finish);
    runner.dispose(&lock)?;
    let summary = format!(
        "group {name} serves {ami} (launch template {} version {version}); group {} is kept at zero for rollback",
        r.template, old.name
    );
    let json = json!({
        "strategy": "blue-green",
        "region": region,
        "group": name,
        "previous_group": old.name,
        "image": ami,
        "previous_image": old.tag(TAG_IMAGE),
        "launch_template": r.template,
        "version": version,
        "deleted_groups": doomed,
        "ssm_parameter": r.ssm_parameter,
        "account_id": r.account_id,
        "unfinished": unfinished,
    });
    Ok(RolledOut {
        summary,
        json,
        unfinished,
    })
}

/// A pause point for the signal tests, and a look at Ctrl-C between steps: until the old
/// group is at zero and the new one marked serving, an interrupt undoes the promotion.
fn checkpoint(runner: &Runner<'_>, name: &str) -> Result<()> {
    runner.pause_point(name);
    if crate::interrupt::requested() {
        return Err(Error::Interrupted);
    }
    Ok(())
}

fn interrupted_or(what: String) -> impl FnOnce(AwsError) -> Error {
    move |e| match e {
        AwsError::Interrupted => Error::Interrupted,
        e => super::failed(what)(e),
    }
}

/// Rolls back a blue/green promotion of the family that is still bringing a group in (from
/// another terminal, or a dead run): the name of the group it was bringing in.
pub fn roll_back_running(
    client: &AwsClient,
    pipeline: &str,
    r: &Rollout,
    dry_run: bool,
    printer: &Printer,
) -> Result<Option<Running>> {
    let fam = family(client, pipeline, r)?;
    let Some(g) = serving(&fam).launching.first().map(|g| g.name.clone()) else {
        return Ok(None);
    };
    if !dry_run {
        printer.info(format!(
            "group {g} is being brought in by a promotion: bringing back {} and removing {g}",
            fam.iter()
                .find(|x| x.name == g)
                .and_then(|x| x.tag(TAG_REPLACES))
                .unwrap_or("the group it replaces")
        ));
        crate::interrupt::install();
        client
            .undo_incoming_group(&g, r.healthy_wait, &crate::interrupt::requested)
            .map_err(interrupted_or(format!("rolling back group {g}")))?;
    }
    Ok(Some(Running {
        what: format!("the promotion bringing in group {g}"),
        id: g,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, desired: i32, created: i64, tags: &[(&str, &str)]) -> GroupInfo {
        GroupInfo {
            name: name.into(),
            desired,
            min: desired.min(1),
            max: 4,
            template: None,
            target_groups: vec![],
            instances: vec![],
            subnets: None,
            zones: vec![],
            health_check_type: None,
            health_check_grace: None,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string(), false))
                .collect(),
            created,
        }
    }

    #[test]
    fn retention_keeps_the_groups_that_served_last_and_never_one_pipe_did_not_make() {
        fn fam<'a>(t: &'a str, at: &'a str) -> [(&'a str, &'a str); 3] {
            [(TAG_FAMILY, "web"), (TAG_STATE, t), (TAG_RETIRED, at)]
        }
        let groups = vec![
            group("web-new", 2, 50, &fam("launching", "")),
            // b was made before c but served after it (a rollback to b, then this promotion).
            group("web-c", 0, 40, &fam("previous", "100")),
            group("web-b", 2, 30, &fam("serving", "90")),
            group("web-a", 0, 20, &fam("previous", "80")),
            group("web", 0, 10, &[]), // Terraform's
        ];
        // Before the switch: the group serving now (b) is the latest to retire.
        assert_eq!(
            to_delete(&groups, "web-b", "web-new", 1),
            vec!["web-c", "web-a"]
        );
        assert_eq!(to_delete(&groups, "web-b", "web-new", 2), vec!["web-a"]);
        assert_eq!(
            to_delete(&groups, "web-b", "web-new", 0),
            vec!["web-b", "web-c", "web-a"]
        );
        assert!(to_delete(&groups, "web-b", "web-new", 3).is_empty());
        // After it: b is at zero with the latest retirement time.
        let after = vec![
            group("web-new", 2, 50, &fam("serving", "")),
            group("web-c", 0, 40, &fam("previous", "100")),
            group("web-b", 0, 30, &fam("previous", "200")),
            group("web", 0, 10, &[]),
        ];
        assert_eq!(to_delete(&after, "web-new", "web-new", 1), vec!["web-c"]);
    }

    #[test]
    fn a_deleted_groups_version_goes_unless_another_group_or_the_default_has_it() {
        let with = |name: &str, v: &str| GroupInfo {
            template: Some(crate::engine::aws::TemplateRef {
                id: Some("lt-1".into()),
                name: None,
                version: Some(v.into()),
            }),
            ..group(name, 0, 0, &[])
        };
        let fam = vec![
            with("web-c", "3"),
            with("web-b", "2"),
            with("web-a", "2"),
            with("web", "$Default"),
        ];
        assert_eq!(version_of_deleted(&fam, "web-c", "4"), Some(3));
        assert_eq!(version_of_deleted(&fam, "web-c", "3"), None, "the default");
        assert_eq!(
            version_of_deleted(&fam, "web-b", "4"),
            None,
            "web-a runs it too"
        );
        assert_eq!(version_of_deleted(&fam, "web", "4"), None, "not a number");
        assert_eq!(version_of_deleted(&fam, "gone", "4"), None);
    }

    #[test]
    fn exactly_one_group_serves_and_a_launching_one_is_named() {
        let r = Rollout::of(
            "production",
            &crate::config::Ec2Settings {
                auto_scaling_group: Some("web".into()),
                launch_template: Some("web".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let fam = vec![
            group(
                "web-b",
                2,
                30,
                &[(TAG_FAMILY, "web"), (TAG_STATE, "serving")],
            ),
            group("web", 0, 10, &[]),
        ];
        assert_eq!(the_serving("production", &r, &fam).unwrap().name, "web-b");
        let two = vec![group("web-b", 2, 30, &[]), group("web", 1, 10, &[])];
        let e = the_serving("production", &r, &two).unwrap_err().to_string();
        assert!(e.contains("2 groups") && e.contains("web-b (2)"), "{e}");
        let none = vec![group("web", 0, 10, &[])];
        let e = the_serving("production", &r, &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no group"), "{e}");
        let flight = vec![
            group("web-c", 2, 40, &[(TAG_STATE, "launching")]),
            group("web", 2, 10, &[]),
        ];
        let e = the_serving("production", &r, &flight)
            .unwrap_err()
            .to_string();
        assert!(e.contains("web-c") && e.contains("did not finish"), "{e}");
    }
}
