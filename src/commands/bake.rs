//! `pipe bake`: base and app layers for an environment's target (reused by digest), verified on
//! a fresh machine, recorded in the ledger as a release. A failed verification is recorded too
//! (an unpromotable release) and exits with code 4.

use sha2::{Digest, Sha256};

use crate::cli::BakeArgs;
use crate::config::vars;
use crate::error::{Error, Result};
use crate::ledger::{self, Event, Ledger, Release, VerifyOutcome};
use crate::plan::Plan;
use crate::runner::{Journal, Runner};
use crate::state;
use crate::targets::{self, Artifacts, Target, layers::bake};

use super::promote::local_flag;
use super::{Ctx, local};

pub fn run(ctx: &Ctx, args: BakeArgs) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    // Before anything starts: a finding of error severity stops the bake here.
    if !args.no_lint {
        super::lint::check(ctx, &pf)?;
    }
    let sel = local::selection(ctx, args.local, args.target.clone());
    let plan = crate::plan::make(&pf, &sel, ctx.printer)?;
    let target =
        targets::open(plan.target, &pf).map_err(|e| local::remote_hint(ctx, e, &plan.env))?;
    crate::interrupt::install();
    let printer = ctx.printer;
    let journal = Journal::start(&state::dir(&pf.root), "bake", &pf.pipeline.name.value)?;
    let mut runner = Runner::new(journal, printer);
    let before = verified_before(&pf, &plan, target.kind())?;
    let result = bake(
        &mut runner,
        &*target,
        &plan,
        args.keep_on_error,
        args.skip_verify,
        before.as_ref(),
        printer,
    );
    let baked = runner.finish(result)?;
    record_release(ctx, &plan, &*target, baked.artifacts, baked.verify)
}

/// The newest release of this environment and target that passed `[verify]` with the same
/// app digest and the same Pipelinefile text (a rejected one does not count).
fn verified_before(
    pf: &crate::config::Pipelinefile,
    plan: &Plan,
    kind: crate::config::TargetKind,
) -> Result<Option<crate::targets::layers::VerifiedBefore>> {
    let ledger = crate::ledger::Ledger::of(pf)?;
    let entries = ledger.checked_entries()?;
    let (views, _) = crate::ledger::releases(&entries);
    let text = hex::encode(Sha256::digest(pf.source.as_bytes()));
    let app = plan.digests.app.to_string();
    Ok(views
        .iter()
        .rev()
        .find(|v| {
            let r = &v.release;
            r.env == plan.env
                && r.target == kind
                && r.app_digest == app
                && r.pipelinefile_digest == text
                && v.status == crate::ledger::ReleaseStatus::Verified
        })
        .and_then(|v| {
            Some(crate::targets::layers::VerifiedBefore {
                alias: v.release.alias.clone(),
                outcome: v.release.verify.clone()?,
            })
        }))
}

/// Records a bake's release in the ledger under `plan.target` (its artifacts keyed by the
/// target kind, and region on a cloud), reports it, and fails with exit code 4 when its
/// verification failed.
fn record_release(
    ctx: &Ctx,
    plan: &Plan,
    target: &dyn Target,
    artifacts: Artifacts,
    outcome: Option<VerifyOutcome>,
) -> Result<()> {
    let pf = plan.pf;
    let release = Release {
        id: String::new(),
        alias: String::new(),
        pipeline: pf.pipeline.name.value.clone(),
        env: plan.env.clone(),
        target: target.kind(),
        artifacts: artifacts.ids,
        base_digest: plan.digests.base.to_string(),
        base_artifact: artifacts.base,
        snapshots: artifacts.snapshots,
        app_digest: plan.digests.app.to_string(),
        git_commit: plan.git_commit.clone(),
        git_dirty: vars::git_dirty(&pf.root),
        pipelinefile_digest: hex::encode(Sha256::digest(pf.source.as_bytes())),
        who: ledger::who(),
        when: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        verify: outcome,
    }
    .seal();
    let ledger = Ledger::of(pf)?;
    ledger.append(
        &release.who,
        Event::Bake {
            release: Box::new(release.clone()),
        },
    )?;
    report(ctx, plan, target, &release, &artifact_of(&release, target));
    let outcome = match &release.verify {
        None => "unverified",
        Some(v) if v.ok => "verified",
        Some(_) => "verify-failed",
    };
    let notice = super::notify::Notice {
        event: "bake",
        release: &release,
        env: &plan.env,
        outcome,
        previous: None,
        details: None,
        detail: None,
    };
    super::notify::send(pf, &notice, ctx.printer);
    match &release.verify {
        Some(VerifyOutcome { ok: false, excerpt }) => Err(Error::VerifyFailed(format!(
            "release {} is recorded and cannot be promoted\n---- last lines of the checks ----\n{excerpt}\n----",
            release.alias
        ))),
        _ => Ok(()),
    }
}

/// The artifacts a release records on the target it was baked on: `id`, or `id (region)`
/// for each region.
fn artifact_of(release: &Release, target: &dyn Target) -> String {
    release
        .artifacts_on(target.kind())
        .iter()
        .map(|a| match a.region {
            Some(r) => format!("{} ({r})", a.id),
            None => a.id.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn report(ctx: &Ctx, plan: &Plan, target: &dyn Target, release: &Release, artifact: &str) {
    let status = match &release.verify {
        None => "not verified (--skip-verify): cannot be promoted",
        Some(v) if v.ok => "verified",
        Some(_) => "verification FAILED: cannot be promoted",
    };
    let mut human = format!(
        "release {} (env {}, {}): {status}\n  {} {artifact} (app {}, base {})\n  commit {}{}",
        release.alias,
        release.env,
        release.target,
        target.artifact_noun(),
        plan.digests.app.short(),
        plan.digests.base.short(),
        release.git_commit,
        if release.git_dirty { " (dirty)" } else { "" },
    );
    // A release is promoted into environments that run on its target, or with --local into
    // any environment when it was baked on the local target.
    if release.verify.as_ref().is_some_and(|v| v.ok) {
        for (name, env) in &plan.pf.envs {
            let flag = local_flag(plan.pf, name, target.kind());
            let promotable = flag.is_empty() || target.kind() == crate::plan::LOCAL;
            if promotable
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
