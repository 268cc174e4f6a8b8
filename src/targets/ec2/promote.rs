//! Promotion on EC2, the refresh strategy: the environment's Auto Scaling group is moved to the
//! release's AMI by a new launch template version (the current default with only the image
//! changed, as an explicit AMI id) and an instance refresh with auto-rollback; once it
//! succeeded, the version becomes the template's default, the AMI is protected from
//! deregistration, and the SSM parameter names it (read back).
//!
//! Each step's resource is journaled: the promotion lock (an SSM parameter written only if
//! absent, so two hosts never promote one environment at once), the template version (deleted
//! unless the promotion succeeded), the refresh (rolled back unless it succeeded). A failure,
//! Ctrl-C or SIGTERM during the refresh rolls it back and waits until the group runs what it
//! ran before; `pipe clean` does the same for a killed run.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::config::{Ec2Settings, Pipelinefile, Strategy, TargetKind};
use crate::engine::aws::{
    AwsClient, GroupInfo, IMAGE_DATA_TYPE, RefreshInfo, RefreshStart, TemplateInfo,
};
use crate::error::{Error, Result};
use crate::ledger::Release;
use crate::runner::{Resource, Runner};
use crate::targets::fleet::{FleetPlan, LockHolder, RolledOut};
use crate::targets::resource::{self, Destroyer};
use crate::ui::Printer;

/// `min_healthy_percentage` when the environment does not set it (AWS's own default).
pub const DEFAULT_MIN_HEALTHY: i32 = 90;
/// Blue/green: groups kept at zero after a promotion when `keep_previous` is not set.
pub const DEFAULT_KEEP_PREVIOUS: u32 = 1;
/// Blue/green: how long new instances may take to be healthy everywhere when
/// `wait_timeout` is not set.
pub const BLUE_GREEN_WAIT: Duration = Duration::from_secs(900);
/// How long a refresh may take, by default.
const REFRESH_WAIT: Duration = Duration::from_secs(3600);
/// First and longest pause between looks at a refresh.
const POLL_FIRST: Duration = Duration::from_secs(2);
const POLL_MAX: Duration = Duration::from_secs(15);

/// What a promotion into an environment works with, from its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub group: String,
    pub template: String,
    pub ssm_parameter: Option<String>,
    pub min_healthy: i32,
    pub max_healthy: Option<i32>,
    pub warmup: Option<i32>,
    pub checkpoints: Vec<i32>,
    pub alarms: Vec<String>,
    pub wait: Duration,
    /// Encrypts the copy when the release's AMI is brought into this region.
    pub kms_key_id: Option<String>,
    /// The account the environment runs in, when not the one that bakes (it gets the AMI
    /// shared: [`super::share`]).
    pub account_id: Option<String>,
    pub strategy: Strategy,
    /// Blue/green: groups kept at zero after a promotion.
    pub keep_previous: u32,
    /// Blue/green: how long the incoming group may take to be healthy (and the old one to
    /// drain).
    pub healthy_wait: Duration,
}

impl Rollout {
    /// The environment's rollout settings; an error naming what is missing.
    pub fn of(env: &str, s: &Ec2Settings) -> Result<Self> {
        let missing = |key: &str| {
            Error::usage(
                format!(
                    "env `{env}` runs on ec2 but has no `{key}`: pipe promotes into an Auto Scaling group through its launch template"
                ),
                Some(format!(
                    "add `auto_scaling_group = \"...\"` and `launch_template = \"...\"` to [env.{env}]"
                )),
            )
        };
        Ok(Self {
            group: s
                .auto_scaling_group
                .clone()
                .ok_or_else(|| missing("auto_scaling_group"))?,
            template: s
                .launch_template
                .clone()
                .ok_or_else(|| missing("launch_template"))?,
            ssm_parameter: s.ssm_parameter.clone(),
            min_healthy: s
                .refresh
                .min_healthy_percentage
                .unwrap_or(DEFAULT_MIN_HEALTHY),
            max_healthy: s.refresh.max_healthy_percentage,
            warmup: s.refresh.instance_warmup,
            checkpoints: s.refresh.checkpoints.clone(),
            alarms: s.refresh.alarms.clone(),
            wait: s.wait_timeout.map_or(REFRESH_WAIT, Duration::from_secs),
            kms_key_id: s.kms_key_id.clone(),
            account_id: s.account_id.clone(),
            strategy: s.strategy,
            keep_previous: s.keep_previous.unwrap_or(DEFAULT_KEEP_PREVIOUS),
            healthy_wait: s.wait_timeout.map_or(BLUE_GREEN_WAIT, Duration::from_secs),
        })
    }

