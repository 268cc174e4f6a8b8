//! `pipe rollback ENV`: re-promotes the release that was current in ENV before the current one,
//! through the same path (and gates) as `pipe promote`. Twice in a row returns to the start.

use crate::cli::RollbackArgs;
use crate::error::{Error, Result};
use crate::ledger::{Ledger, find_release, previous_release, releases};
use crate::state;

use super::Ctx;
use super::promote::{Kind, env_target, gate, gates, switch};

pub fn run(ctx: &Ctx, args: RollbackArgs) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let target = env_target(ctx, &pf, &args.env, args.local)?;
    let ledger = Ledger::open(&state::dir(&pf.root));
    let entries = ledger.checked_entries()?;
    let (views, current) = releases(&entries);
    let env = args.env.as_str();
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
    gates(&pf, env, &source, target.kind(), view).map_err(|e| match e {
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
    })?;
    switch(
        ctx,
        &pf,
        &ledger,
        &views,
        &current,
        env,
        &*target,
        view,
        args.plan,
        Kind::Rollback,
    )
}
