//! `pipe releases [--env NAME]`: every release in the ledger, newest first, with its status,
//! where it is current, and who approved it for which environment.

use crate::error::Result;
use crate::ledger::{Ledger, ReleaseStatus, releases, user_of};

use super::Ctx;

pub fn run(ctx: &Ctx) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let entries = Ledger::of(&pf)?.checked_entries()?;
    let (views, _) = releases(&entries);
    // An environment the Pipelinefile does not have is a usage error, not an empty list.
    if let Some(e) = ctx.global.env.as_deref() {
        crate::plan::pick_env(&pf, Some(e))?;
    }
    let env = ctx.global.env.as_deref();
    let shown: Vec<_> = views
        .iter()
        .rev()
        .filter(|v| env.is_none_or(|e| v.release.env == e || v.current_in.iter().any(|c| c == e)))
        .collect();
    let mut human = String::new();
    if shown.is_empty() {
        human.push_str(&match env {
            Some(e) => format!("no releases for env `{e}` (pipe bake --env {e})"),
            None => "no releases yet (pipe bake --env NAME)".to_string(),
        });
    } else {
        human.push_str(&format!(
            "{:<11} {:<12} {:<7} {:<11} {:<16} {:<20} {:<10} {}\n",
            "RELEASE", "ENV", "TARGET", "STATUS", "CURRENT IN", "BAKED", "COMMIT", "APPROVED"
        ));
        for v in &shown {
            let r = &v.release;
            let status = match v.status {
                ReleaseStatus::Verified => "verified",
                ReleaseStatus::Unverified => "unverified",
                ReleaseStatus::Failed => "failed",
                ReleaseStatus::Rejected => "rejected",
                ReleaseStatus::Pruned => "pruned",
            };
            let current = if v.current_in.is_empty() {
                "-".to_string()
            } else {
                v.current_in.join(",")
            };
            let approved: Vec<String> = v
                .approvals
                .iter()
                .map(|a| format!("{} by {}", a.env, user_of(&a.who)))
                .collect();
            let commit = format!(
                "{}{}",
                r.git_commit,
                if r.git_dirty { " (dirty)" } else { "" }
            );
            human.push_str(&format!(
                "{:<11} {:<12} {:<7} {:<11} {:<16} {:<20} {:<10} {}\n",
                r.alias,
                r.env,
                r.target,
                status,
                current,
                r.when.get(..19).unwrap_or(&r.when),
                commit,
                if approved.is_empty() {
                    "-".to_string()
                } else {
                    approved.join(", ")
                }
            ));
            // A cloud release has an artifact per region: each is shown under it.
            let regional: Vec<String> = r
                .artifacts
                .iter()
                .filter(|(key, _)| key.contains(':'))
                .map(|(key, id)| format!("{key} {id}"))
                .collect();
            if !regional.is_empty() {
                human.push_str(&format!("{:<11} {}\n", "", regional.join(", ")));
            }
        }
    }
    ctx.printer.result(
        "releases",
        serde_json::to_value(&shown).expect("releases serialize"),
        &human,
    );
    Ok(())
}