    fn settings_json(&self) -> serde_json::Value {
        json!({
            "min_healthy_percentage": self.min_healthy,
            "max_healthy_percentage": self.max_healthy,
            "instance_warmup": self.warmup,
            "checkpoints": self.checkpoints,
            "alarms": self.alarms,
            "auto_rollback": true,
        })
    }

    fn settings_human(&self) -> String {
        let mut s = format!("min healthy {}%", self.min_healthy);
        if let Some(m) = self.max_healthy {
            s.push_str(&format!(", max healthy {m}%"));
        }
        if let Some(w) = self.warmup {
            s.push_str(&format!(", warm-up {w}s"));
        }
        if !self.checkpoints.is_empty() {
            let c: Vec<String> = self.checkpoints.iter().map(|c| format!("{c}%")).collect();
            s.push_str(&format!(", checkpoints at {}", c.join(", ")));
        }
        if !self.alarms.is_empty() {
            s.push_str(&format!(", alarms {}", self.alarms.join(", ")));
        }
        s.push_str(", auto-rollback");
        s
    }
}

/// The SSM parameter that is an environment's promotion lock.
pub fn lock_name(pipeline: &str, env: &str) -> String {
    format!("/pipe/{pipeline}/{env}/promotion-lock")
}

/// The release's AMI in `region`.
pub fn ami_in(release: &Release, region: &str) -> Result<String> {
    let artifacts = release.artifacts_on(TargetKind::Ec2);
    artifacts
        .iter()
        .find(|a| a.region == Some(region))
        .map(|a| a.id.to_string())
        .ok_or_else(|| {
            let have: Vec<String> = artifacts
                .iter()
                .map(|a| a.region.unwrap_or("?").to_string())
                .collect();
            Error::runtime(
                format!(
                    "release {} has no AMI in {region} (it has AMIs in: {})",
                    release.alias,
                    have.join(", ")
                ),
                Some(format!(
                    "bake with `ami_regions = [\"{region}\"]` in [env.{}], or promote in the region it was baked in",
                    release.env
                )),
            )
        })
}

/// The release's AMI in the client's region: recorded in the release, or a copy a promotion
/// made (found by the app digest's tag).
pub fn release_ami(
    client: &AwsClient,
    pipeline: &str,
    release: &Release,
) -> Result<Option<String>> {
    if let Ok(ami) = ami_in(release, client.region()) {
        return Ok(Some(ami));
    }
    Ok(super::copies::find(client, pipeline, &release.app_digest)?.map(|i| i.id))
}

