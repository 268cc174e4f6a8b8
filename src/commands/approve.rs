//! `pipe approve RELEASE --env NAME`: records in the ledger that whoever runs it approves the
//! release for promotion into NAME (the entry's `who` and `time` say by whom and when). An
//! environment with `require_approval = true` takes only releases approved by another user
//! than the one who promotes. Only a verified release from where NAME takes releases can be
//! approved.

use crate::cli::ApproveArgs;
use crate::error::{Error, Result};
use crate::ledger::{Event, Ledger, find_release, releases, user_of, who};

use super::Ctx;
use super::gates::{self, gate};

pub fn run(ctx: &Ctx, args: ApproveArgs) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let Some(env) = ctx.global.env.as_deref() else {
        return Err(Error::usage(
            "`pipe approve` needs --env NAME: the environment the release is approved for",
            Some(format!("pipe approve {} --env production", args.release)),
        ));
    };
    let env = crate::plan::pick_env(&pf, Some(env))?;
    let ledger = Ledger::of(&pf)?;
    let entries = ledger.checked_entries()?;
    let (views, _) = releases(&entries);
    let view = find_release(&views, &args.release).map_err(|m| Error::usage(m, None))?;
    let r = &view.release;
    let source = pf.envs[&env]
        .promote_from
        .as_ref()
        .map_or(env.clone(), |p| p.value.clone());
    for v in [gates::verified(view), gates::source(view, &env, &source)] {
        if v.refuses() {
            return Err(gate(
                format!(
                    "cannot approve release {} for `{env}`: {}",
                    r.alias, v.detail
                ),
                v.hint,
            ));
        }
    }
    let me = who();
    let required = pf.envs[&env].require_approval;
    let mut data = serde_json::json!({
        "release": r.id, "alias": r.alias, "env": env, "who": me,
        "require_approval": required,
    });
    if let Some(before) = view
        .approvals
        .iter()
        .find(|a| a.env == env && user_of(&a.who) == user_of(&me))
    {
        data["already"] = true.into();
        data["when"] = before.when.clone().into();
        ctx.printer.result(
            "approve",
            data,
            &format!(
                "release {} was already approved for `{env}` by {} at {}",
                r.alias, before.who, before.when
            ),
        );
        return Ok(());
    }
    let entry = ledger.append(
        &me,
        Event::Approve {
            release: r.id.clone(),
            env: env.clone(),
        },
    )?;
    if !required {
        ctx.printer.warn(
            format!("`{env}` does not require approval: the approval is recorded, and not needed"),
            Some(format!(
                "`require_approval = true` in [env.{env}] makes promotions wait for one"
            )),
        );
    }
    data["already"] = false.into();
    data["when"] = entry.time.clone().into();
    ctx.printer.result(
        "approve",
        data,
        &format!(
            "release {} is approved for `{env}` by {me}: someone other than {} may promote it (pipe promote {env} --release {})",
            r.alias,
            user_of(&me),
            r.alias
        ),
    );
    Ok(())
}
