//! `pipe history [--env NAME] [--verify]`: the ledger (bakes, verifications, promotions,
//! rollbacks, rejections, approvals, broken locks, prunes), oldest first; `--verify` checks its hash
//! chain and names the first bad line.

use crate::cli::HistoryArgs;
use crate::error::{Error, Result};
use crate::ledger::{ChainCheck, Entry, Event, Ledger, entry_env, releases};

use super::Ctx;

pub fn run(ctx: &Ctx, args: HistoryArgs) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let ledger = Ledger::of(&pf)?;
    if args.verify {
        return verify(ctx, &ledger);
    }
    let entries = ledger.entries()?;
    let (views, _) = releases(&entries);
    // An environment the Pipelinefile does not have is a usage error, not an empty list.
    if let Some(e) = ctx.global.env.as_deref() {
        crate::plan::pick_env(&pf, Some(e))?;
    }
    let env = ctx.global.env.as_deref();
    let shown: Vec<&Entry> = entries
        .iter()
        .filter(|e| env.is_none_or(|want| entry_env(e, &views).as_deref() == Some(want)))
        .collect();
    let short = |id: &str| id.get(..10).unwrap_or(id).to_string();
    let mut human = String::new();
    if shown.is_empty() {
        human.push_str("the ledger is empty");
    }
    for e in &shown {
        let what = match &e.event {
            Event::Bake { release } => format!(
                "bake      {:<12} {} {} ({})",
                release.env,
                release.alias,
                match &release.verify {
                    None => "unverified",
                    Some(v) if v.ok => "verified",
                    Some(_) => "verification failed",
                },
                release.target
            ),
            Event::Verify { release, outcome } => format!(
                "verify    {:<12} {} {}",
                entry_env(e, &views).unwrap_or_default(),
                short(release),
                if outcome.ok { "passed" } else { "failed" }
            ),
            Event::Promote {
                release,
                env,
                ok,
                previous,
                detail,
            }
            | Event::Rollback {
                release,
                env,
                ok,
                previous,
                detail,
            } => format!(
                "{:<9} {env:<12} {} {}{}{}",
                if matches!(e.event, Event::Promote { .. }) {
                    "promote"
                } else {
                    "rollback"
                },
                short(release),
                if *ok { "ok" } else { "FAILED" },
                previous
                    .as_ref()
                    .map(|p| format!(" (was {})", short(p)))
                    .unwrap_or_default(),
                detail
                    .as_ref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
            Event::Reject { release, reason } => format!(
                "reject    {:<12} {}{}",
                entry_env(e, &views).unwrap_or_default(),
                short(release),
                reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
            Event::Approve { release, env } => {
                format!("approve   {env:<12} {}", short(release))
            }
            Event::Destroy {
                release,
                env,
                machine,
            } => format!(
                "destroy   {env:<12} {} (machine {machine} removed; {env} serves nothing)",
                short(release)
            ),
            Event::Prune {
                release,
                env,
                images,
            } => {
                let gone: Vec<String> = images
                    .iter()
                    .map(|i| match &i.region {
                        Some(r) => format!("{} in {r}", i.id),
                        None => i.id.clone(),
                    })
                    .collect();
                format!(
                    "prune     {env:<12} {} {}",
                    short(release),
                    if gone.is_empty() {
                        "(nothing left to remove)".to_string()
                    } else {
                        format!("removed {}", gone.join(", "))
                    }
                )
            }
            Event::Share {
                release,
                env,
                account,
                region,
                image,
                snapshots,
            } => format!(
                "share     {env:<12} {} {image} in {region} and snapshots {} with account {account}",
                short(release),
                snapshots.join(", ")
            ),
            Event::BreakLock {
                env,
                holder,
                run,
                since,
                release,
            } => {
                let mut held = vec![format!("held by {holder}")];
                held.extend(since.as_ref().map(|s| format!("since {s}")));
                held.extend(release.as_ref().map(|r| format!("release {}", short(r))));
                held.extend(run.as_ref().map(|r| format!("run {r}")));
                format!("break-lock {env:<11} {}", held.join(", "))
            }
        };
        human.push_str(&format!(
            "{:>4}  {}  {:<20} {what}\n",
            e.seq,
            e.time,
            e.who.get(..20).unwrap_or(&e.who)
        ));
    }
    ctx.printer.result(
        "history",
        serde_json::to_value(&shown).expect("entries serialize"),
        &human,
    );
    Ok(())
}

fn verify(ctx: &Ctx, ledger: &Ledger) -> Result<()> {
    let location = ledger.location();
    let unit = ledger.unit();
    match ledger.verify()? {
        ChainCheck::Intact { entries, torn_tail } => {
            let mut human = format!("ledger intact: {entries} entries, every {unit} chained");
            if ledger.shared().is_some() {
                human.push_str(&format!(" ({location})"));
            }
            if torn_tail {
                human.push_str(
                    "\n  the last line is torn (a crash mid-append); it is not an entry and the next append sets it aside in ledger.torn",
                );
            }
            ctx.printer.result(
                "history",
                serde_json::json!({"intact": true, "entries": entries, "torn_tail": torn_tail}),
                &human,
            );
            Ok(())
        }
        ChainCheck::Broken { line, reason } => {
            let hint = match ledger.shared() {
                Some(shared) => format!(
                    "seqs before {line} are intact; compare {} and the entry before it with their earlier versions (turn on versioning for the bucket)",
                    shared.entry_key(line as u64)
                ),
                None => format!(
                    "lines before {line} are intact; compare line {line} and the one before it with a backup or the git history"
                ),
            };
            Err(Error::runtime(
                format!("ledger {location}: the chain breaks at {unit} {line}: {reason}"),
                Some(hint),
            ))
        }
    }
}