/// The release's AMI in `client`'s region; copied there from the region it was baked in
/// (encrypted with `kms_key_id` when set, tagged like the original, journaled) when it is
/// not there yet.
pub(super) fn bring_ami(
    runner: &mut Runner<'_>,
    client: &AwsClient,
    pipeline: &str,
    r: &Rollout,
    release: &Release,
    printer: &Printer,
) -> Result<String> {
    if let Some(ami) = release_ami(client, pipeline, release)? {
        return Ok(ami);
    }
    let artifacts = release.artifacts_on(TargetKind::Ec2);
    let source = artifacts
        .iter()
        .find(|a| a.region.is_some())
        .ok_or_else(|| Error::runtime(format!("release {} has no ec2 AMI", release.alias), None))?;
    let from = source.region.expect("found with a region");
    let source_client = client.in_region(from)?;
    let image = source_client
        .image(source.id)?
        .filter(|i| i.state == "available")
        .ok_or_else(|| {
            Error::runtime(
                format!(
                    "release {}'s AMI {} in {from} is gone",
                    release.alias, source.id
                ),
                Some(format!("bake again: pipe bake --env {}", release.env)),
            )
        })?;
    let region = client.region().to_string();
    let kms_keys: std::collections::BTreeMap<String, String> = r
        .kms_key_id
        .iter()
        .map(|k| (region.clone(), k.clone()))
        .collect();
    let short: String = release
        .app_digest
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect();
    let plan = super::copies::CopyPlan {
        source: &image,
        pipeline,
        digest: &release.app_digest,
        name: format!(
            "pipe-{pipeline}-app-{short}-{}",
            crate::targets::suffix(&runner.run_id())
        ),
        regions: std::slice::from_ref(&region),
        kms_keys: &kms_keys,
        wait: r.wait,
    };
    let copies = super::copies::copy_to_regions(runner, &source_client, &plan, printer)?;
    copies
        .into_iter()
        .next()
        .map(|c| c.image.id)
        .ok_or_else(|| Error::runtime(format!("no copy of {} in {region}", source.id), None))
}

/// The group, its template, and the AMI the group's instances are configured with now.
struct Current {
    group: GroupInfo,
    template: TemplateInfo,
    /// The version the group names (`$Default`, `$Latest` or a number) and its image.
    group_version: String,
    group_image: Option<String>,
    default_image: Option<String>,
}

fn current(client: &AwsClient, r: &Rollout) -> Result<Current> {
    let group = client.group(&r.group)?.ok_or_else(|| {
        Error::runtime(
            format!(
                "Auto Scaling group {} does not exist in {}",
                r.group,
                client.region()
            ),
            Some("create it (Terraform, CloudFormation, the console) with the launch template, then promote".into()),
        )
    })?;
    let template = client.launch_template(&r.template)?.ok_or_else(|| {
        Error::runtime(
            format!(
                "launch template {} does not exist in {}",
                r.template,
                client.region()
            ),
            None,
        )
    })?;
    let Some(spec) = &group.template else {
        return Err(Error::runtime(
            format!(
                "Auto Scaling group {} is not configured with a launch template (a launch configuration or a mixed instances policy)",
                r.group
            ),
            Some(format!(
                "configure the group with launch template {}; launch configurations are retired by AWS",
                r.template
            )),
        ));
    };
    let names_it = spec.id.as_deref() == Some(template.id.as_str())
        || spec.name.as_deref() == Some(template.name.as_str());
    if !names_it {
        return Err(Error::runtime(
            format!(
                "Auto Scaling group {} runs launch template {}, not {}",
                r.group,
                spec.name.clone().or(spec.id.clone()).unwrap_or_default(),
                r.template
            ),
            Some("set `launch_template` to the group's template".into()),
        ));
    }
    let group_version = spec.version.clone().unwrap_or_else(|| "$Default".into());
    let group_image = client
        .template_version(&template.id, &group_version)?
        .and_then(|v| v.image);
    let default_image = client
        .template_version(&template.id, &template.default_version.to_string())?
        .and_then(|v| v.image);
    Ok(Current {
        group,
        template,
        group_version,
        group_image,
        default_image,
    })
}

/// The release's AMI in the client's region for a plan, or what it will be (`a copy of
/// ami-...`), with the steps that bring it there: a copy, sharing with the environment's
/// account.
pub(super) fn planned_ami(
    client: &AwsClient,
    pipeline: &str,
    r: &Rollout,
    release: &Release,
) -> Result<(String, Vec<String>)> {
    let found = release_ami(client.home(), pipeline, release)?;
    let share = super::share::plan(client, r.account_id.as_deref(), found.as_deref())?;
    let (ami, copy) = match found {
        Some(ami) => (ami, None),
        None => {
            let from = release
                .artifacts_on(TargetKind::Ec2)
                .into_iter()
                .find_map(|a| a.region.map(|reg| (reg.to_string(), a.id.to_string())))
                .ok_or_else(|| {
                    Error::runtime(format!("release {} has no ec2 AMI", release.alias), None)
                })?;
            (
                format!("a copy of {}", from.1),
                Some(format!(
                    "copy AMI {} from {} to {}{}",
                    from.1,
                    from.0,
                    client.region(),
                    r.kms_key_id
                        .as_deref()
                        .map_or(String::new(), |k| format!(", encrypted with {k}"))
                )),
            )
        }
    };
    Ok((ami, copy.into_iter().chain(share).collect()))
}

