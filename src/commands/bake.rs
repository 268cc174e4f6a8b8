//! `pipe bake`: base and app layers for an environment's target (reused by digest), verified on
//! a fresh machine, recorded in the ledger as a release. A failed verification is recorded too
//! (an unpromotable release) and exits with code 4.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::cli::BakeArgs;
use crate::config::{TargetKind, vars};
use crate::error::{Error, Result};
use crate::ledger::{self, Event, Ledger, Release, VerifyOutcome};
use crate::plan::Plan;
use crate::runner::{Journal, Runner};
use crate::state;
use crate::engine::docker::DockerClient;
use crate::targets::docker::build;
use crate::targets::docker::verify;

use super::{Ctx, local};

pub fn run(ctx: &Ctx, args: BakeArgs) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let sel = local::selection(ctx, args.local, args.target.clone());
    let plan = crate::plan::make(&pf, &sel, ctx.printer)?;
    match plan.target {
        TargetKind::Docker => bake_docker(ctx, &plan, &args),
        TargetKind::Qemu => bake_qemu(ctx, &plan, &args),
        TargetKind::Ec2 => {
            ctx.printer.warn(
                format!("env `{}` bakes on ec2", plan.env),
                Some(format!(
                    "`pipe bake --env {} --local` bakes it on the local Docker engine",
                    plan.env
                )),
            );
            Err(Error::NotImplemented("bake on ec2"))
        }
    }
}

fn bake_docker(ctx: &Ctx, plan: &Plan, args: &BakeArgs) -> Result<()> {
    crate::interrupt::install();
    let pf = plan.pf;
    let printer = ctx.printer;
    let client = DockerClient::connect()?;
    let journal = Journal::start(&state::dir(&pf.root), "bake", &pf.pipeline.name.value)?;
    let mut runner = Runner::new(journal, printer);
    let result = (|| {
        let box_image = local::docker_box_image(&client, pf, printer)?;
        let (_, app) = build::build_layers(
            &mut runner,
            &client,
            plan,
            &box_image,
            args.keep_on_error,
            printer,
        )?;
        let outcome = if args.skip_verify {
            None
        } else {
            let step = format!("verify app image {}", plan.digests.app.short());
            Some(runner.step(&step, |r| {
                verify::verify_image(r, &client, plan, &app, printer)
            })?)
        };
        Ok((app, outcome))
    })();
    let (app, outcome) = runner.finish(result)?;
    record_release(ctx, plan, app, outcome)
}

fn bake_qemu(ctx: &Ctx, plan: &Plan, args: &BakeArgs) -> Result<()> {
    let baked =
        crate::targets::qemu::bake::bake(plan, args.keep_on_error, args.skip_verify, ctx.printer)?;
    record_release(
        ctx,
        plan,
        baked.artifact.display().to_string(),
        baked.verify,
    )
}

/// Records a bake's release in the ledger under `plan.target` (its one artifact keyed by the
/// target kind), reports it, and fails with exit code 4 when its verification failed.
fn record_release(
    ctx: &Ctx,
    plan: &Plan,
    artifact: String,
    outcome: Option<VerifyOutcome>,
) -> Result<()> {
    let pf = plan.pf;
    let release = Release {
        id: String::new(),
        alias: String::new(),
        pipeline: pf.pipeline.name.value.clone(),
        env: plan.env.clone(),
        target: plan.target.to_string(),
        artifacts: BTreeMap::from([(plan.target.to_string(), artifact)]),
        base_digest: plan.digests.base.to_string(),
        app_digest: plan.digests.app.to_string(),
        git_commit: plan.git_commit.clone(),
        git_dirty: vars::git_dirty(&pf.root),
        pipelinefile_digest: hex::encode(Sha256::digest(pf.source.as_bytes())),
        who: ledger::who(),
        when: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        verify: outcome,
    }
    .seal();
    let ledger = Ledger::open(&state::dir(&pf.root));
    ledger.append(
        &release.who,
        Event::Bake {
            release: Box::new(release.clone()),
        },
    )?;
    report(ctx, plan, &release);
    match &release.verify {
        Some(VerifyOutcome { ok: false, excerpt }) => Err(Error::VerifyFailed(format!(
            "release {} is recorded and cannot be promoted\n---- last lines of the checks ----\n{excerpt}\n----",
            release.alias
        ))),
        _ => Ok(()),
    }
}

fn report(ctx: &Ctx, plan: &Plan, release: &Release) {
    let status = match &release.verify {
        None => "not verified (--skip-verify): cannot be promoted",
        Some(v) if v.ok => "verified",
        Some(_) => "verification FAILED: cannot be promoted",
    };
    let mut human = format!(
        "release {} (env {}, {}): {status}\n  {} {} (app {}, base {})\n  commit {}{}",
        release.alias,
        release.env,
        release.target,
        if release.target == "docker" {
            "app image"
        } else {
            "artifact"
        },
        release
            .artifacts
            .get(&release.target)
            .map_or("", String::as_str),
        plan.digests.app.short(),
        plan.digests.base.short(),
        release.git_commit,
        if release.git_dirty { " (dirty)" } else { "" },
    );
    // Promotion runs docker releases (ec2 environments with --local) and qemu releases (into
    // environments that run on qemu); ec2 promotion is not built.
    if release.verify.as_ref().is_some_and(|v| v.ok) {
        let local = if plan.pf.envs[&plan.env].target.value != plan.target {
            " --local"
        } else {
            ""
        };
        for (name, env) in &plan.pf.envs {
            let flag = match plan.target {
                TargetKind::Docker => Some(local),
                TargetKind::Qemu if env.target.value == TargetKind::Qemu => Some(""),
                _ => None,
            };
            if let Some(flag) = flag
                && env.promote_from.as_ref().map(|p| p.value.as_str()) == Some(plan.env.as_str())
            {
                human.push_str(&format!("\n  next: pipe promote {name}{flag}"));
            }
        }
    }
    ctx.printer.result(
        "bake",
        serde_json::to_value(release).expect("releases serialize"),
        &human,
    );
}
