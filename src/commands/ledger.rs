//! `pipe ledger push`: moves the local ledger (`.pipe/ledger.jsonl`) into the shared ledger the
//! Pipelinefile's `[ledger]` names. Entries keep their bytes, so the chain and its hashes are
//! the same in S3. Refused when the local chain is broken, or when S3 already holds a chain
//! that is not the start of the local one; a push that stopped half-way is finished by the next.
//! Afterwards the file is kept as `.pipe/ledger.jsonl.pushed` (and its anchor as
//! `ledger.head.pushed`): no command reads it again, and nothing is lost.

use crate::cli::LedgerCommand;
use crate::config::LedgerSettings;
use crate::error::{Error, Result};
use crate::ledger::Ledger;

use super::Ctx;

pub fn run(ctx: &Ctx, cmd: LedgerCommand) -> Result<()> {
    match cmd {
        LedgerCommand::Push => push(ctx),
    }
}

fn push(ctx: &Ctx) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let LedgerSettings::S3(settings) = &pf.ledger else {
        return Err(Error::usage(
            "the Pipelinefile keeps the ledger in .pipe/ledger.jsonl: there is nowhere to push it",
            Some(
                "add `[ledger]` with `backend = \"s3\"`, `bucket` and `prefix` (README: \"Sharing the ledger\"), then push"
                    .into(),
            ),
        ));
    };
    let ledger = Ledger::of_shared(&pf, settings)?;
    let shared = ledger.shared().expect("opened shared");
    let location = shared.location().to_string();
    let local = ledger.path().to_path_buf();
    if !local.exists() {
        return Err(Error::usage(
            format!("there is no local ledger to push ({})", local.display()),
            None,
        ));
    }
    let lines = ledger.local_lines()?;
    let remote = shared.raw_entries()?;
    let same = remote.iter().zip(&lines).position(|(r, l)| r != l);
    if let Some(i) = same {
        return Err(different(&location, i + 1));
    }
    if !shared.push(&lines, remote.len())? {
        return Err(Error::runtime(
            format!("someone appended to {location} while the local ledger was being pushed"),
            Some("run `pipe ledger push` again: it compares the chains again and pushes what is missing".into()),
        ));
    }
    let kept = local.with_extension("jsonl.pushed");
    let head = local.with_extension("head");
    let rename = |from: &std::path::Path, to: &std::path::Path| {
        std::fs::rename(from, to).map_err(|e| {
            Error::runtime(
                format!(
                    "pushed, but renaming {} to {}: {e}",
                    from.display(),
                    to.display()
                ),
                Some(
                    "rename it by hand: commands refuse a local ledger next to a shared one".into(),
                ),
            )
        })
    };
    rename(&local, &kept)?;
    if head.exists() {
        rename(&head, &local.with_extension("head.pushed"))?;
    }
    // S3 may hold more: the local file is then an older copy of the same chain.
    let pushed = lines.len().saturating_sub(remote.len());
    ctx.printer.result(
        "ledger",
        serde_json::json!({
            "pushed": pushed, "entries": lines.len(), "location": location,
            "kept": kept.display().to_string(),
        }),
        &format!(
            "pushed {pushed} of {} entries to {location}{}\n  the local file is kept as {}; every command now reads and appends in S3",
            lines.len(),
            if pushed < lines.len() {
                format!(" ({} were there already)", lines.len() - pushed)
            } else {
                String::new()
            },
            kept.display()
        ),
    );
    Ok(())
}

/// The S3 ledger holds another chain than the local one, differing from `seq` on.
fn different(location: &str, seq: usize) -> Error {
    Error::usage(
        format!(
            "{location} already holds a different ledger: its seq {seq} is not the local ledger's"
        ),
        Some(
            "pick another `prefix` in [ledger], or keep the ledger in S3 and move .pipe/ledger.jsonl aside"
                .into(),
        ),
    )
}
