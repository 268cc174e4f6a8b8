//! `pipe clean`: removes what dead runs left behind, first by their journals
//! (`.pipe/journal/<run-id>.json` of runs whose process is gone), each resource through the one
//! destroy of its kind ([`crate::targets::resource`]) that the runs' own cleanups use; then by
//! label or tag, through each target the Pipelinefile has a box for ([`Target::sweep`]).
//! Results of runs (layers, machines, serving machines) carry no run label and are never
//! touched. A target that cannot be reached (no Docker engine on a host that only runs QEMU)
//! is skipped with a warning, not an error: its journaled resources are still listed.

use std::collections::BTreeSet;

use crate::cli::CleanArgs;
use crate::error::{Error, Result};
use crate::runner::journal::{self, JournalFile};
use crate::state;
use crate::targets::resource::Destroyer;
use crate::targets::{self, Target};

use super::Ctx;

pub fn run(ctx: &Ctx, args: CleanArgs) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let journals = journal::list(&state::dir(&pf.root))?;
    let live: BTreeSet<String> = journals
        .iter()
        .filter(|(_, f)| journal::is_alive(f))
        .map(|(_, f)| f.run_id.clone())
        .collect();
    let dead: Vec<&(std::path::PathBuf, JournalFile)> = journals
        .iter()
        .filter(|(_, f)| !live.contains(&f.run_id))
        .collect();
    let destroyer = Destroyer::default();
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut done: Vec<serde_json::Value> = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for (path, file) in dead {
        let mut left = Vec::new();
        for res in file.resources.iter().rev() {
            let outcome = if args.dry_run {
                Ok(true)
            } else {
                destroyer.destroy(res)
            };
            match outcome {
                Ok(existed) => {
                    let what = if existed {
                        res.to_string()
                    } else {
                        format!("{res} (already gone)")
                    };
                    lines.push(format!(
                        "{verb} {what}  [run {} of `pipe {}`]",
                        file.run_id, file.command
                    ));
                    done.push(serde_json::json!({"run": file.run_id, "resource": res, "existed": existed}));
                }
                Err(e) => {
                    failures.push(format!("{res} (run {}): {e}", file.run_id));
                    left.push(res.clone());
                }
            }
        }
        if !args.dry_run {
            if left.is_empty() {
                std::fs::remove_file(path)?;
            } else {
                let mut kept = file.clone();
                kept.resources = left;
                let data = serde_json::to_vec_pretty(&kept).expect("journal serializes");
                state::write_atomic(path, &data)?;
            }
        }
        lines.push(format!("{verb} journal {}", file.run_id));
    }
    // By label or tag: what a run created before (or without) writing its journal.
    for kind in pf.boxes.kinds() {
        let target: Box<dyn Target> = match targets::open(kind, &pf) {
            Ok(t) => t,
            // A target this pipe cannot run creates nothing to sweep.
            Err(Error::NotImplemented(_)) => continue,
            Err(e) => {
                ctx.printer.warn(
                    format!("{kind}: leftovers without a journal were not looked for: {e}"),
                    e.hint(),
                );
                continue;
            }
        };
        for swept in target.sweep(&pf, &live, args.dry_run)? {
            let res = &swept.resource;
            if let Some(e) = &swept.error {
                failures.push(format!("{res}: {e}"));
                continue;
            }
            lines.push(format!(
                "{verb} {res}  [labelled {}={}]",
                swept.label, swept.run
            ));
            done.push(serde_json::json!({"run": swept.run, "resource": res, "existed": true}));
        }
    }
    if !live.is_empty() {
        lines.push(format!(
            "left alone: {} run(s) still in progress ({})",
            live.len(),
            live.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let human = if lines.is_empty() {
        "nothing to clean".to_string()
    } else {
        lines.join("\n")
    };
    ctx.printer.result(
        "clean",
        serde_json::json!({"dry_run": args.dry_run, "removed": done, "in_progress": live}),
        &human,
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::Cleanup {
            error: None,
            failures,
        })
    }
}
