//! `pipe verify [RELEASE]`: runs `[verify]` again on a fresh machine from a release's image and
//! records the outcome. A release that fails becomes unpromotable (exit code 4).

use crate::cli::VerifyArgs;
use crate::error::{Error, Result};
use crate::ledger::{Event, Ledger, find_release, releases, who};
use crate::runner::{Journal, Runner};
use crate::state;
use crate::targets::{
    self,
    verify::{verdict, verify},
};

use super::promote::release_plan;
use super::{Ctx, local};

pub fn run(ctx: &Ctx, args: VerifyArgs) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let ledger = Ledger::of(&pf)?;
    let entries = ledger.checked_entries()?;
    let (views, _) = releases(&entries);
    let view = match &args.release {
        Some(key) => find_release(&views, key).map_err(|m| Error::usage(m, None))?,
        None => {
            let env = ctx.global.env.as_deref();
            views
                .iter()
                .rev()
                .find(|v| env.is_none_or(|e| v.release.env == e))
                .ok_or_else(|| {
                    Error::usage(
                        "no release to verify",
                        Some("pipe bake --env NAME".to_string()),
                    )
                })?
        }
    };
    crate::interrupt::install();
    let alias = view.release.alias.clone();
    let kind = view.release.target;
    let target =
        targets::open(kind, &pf).map_err(|e| local::remote_hint(ctx, e, &view.release.env))?;
    // What the release is, checked before the run starts (a missing image or artifact is a
    // plain error, with no journal to clean).
    let artifact = target.release_artifact(&view.release)?;
    let plan = release_plan(ctx, &pf, view)?;
    let journal = Journal::start(&state::dir(&pf.root), "verify", &pf.pipeline.name.value)?;
    let mut runner = Runner::new(journal, ctx.printer);
    let result = runner.judged_step(
        &format!("verify release {alias} on a fresh machine"),
        |r| verify(r, &*target, &plan, &artifact, ctx.printer),
        verdict,
    );
    let outcome = runner.finish(result)?;
    ledger.append(
        &who(),
        Event::Verify {
            release: view.release.id.clone(),
            outcome: outcome.clone(),
        },
    )?;
    ctx.printer.result(
        "verify",
        serde_json::json!({"release": view.release.id, "alias": alias, "ok": outcome.ok, "excerpt": outcome.excerpt}),
        &format!(
            "release {alias}: verification {}",
            if outcome.ok { "passed" } else { "FAILED: it cannot be promoted" }
        ),
    );
    if outcome.ok {
        Ok(())
    } else {
        Err(Error::VerifyFailed(format!(
            "release {alias}\n---- last lines of the checks ----\n{}\n----",
            outcome.excerpt
        )))
    }
}
