//! `pipe promote ENV`: the newest release verified in the environment's `promote_from` (or the
//! one named) becomes current in ENV, after the gates: verified, not rejected, baked for the
//! same kind of target, not already serving there. `--plan` only says what would happen.
//! `pipe rollback` goes through [`switch`] too.

use std::path::{Path, PathBuf};

use crate::cli::PromoteArgs;
use crate::config::{Pipelinefile, TargetKind};
use crate::error::{Error, Result};
use crate::ledger::{Event, Ledger, ReleaseStatus, ReleaseView, find_release, releases, who};
use crate::plan::{self, Plan, Selection};
use crate::runner::{Journal, Runner};
use crate::state;
use crate::targets::docker::build::label;
use crate::targets::docker::promote::{self as docker_promote, Promotion};
use crate::engine::docker::{ContainerInfo, DockerClient};
use crate::targets::qemu::promote as qemu_promote;

use super::Ctx;

pub fn run(ctx: &Ctx, args: PromoteArgs) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let target = env_target(ctx, &pf, &args.env, args.local)?;
    let ledger = Ledger::open(&state::dir(&pf.root));
    let entries = ledger.entries()?;
    let (views, current) = releases(&entries);
    let source = pf.envs[&args.env]
        .promote_from
        .as_ref()
        .map_or(args.env.clone(), |p| p.value.clone());
    let view = match &args.release {
        Some(key) => find_release(&views, key).map_err(|m| Error::usage(m, None))?,
        None => views
            .iter()
            .rev()
            .find(|v| {
                v.release.env == source
                    && v.release.target == target.as_str()
                    && v.status == ReleaseStatus::Verified
            })
            .ok_or_else(|| {
                gate(
                    format!(
                        "no verified {target} release of env `{source}` to promote into `{}`",
                        args.env
                    ),
                    Some(format!(
                        "bake one first: pipe bake --env {source}{}",
                        local_flag(&pf, &args.env, target)
                    )),
                )
            })?,
    };
    gates(&pf, &args.env, &source, target, view)?;
    let kind = Kind::Promote;
    switch(
        ctx, &pf, &ledger, &views, &current, &args.env, target, view, args.plan, kind,
    )
}

/// A refusing gate (exit code 5).
pub fn gate(message: impl Into<String>, hint: Option<String>) -> Error {
    Error::Gate {
        message: message.into(),
        hint,
    }
}

/// Promotion or rollback: what the ledger records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Promote,
    Rollback,
}

/// The target ENV runs on (`--local`: docker), with ec2 refused for now.
pub fn env_target(ctx: &Ctx, pf: &Pipelinefile, env: &str, local: bool) -> Result<TargetKind> {
    let env = plan::pick_env(pf, Some(env))?;
    let sel = Selection {
        env: Some(env.clone()),
        local,
        target: None,
        cli_vars: ctx.global.vars.clone(),
    };
    match plan::effective_target(pf, &env, &sel)? {
        TargetKind::Docker => Ok(TargetKind::Docker),
        TargetKind::Qemu => Ok(TargetKind::Qemu),
        TargetKind::Ec2 => {
            ctx.printer.warn(
                format!("env `{env}` runs on ec2"),
                Some(format!(
                    "add --local to run `{env}` on the local Docker engine, from releases baked with --local"
                )),
            );
            Err(Error::NotImplemented("promote on ec2"))
        }
    }
}

/// ` --local` when ENV's declared target differs from where it runs.
pub fn local_flag(pf: &Pipelinefile, env: &str, target: TargetKind) -> &'static str {
    if pf.envs.get(env).is_some_and(|e| e.target.value != target) {
        " --local"
    } else {
        ""
    }
}

