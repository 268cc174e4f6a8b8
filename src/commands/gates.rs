//! The gates a release passes before it becomes current in an environment (exit code 5 when
//! one refuses): what `pipe promote` and `pipe rollback` check before they switch anything.

use crate::config::{Pipelinefile, TargetKind};
use crate::error::{Error, Result};
use crate::ledger::{ReleaseStatus, ReleaseView};
use crate::plan;

/// A refusing gate (exit code 5).
pub fn gate(message: impl Into<String>, hint: Option<String>) -> Error {
    Error::Gate {
        message: message.into(),
        hint,
    }
}

/// ` --local` when ENV's declared target differs from where it runs.
pub fn local_flag(pf: &Pipelinefile, env: &str, target: TargetKind) -> &'static str {
    if pf.envs.get(env).is_some_and(|e| e.target.value != target) {
        " --local"
    } else {
        ""
    }
}

/// The gates every promotion passes (exit code 5 when one refuses).
pub fn gates(
    pf: &Pipelinefile,
    env: &str,
    source: &str,
    target: TargetKind,
    view: &ReleaseView,
) -> Result<()> {
    let r = &view.release;
    let why = match view.status {
        ReleaseStatus::Verified => None,
        ReleaseStatus::Unverified => Some("was never verified (baked with --skip-verify)"),
        ReleaseStatus::Failed => Some("failed verification"),
        ReleaseStatus::Rejected => Some("was rejected (`pipe reject`)"),
    };
    if let Some(why) = why {
        return Err(gate(
            format!("release {} {why}: it cannot be promoted", r.alias),
            Some(format!("bake a new one: pipe bake --env {}", r.env)),
        ));
    }
    if r.target != target {
        let flag = local_flag(pf, env, target);
        return Err(gate(
            format!(
                "release {} was baked on {}, and `{env}` runs on {target} here",
                r.alias, r.target
            ),
            Some(if flag.is_empty() && r.target == plan::LOCAL {
                format!(
                    "releases baked with --local are promoted with --local: pipe promote {env} --local"
                )
            } else {
                format!("bake for {target}: pipe bake --env {}{flag}", r.env)
            }),
        ));
    }
    if r.env != source && r.env != env {
        return Err(gate(
            format!(
                "release {} was baked in `{}`; `{env}` takes releases from `{source}`",
                r.alias, r.env
            ),
            None,
        ));
    }
    Ok(())
}
