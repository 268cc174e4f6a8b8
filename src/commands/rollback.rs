//! `pipe rollback ENV`: re-promotes the release that was current in ENV before the current one,
//! through the same path (and gates) as `pipe promote`. Twice in a row returns to the start.
//! The release's own gates apply (a rejected release is not rolled back to); `min_soak` and
//! `require_approval` are skipped, since a rollback restores what ran there before.

use crate::cli::RollbackArgs;
use crate::error::{Error, Result};
use crate::ledger::{Ledger, find_release, previous_release, releases};

use super::Ctx;
use super::gates::{self, Promotion};
use super::promote::{Kind, env_target, gate, guard, switch};

pub fn run(ctx: &Ctx, args: RollbackArgs) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let target = env_target(ctx, &pf, &args.env, args.local)?;
    let ledger = Ledger::of(&pf)?;
    let entries = ledger.checked_entries()?;
    let (views, current) = releases(&entries);
    let env = args.env.as_str();
    // During a roll-out (another terminal's promotion, or one that died), rolling back means
    // stopping it: what ran before runs again, and the ledger never said otherwise.
    if let Some(fleet) = target.fleet()
        && let Some(running) = fleet.roll_back_running(&pf, env, args.plan, ctx.printer)?
    {
        let what = &running.what;
        let human = if args.plan {
            format!(
                "would roll back {what} of `{env}`, which is in progress\nnothing was changed (--plan)"
            )
        } else {
            format!("rolled back {what} of `{env}`: it runs what it ran before")
        };
        ctx.printer.result(
            "roll back",
            serde_json::json!({"env": env, "in_progress": running.id, "plan": args.plan}),
            &human,
        );
        return Ok(());
    }
    let Some(prev) = previous_release(&entries, env) else {
        return Err(gate(
            format!("`{env}` has no earlier release to roll back to"),
            Some(format!("`pipe history --env {env}` shows its promotions")),
        ));
    };
    let view = find_release(&views, &prev).map_err(|m| Error::runtime(m, None))?;
    let source = pf.envs[env]
        .promote_from
        .as_ref()
        .map_or(args.env.clone(), |p| p.value.clone());
    let verdicts = gates::check(
        &Promotion::new(&pf, env, &source, target.kind(), true),
        view,
    );
    let refused = || {
        gates::refusal(&verdicts).map(|e| match e {
            Error::Gate { message, .. } => gate(
                format!(
                    "cannot roll `{env}` back to {}: {message}",
                    view.release.alias
                ),
                Some(format!(
                    "promote a named release instead: pipe promote {env} --release ID"
                )),
            ),
            other => other,
        })
    };
    guard(
        ctx,
        env,
        view,
        &verdicts,
        args.plan,
        Kind::Rollback,
        refused(),
    )?;
    switch(
        ctx,
        &pf,
        &ledger,
        &views,
        &current,
        env,
        &*target,
        view,
        &verdicts,
        args.plan,
        Kind::Rollback,
    )?;
    refused().map_or(Ok(()), Err)
}