/// The gates every promotion passes (exit code 5 when one refuses).
pub fn gates(
    pf: &Pipelinefile,
    env: &str,
    source: &str,
    target: TargetKind,
    view: &ReleaseView,
) -> Result<()> {
    let r = &view.release;
    let why = match view.status {
        ReleaseStatus::Verified => None,
        ReleaseStatus::Unverified => Some("was never verified (baked with --skip-verify)"),
        ReleaseStatus::Failed => Some("failed verification"),
        ReleaseStatus::Rejected => Some("was rejected (`pipe reject`)"),
    };
    if let Some(why) = why {
        return Err(gate(
            format!("release {} {why}: it cannot be promoted", r.alias),
            Some(format!("bake a new one: pipe bake --env {}", r.env)),
        ));
    }
    if r.target != target.as_str() {
        let flag = local_flag(pf, env, target);
        return Err(gate(
            format!(
                "release {} was baked on {}, and `{env}` runs on {target} here",
                r.alias, r.target
            ),
            Some(if flag.is_empty() && r.target == "docker" {
                format!(
                    "releases baked with --local are promoted with --local: pipe promote {env} --local"
                )
            } else {
                format!("bake for {target}: pipe bake --env {}{flag}", r.env)
            }),
        ));
    }
    if r.env != source && r.env != env {
        return Err(gate(
            format!(
                "release {} was baked in `{}`; `{env}` takes releases from `{source}`",
                r.alias, r.env
            ),
            None,
        ));
    }
    Ok(())
}

/// The plan a release runs with: its own environment's, on its own target, so its services and
/// checks run exactly as they were verified.
pub fn release_plan<'a>(ctx: &Ctx, pf: &'a Pipelinefile, view: &ReleaseView) -> Result<Plan<'a>> {
    let r = &view.release;
    let plan = plan_of(ctx, pf, view)?;
    if plan.digests.app.to_string() != r.app_digest {
        ctx.printer.warn(
            format!(
                "the Pipelinefile changed since release {} was baked: its services and checks are taken from the current one",
                r.alias
            ),
            None,
        );
    }
    Ok(plan)
}

/// [`release_plan`] without the warning.
fn plan_of<'a>(ctx: &Ctx, pf: &'a Pipelinefile, view: &ReleaseView) -> Result<Plan<'a>> {
    let r = &view.release;
    if !pf.envs.contains_key(&r.env) {
        return Err(Error::usage(
            format!(
                "release {} belongs to env `{}`, which the Pipelinefile no longer has",
                r.alias, r.env
            ),
            None,
        ));
    }
    let sel = Selection {
        env: Some(r.env.clone()),
        local: r.target == "docker",
        // A qemu release may come from `pipe bake --target qemu` of another kind of env.
        target: (r.target == "qemu").then(|| r.target.clone()),
        cli_vars: ctx.global.vars.clone(),
    };
    plan::make(pf, &sel, ctx.printer)
}

/// The image a docker release is, checked to still exist.
pub fn release_image(client: &DockerClient, view: &ReleaseView) -> Result<String> {
    let r = &view.release;
    let id = r
        .artifacts
        .get("docker")
        .ok_or_else(|| Error::runtime(format!("release {} has no docker image", r.alias), None))?;
    match client.inspect_image(id)? {
        Some(img) => Ok(img.id),
        None => Err(Error::runtime(
            format!(
                "release {}'s image {id} is gone from this Docker engine",
                r.alias
            ),
            Some("bake again (`pipe destroy --layers` or `docker rmi` removed it)".to_string()),
        )),
    }
}

/// The qcow2 a qemu release is, checked to still exist.
pub fn release_artifact(view: &ReleaseView) -> Result<PathBuf> {
    let r = &view.release;
    let path =
        r.artifacts.get("qemu").map(PathBuf::from).ok_or_else(|| {
            Error::runtime(format!("release {} has no qemu artifact", r.alias), None)
        })?;
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::runtime(
            format!("release {}'s artifact {} is gone", r.alias, path.display()),
            Some(format!(
                "bake again: pipe bake --env {} (its file was removed from the artifact cache)",
                r.env
            )),
        ))
    }
}

/// What serves an environment now, on its target.
enum Serving {
    Docker {
        client: DockerClient,
        old: Vec<ContainerInfo>,
    },
    Qemu {
        old: Vec<qemu_promote::ServingVm>,
    },
}

impl Serving {
    fn find(pf: &Pipelinefile, env: &str, target: TargetKind) -> Result<Self> {
        match target {
            TargetKind::Docker => {
                let client = DockerClient::connect()?;
                let old = docker_promote::find_serving(
                    &client,
                    &pf.pipeline.name.value,
                    &crate::state::project_id(&pf.root),
                    env,
                )?;
                Ok(Serving::Docker { client, old })
            }
            TargetKind::Qemu => Ok(Serving::Qemu {
                old: qemu_promote::find_serving(pf, Some(env)),
            }),
            TargetKind::Ec2 => Err(Error::NotImplemented("promote on ec2")),
        }
    }