/// The step that brings the release's AMI into the client's region (the account that baked
/// owns the AMI and its copies) and shares it with the environment's account when that is
/// another one; the AMI id.
pub(super) fn release_ami_step(
    runner: &mut Runner<'_>,
    client: &AwsClient,
    pf: &Pipelinefile,
    env: &str,
    r: &Rollout,
    release: &Release,
    printer: &Printer,
) -> Result<String> {
    let pipeline = &pf.pipeline.name.value;
    runner.step(
        &format!("the release's AMI in {}", client.region()),
        |runner| {
            let ami = bring_ami(runner, client.home(), pipeline, r, release, printer)?;
            let account = r.account_id.as_deref();
            super::share::grant(client, pf, env, account, release, &ami, printer)?;
            Ok(ami)
        },
    )
}

/// What promoting `release` into `env` would do.
pub fn plan(
    client: &AwsClient,
    pf: &Pipelinefile,
    env: &str,
    r: &Rollout,
    release: &Release,
) -> Result<FleetPlan> {
    let c = current(client, r)?;
    let (ami, before) = planned_ami(client, &pf.pipeline.name.value, r, release)?;
    let now = c.group_image.clone().unwrap_or_else(|| "nothing".into());
    let next = c.template.latest_version + 1;
    let mut steps = vec![format!(
        "take the promotion lock {} (an SSM parameter)",
        lock_name(&pf.pipeline.name.value, env)
    )];
    steps.extend(before);
    steps.extend([
        format!(
            "create version {next} of launch template {} from its default version {} with only the image changed: {} -> {ami}",
            r.template,
            c.template.default_version,
            c.default_image.as_deref().unwrap_or("none"),
        ),
        format!(
            "instance refresh of group {} ({} instances, running {now} from version {}): {}",
            r.group,
            c.group.instances.len(),
            c.group_version,
            r.settings_human()
        ),
        format!(
            "make version {next} the default of {}, protect {ami} from deregistration",
            r.template
        ),
    ]);
    if let Some(p) = &r.ssm_parameter {
        steps.push(format!("write {ami} to SSM parameter {p} and read it back"));
    }
    Ok(FleetPlan {
        steps,
        json: json!({
            "region": client.region(),
            "group": r.group,
            "instances": c.group.instances.len(),
            "image_now": c.group_image,
            "image_next": ami,
            "launch_template": r.template,
            "version_now": c.group_version,
            "version_next": next,
            "refresh": r.settings_json(),
            "ssm_parameter": r.ssm_parameter,
            "account_id": r.account_id,
        }),
    })
}

