//! `pipe reject RELEASE`: makes a release unpromotable, recorded in the ledger. A rejected
//! release that is current somewhere keeps running until something else is promoted.

use crate::cli::RejectArgs;
use crate::error::{Error, Result};
use crate::ledger::{Event, Ledger, ReleaseStatus, find_release, releases, who};

use super::Ctx;

pub fn run(ctx: &Ctx, args: RejectArgs) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let ledger = Ledger::of(&pf)?;
    let entries = ledger.checked_entries()?;
    let (views, _) = releases(&entries);
    let view = find_release(&views, &args.release).map_err(|m| Error::usage(m, None))?;
    let alias = &view.release.alias;
    if view.status == ReleaseStatus::Rejected {
        ctx.printer.result(
            "reject",
            serde_json::json!({"release": view.release.id, "alias": alias, "already": true}),
            &format!("release {alias} was already rejected"),
        );
        return Ok(());
    }
    ledger.append(
        &who(),
        Event::Reject {
            release: view.release.id.clone(),
            reason: args.reason.clone(),
        },
    )?;
    for env in &view.current_in {
        ctx.printer.warn(
            format!("release {alias} is still current in `{env}`"),
            Some(format!(
                "`pipe rollback {env}` or `pipe promote {env}` replaces it"
            )),
        );
    }
    ctx.printer.result(
        "reject",
        serde_json::json!({"release": view.release.id, "alias": alias, "reason": args.reason, "current_in": view.current_in}),
        &format!("release {alias} is rejected: it can no longer be promoted"),
    );
    Ok(())
}