    /// What a serving machine is called in messages.
    fn noun(&self) -> &'static str {
        match self {
            Serving::Docker { .. } => "container",
            Serving::Qemu { .. } => "machine",
        }
    }

    /// Every serving machine: name, running, release id.
    fn machines(&self) -> Vec<(&str, bool, Option<&str>)> {
        match self {
            Serving::Docker { old, .. } => old
                .iter()
                .map(|c| {
                    (
                        c.name.as_str(),
                        c.running,
                        c.labels.get(label::RELEASE).map(String::as_str),
                    )
                })
                .collect(),
            Serving::Qemu { old } => old
                .iter()
                .map(|v| (v.name(), v.running(), v.rec.release.as_deref()))
                .collect(),
        }
    }

    fn running(&self) -> Vec<&str> {
        self.machines()
            .into_iter()
            .filter(|(_, running, _)| *running)
            .map(|(name, _, _)| name)
            .collect()
    }

    fn all(&self) -> Vec<&str> {
        self.machines().into_iter().map(|(name, ..)| name).collect()
    }
}

/// Makes `view` current in `env` (or only prints the plan), recording the outcome. The gates,
/// the plan, the ledger and the report are the same on every target; [`docker_promote`] and
/// [`qemu_promote`] do the switch itself.
#[allow(clippy::too_many_arguments)]
pub fn switch(
    ctx: &Ctx,
    pf: &Pipelinefile,
    ledger: &Ledger,
    views: &[ReleaseView],
    current: &std::collections::BTreeMap<String, String>,
    env: &str,
    target: TargetKind,
    view: &ReleaseView,
    dry_run: bool,
    kind: Kind,
) -> Result<()> {
    crate::interrupt::install();
    let pipeline = pf.pipeline.name.value.clone();
    let r = &view.release;
    let serving = Serving::find(pf, env, target)?;
    let previous = current.get(env).cloned();
    let serving_it = serving
        .machines()
        .iter()
        .any(|(_, running, release)| *running && *release == Some(r.id.as_str()));
    if previous.as_deref() == Some(r.id.as_str()) && serving_it {
        return Err(gate(
            format!("release {} is already current in `{env}`", r.alias),
            None,
        ));
    }
    // The image id, or the artifact's path.
    let artifact = match &serving {
        Serving::Docker { client, .. } => release_image(client, view)?,
        Serving::Qemu { .. } => release_artifact(view)?.display().to_string(),
    };
    let ports = docker_promote::host_ports(pf, env)?;
    let name = docker_promote::serving_name(&pipeline, env, &r.alias);
    let (repo, tag) = docker_promote::env_tag(&pipeline, env);
    let noun = serving.noun();
    let verb = match kind {
        Kind::Promote => "promote",
        Kind::Rollback => "roll back",
    };
    let ports_json: Vec<serde_json::Value> = ports
        .iter()
        .map(
            |p| serde_json::json!({"service": p.service, "host": "127.0.0.1", "port": p.host_port}),
        )
        .collect();
    if dry_run {
        let mut human = format!(
            "would {verb} `{env}` to release {} (baked in {} at {}, commit {}{}):\n",
            r.alias,
            r.env,
            r.when,
            r.git_commit,
            if r.git_dirty { ", dirty" } else { "" }
        );
        let what = match &serving {
            Serving::Docker { .. } => "image",
            Serving::Qemu { .. } => "artifact",
        };
        human.push_str(&format!(
            "  1. verify {what} {artifact} on a fresh machine\n"
        ));
        let mut n = 2;
        for old in serving.running() {
            human.push_str(&format!("  {n}. stop the old {noun} {old}\n"));
            n += 1;
        }
        if matches!(serving, Serving::Qemu { .. }) && serving.all().contains(&name.as_str()) {
            human.push_str(&format!("  {n}. remove the stopped machine {name}\n"));
            n += 1;
        }
        let published: Vec<String> = ports
            .iter()
            .map(|p| format!("{} on 127.0.0.1:{}", p.service, p.host_port))
            .collect();
        human.push_str(&format!(
            "  {n}. start {name}{}, wait for its services, verify again\n",
            if published.is_empty() {
                String::new()
            } else {
                format!(" ({})", published.join(", "))
            }
        ));
        n += 1;
        // A qemu machine of this very release was removed above.
        let remove: Vec<&str> = serving
            .all()
            .into_iter()
            .filter(|old| matches!(serving, Serving::Docker { .. }) || *old != name)
            .collect();
        for old in &remove {
            human.push_str(&format!("  {n}. remove the old {noun} {old}\n"));
            n += 1;
        }
        let mut data = serde_json::json!({
            "plan": true, "env": env, "release": r.id, "alias": r.alias,
            "stop": serving.running(), "remove": remove, "ports": ports_json,
        });
        match &serving {
            Serving::Docker { .. } => {
                human.push_str(&format!("  {n}. tag the image {repo}:{tag}\n"));
                data["image"] = artifact.clone().into();
                data["container"] = name.clone().into();
                data["tag"] = format!("{repo}:{tag}").into();
            }
            Serving::Qemu { .. } => {
                data["target"] = "qemu".into();
                data["artifact"] = artifact.clone().into();
                data["machine"] = name.clone().into();
            }
        }
        human.push_str("nothing was changed (--plan)");
        ctx.printer.result(verb, data, &human);
        return Ok(());
    }
    let plan = release_plan(ctx, pf, view)?;
    // What an old qemu VM runs if it has to boot again: its own release's services.
    let mut old_plans = Vec::new();
    if let Serving::Qemu { old } = &serving {
        for vm in old.iter().filter(|v| v.running()) {
            let own = vm
                .rec
                .release
                .as_deref()
                .and_then(|id| views.iter().find(|v| v.release.id == id))
                .and_then(|v| plan_of(ctx, pf, v).ok());
            if let Some(own) = own {
                old_plans.push((vm.name().to_string(), own));
            }
        }
    }
    let journal = Journal::start(&state::dir(&pf.root), verb, &pipeline)?;
    let mut runner = Runner::new(journal, ctx.printer);
    let result = match serving {
        Serving::Docker { client, old } => {
            let promotion = Promotion {
                plan: &plan,
                env,
                release: r,
                image: &artifact,
                old,
            };
            docker_promote::promote(&mut runner, &client, &promotion, ctx.printer)
                .map(|info| info.name)
        }
        Serving::Qemu { old } => {
            let promotion = qemu_promote::Promotion {
                plan: &plan,
                env,
                release: r,
                artifact: Path::new(&artifact),
                old,
                old_services: old_plans
                    .iter()
                    .map(|(name, p)| (name.clone(), p.services()))
                    .collect(),
            };
            qemu_promote::promote(&mut runner, &promotion, ctx.printer).map(|rec| rec.name)
        }
    };
    let result = runner.finish(result);
    let record = |ok: bool, detail: Option<String>| {
        let (release, env, previous) = (r.id.clone(), env.to_string(), previous.clone());
        let event = match kind {
            Kind::Promote => Event::Promote {
                release,
                env,
                ok,
                previous,
                detail,
            },
            Kind::Rollback => Event::Rollback {
                release,
                env,
                ok,
                previous,
                detail,
            },
        };
        ledger.append(&who(), event)
    };
    match result {
        Ok(new) => {
            record(true, None)?;
            let mut human = format!("`{env}` now runs release {} in {new}", r.alias);
            let mut data = serde_json::json!({
                "env": env, "release": r.id, "alias": r.alias, "previous": previous,
                "ports": ports_json,
            });
            if target == TargetKind::Qemu {
                human.push_str(&format!(" (a VM on {artifact})"));
                data["target"] = "qemu".into();
                data["machine"] = new.into();
                data["artifact"] = artifact.clone().into();
            } else {
                human.push_str(&format!(" (image {repo}:{tag})"));
                data["container"] = new.into();
                data["tag"] = format!("{repo}:{tag}").into();
            }
            for p in &ports {
                human.push_str(&format!(
                    "\n  {} http://127.0.0.1:{}/",
                    p.service, p.host_port
                ));
            }
            if let Some(prev) = &previous {
                human.push_str(&format!(
                    "\n  previous: {} (undo with `pipe rollback {env}{}`)",
                    &prev[..10.min(prev.len())],
                    local_flag(pf, env, target)
                ));
            }
            ctx.printer.result(verb, data, &human);
            Ok(())
        }
        Err(e) if e.exit_code() == crate::error::exit::INTERRUPTED => {
            // Nothing switched (or it was switched back): nothing to record.
            Err(e)
        }
        Err(e) => {
            let detail = e.to_string();
            let detail = detail.lines().next().unwrap_or("").to_string();
            record(false, Some(ctx.printer.redactor().redact(&detail)))?;
            Err(e)
        }
    }
}