/// Promotes `release` into `env` (see the module doc).
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

    let lock = take_lock(runner, client, pipeline, env, release)?;

    let ami = release_ami_step(runner, client, pf, env, r, release, printer)?;
    let c = runner.step(
        &format!("read group {} and launch template {}", r.group, r.template),
        |_| current(client, r),
    )?;
    let before = c.group_image.clone().unwrap_or_else(|| "nothing".into());

    let (version, version_res) =
        new_template_version(runner, client, pipeline, env, r, release, &c.template, &ami)?;
    printer.info(format!(
        "launch template {} version {version}: {ami} (from version {}, {})",
        r.template,
        c.template.default_version,
        c.default_image.as_deref().unwrap_or("no image")
    ));

    let refresh_res = Resource::Ec2Refresh {
        region: region.clone(),
        endpoint: endpoint.clone(),
        group: r.group.clone(),
        role: client.role().map(str::to_string),
    };
    let start = RefreshStart {
        group: r.group.clone(),
        template_id: c.template.id.clone(),
        version: version.to_string(),
        min_healthy_percentage: r.min_healthy,
        max_healthy_percentage: r.max_healthy,
        instance_warmup: r.warmup,
        checkpoints: r.checkpoints.clone(),
        alarms: r.alarms.clone(),
    };
    let refreshed = runner.step(
        &format!("instance refresh of group {}", r.group),
        |runner| {
            let id = resource::create(runner, destroyer(), &refresh_res, || {
                client.start_refresh(&start).map_err(|e| {
                    let hint = (e.code() == Some("InstanceRefreshInProgress")).then(|| {
                        format!(
                            "another refresh of {} runs (someone else is deploying?): wait for it, or cancel it in the console",
                            r.group
                        )
                    });
                    Error::runtime(e.to_string(), hint.or(e.hint())).caused_by(e)
                })
            })?;
            printer.info(format!(
                "refresh {id} of group {}: {} -> {ami} ({})",
                r.group,
                before,
                r.settings_human()
            ));
            watch(client, &r.group, &id, r.wait, &before, printer)
        },
    )?;
    // The group runs the release now: what made it so stays, whatever happens next.
    runner.keep(&refresh_res)?;
    runner.keep(&version_res)?;

    let mut unfinished = Vec::new();
    let mut finish = |what: String, result: Result<()>| {
        if let Err(e) = result {
            printer.warn(format!("{what}: {e}"), e.hint());
            unfinished.push(what);
        }
    };
    finish(
        format!("making version {version} the default of {}", r.template),
        client
            .set_default_version(&c.template.id, version)
            .map_err(Error::from),
    );
    follow_ups(client, pipeline, env, r, release, &ami, &mut finish);
    runner.dispose(&lock)?;
    let summary = format!(
        "group {} runs {ami} (launch template {} version {version}, refresh {})",
        r.group, r.template, refreshed.id
    );
    let json = json!({
        "region": region,
        "group": r.group,
        "image": ami,
        "previous_image": c.group_image,
        "launch_template": r.template,
        "version": version,
        "refresh": refreshed.id,
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

/// A version of the environment's launch template made from its default version with only
/// the image changed to `ami`, journaled (deleted by the run's cleanup unless kept); its
/// number and the journaled resource.
#[allow(clippy::too_many_arguments)]
pub(super) fn new_template_version(
    runner: &mut Runner<'_>,
    client: &AwsClient,
    pipeline: &str,
    env: &str,
    r: &Rollout,
    release: &Release,
    template: &TemplateInfo,
    ami: &str,
) -> Result<(i64, Resource)> {
    let run = runner.run_id();
    let res = Resource::Ec2TemplateVersion {
        region: client.region().to_string(),
        endpoint: client.endpoint().map(str::to_string),
        template_id: template.id.clone(),
        run: run.clone(),
        role: client.role().map(str::to_string),
    };
    let number = runner.step(
        &format!(
            "create a version of launch template {} with {ami}",
            r.template
        ),
        |runner| {
            let description = format!(
                "pipe {pipeline}: release {} into {env} (run {run})",
                release.alias
            );
            resource::create(runner, Destroyer::with_aws(client.clone()), &res, || {
                Ok(client.create_template_version(
                    &template.id,
                    template.default_version,
                    ami,
                    &description,
                )?)
            })
        },
    )?;
    Ok((number, res))
}

/// Takes the environment's lock (journaled: released by the run's cleanup); the resource to
/// dispose of when the promotion is done.
pub(super) fn take_lock(
    runner: &mut Runner<'_>,
    client: &AwsClient,
    pipeline: &str,
    env: &str,
    release: &Release,
) -> Result<Resource> {
    let run = runner.run_id();
    let lock = Resource::PromotionLock {
        region: client.region().to_string(),
        endpoint: client.endpoint().map(str::to_string),
        name: lock_name(pipeline, env),
        run: run.clone(),
        role: client.role().map(str::to_string),
    };
    runner.step(&format!("lock promotions of `{env}`"), |runner| {
        resource::create(runner, Destroyer::with_aws(client.clone()), &lock, || {
            acquire(client, &lock_name(pipeline, env), &run, env, release)
        })
    })?;
    Ok(lock)
}

/// After the fleet runs the release: the AMI protected from deregistration, and the SSM
/// parameter written and read back; each failure goes to `finish` (the promotion stands).
pub(super) fn follow_ups(
    client: &AwsClient,
    pipeline: &str,
    env: &str,
    r: &Rollout,
    release: &Release,
    ami: &str,
    finish: &mut dyn FnMut(String, Result<()>),
) {
    finish(
        format!("protecting {ami} from deregistration"),
        client.home().protect_image(ami).map_err(Error::from),
    );
    if let Some(p) = &r.ssm_parameter {
        finish(
            format!("writing {ami} to SSM parameter {p}"),
            write_parameter(client, p, ami, pipeline, env, release),
        );
    }
}

/// Takes the environment's lock: an SSM parameter written only if absent, naming the run.
fn acquire(client: &AwsClient, name: &str, run: &str, env: &str, release: &Release) -> Result<()> {
    let who = crate::ledger::who();
    let since = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let value =
        json!({"run": run, "who": who, "since": since, "release": release.alias}).to_string();
    let description = format!("pipe: a promotion of {env} is in progress");
    match client.put_parameter(name, &value, None, &description, false) {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("ParameterAlreadyExists") => {
            let holder = client
                .parameter(name)?
                .and_then(|p| serde_json::from_str::<serde_json::Value>(&p.value).ok())
                .unwrap_or_default();
            let field = |k: &str| holder[k].as_str().unwrap_or("?").to_string();
            Err(crate::error::Error::Gate {
                message: format!(
                    "another promotion of `{env}` is in progress: {} since {} (release {}, run {})",
                    field("who"),
                    field("since"),
                    field("release"),
                    field("run")
                ),
                hint: Some(format!(
                    "wait for it; if that run is dead, `pipe promote {env} --break-lock` removes its lock (recorded in the ledger)"
                )),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Removes the lock `name` of `env` (`pipe promote ENV --break-lock`) unless its run is in
/// `live`; who held it, or `None` when there was no lock (or it went away meanwhile: its run
/// finished). SSM has no conditional delete: a lock taken again between the read and the
/// delete would be removed too, which is why this is for a lock whose run is known dead.
pub fn break_lock(
    client: &AwsClient,
    name: &str,
    env: &str,
    live: &std::collections::BTreeSet<String>,
) -> Result<Option<LockHolder>> {
    let Some(p) = client.parameter(name)? else {
        return Ok(None);
    };
    let holder = LockHolder::parse(&p.value);
    if let Some(run) = holder.run.as_ref().filter(|r| live.contains(*r)) {
        return Err(Error::Gate {
            message: format!(
                "the promotion lock of `{env}` is held by run {run}, which is still running on this host"
            ),
            hint: Some("wait for it, or stop it with Ctrl-C (its cleanup removes the lock)".into()),
        });
    }
    if !client.delete_parameter(name)? {
        return Ok(None);
    }
    Ok(Some(holder))
}

/// Writes the AMI to the environment's SSM parameter (data type `aws:ec2:image`) and reads
/// it back.
fn write_parameter(
    client: &AwsClient,
    name: &str,
    ami: &str,
    pipeline: &str,
    env: &str,
    release: &Release,
) -> Result<()> {
    let description = format!(
        "pipe {pipeline}: the AMI of {env} (release {})",
        release.alias
    );
    client.put_parameter(name, ami, Some(IMAGE_DATA_TYPE), &description, true)?;
    match client.parameter(name)? {
        Some(p) if p.value == ami => Ok(()),
        found => Err(Error::runtime(
            format!(
                "SSM parameter {name} reads {} after writing {ami}",
                found.map_or("nothing".into(), |p| p.value)
            ),
            None,
        )),
    }
}

/// Follows a refresh until it ends, showing its progress; an error unless it succeeded. On
/// Ctrl-C it returns at once (the journaled refresh is rolled back by the cleanup).
fn watch(
    client: &AwsClient,
    group: &str,
    id: &str,
    limit: Duration,
    before: &str,
    printer: &Printer,
) -> Result<RefreshInfo> {
    let started = Instant::now();
    let mut interval = POLL_FIRST;
    let mut shown = String::new();
    let mut paused = false;
    loop {
        let seen = client.refresh(group, id)?.ok_or_else(|| {
            Error::runtime(
                format!("instance refresh {id} of group {group} is gone"),
                None,
            )
        })?;
        let line = progress(&seen);
        if line != shown {
            printer.info(format!("refresh {id}: {line}"));
            shown = line;
        }
        if seen.status == "InProgress" && !paused {
            paused = true;
            crate::runner::pause_point(printer, "instance refresh in progress");
        }
        match seen.status.as_str() {
            "Successful" => return Ok(seen),
            s if seen.ended() => {
                let why = seen
                    .rollback_reason
                    .clone()
                    .or(seen.reason.clone())
                    .unwrap_or_else(|| "no reason given".into());
                let back = if s == "RollbackSuccessful" {
                    format!("; it was rolled back and the group runs {before} again")
                } else {
                    String::new()
                };
                return Err(Error::runtime(
                    format!("instance refresh {id} of group {group} ended {s}: {why}{back}"),
                    Some(format!(
                        "the new instances did not pass the group's health checks in time? `aws autoscaling describe-instance-refreshes --auto-scaling-group-name {group}` has the details"
                    )),
                ));
            }
            _ => {}
        }
        if started.elapsed() > limit {
            return Err(Error::runtime(
                format!(
                    "instance refresh {id} of group {group} did not end within {}s (last seen: {})",
                    limit.as_secs(),
                    seen.status
                ),
                Some(
                    "raise `wait_timeout` for the environment; pipe rolled the refresh back".into(),
                ),
            ));
        }
        let until = Instant::now() + interval;
        while Instant::now() < until {
            if crate::interrupt::requested() {
                return Err(Error::Interrupted);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        interval = (interval.mul_f64(1.5)).min(POLL_MAX);
    }
}

/// `40% done, 1 instance to update (InProgress)`.
fn progress(r: &RefreshInfo) -> String {
    let mut s = match r.percent {
        Some(p) => format!("{p}% done"),
        None => "starting".into(),
    };
    if let Some(n) = r.instances_to_update {
        s.push_str(&format!(
            ", {n} instance{} to update",
            if n == 1 { "" } else { "s" }
        ));
    }
    s.push_str(&format!(" ({})", r.status));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refresh(status: &str, percent: Option<i32>, left: Option<i32>) -> RefreshInfo {
        RefreshInfo {
            id: "r-1".into(),
            status: status.into(),
            reason: None,
            percent,
            instances_to_update: left,
            rollback_reason: None,
        }
    }

    #[test]
    fn progress_reads_like_a_sentence() {
        assert_eq!(
            progress(&refresh("InProgress", Some(50), Some(1))),
            "50% done, 1 instance to update (InProgress)"
        );
        assert_eq!(
            progress(&refresh("Pending", None, None)),
            "starting (Pending)"
        );
        assert_eq!(
            progress(&refresh("Successful", Some(100), Some(0))),
            "100% done, 0 instances to update (Successful)"
        );
    }

    #[test]
    fn a_rollout_needs_a_group_and_a_template() {
        let e = Rollout::of("production", &Ec2Settings::default()).unwrap_err();
        assert!(e.to_string().contains("auto_scaling_group"), "{e}");
        let s = Ec2Settings {
            auto_scaling_group: Some("g".into()),
            launch_template: Some("t".into()),
            ..Ec2Settings::default()
        };
        let r = Rollout::of("production", &s).unwrap();
        assert_eq!(r.min_healthy, DEFAULT_MIN_HEALTHY);
        assert_eq!(
            lock_name("p", "production"),
            "/pipe/p/production/promotion-lock"
        );
    }
}
