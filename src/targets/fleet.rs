//! Switching an environment that a target runs as a fleet it rolls itself, instead of machine
//! by machine ([`super::switch`]): on ec2, an Auto Scaling group moved to the release's AMI by
//! a launch template version and an instance refresh. The command around it (gates, the plan's
//! report, the ledger) stays the same for every target.

use serde::{Deserialize, Serialize};

use crate::config::Pipelinefile;
use crate::error::Result;
use crate::ledger::Release;
use crate::runner::Runner;
use crate::ui::Printer;

/// What a roll-out would do, for `--plan`.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetPlan {
    /// The steps, in order, as a person reads them.
    pub steps: Vec<String>,
    /// The same for `--json`: what runs now, what would run, the settings.
    pub json: serde_json::Value,
}

/// What a finished roll-out did.
#[derive(Debug, Clone, PartialEq)]
pub struct RolledOut {
    /// One line: where the release runs now.
    pub summary: String,
    /// Extra fields of the `--json` result.
    pub json: serde_json::Value,
    /// What failed after the fleet already ran the release (the promotion stands; these
    /// need a person).
    pub unfinished: Vec<String>,
}

/// A roll-out in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// Its id (an instance refresh's id, the incoming group's name).
    pub id: String,
    /// What it is, as a person reads it (`instance refresh 1a2b`, `the promotion bringing in
    /// group web-3f`).
    pub what: String,
}

/// What an environment's fleet runs, against the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetStatus {
    /// What was looked at, and what it holds (`group`, `ponyfoo version 3: ami-...`).
    pub rows: Vec<(String, String)>,
    /// Every way it differs from the ledger's current release, or defeats rollback.
    pub drift: Vec<String>,
    pub json: serde_json::Value,
}

/// An environment's fleet (see the module doc).
pub trait Fleet {
    /// What [`Fleet::roll_out`] would do; changes nothing.
    fn plan(&self, pf: &Pipelinefile, env: &str, release: &Release) -> Result<FleetPlan>;

    /// What serves `env` now, compared with `current` (the ledger's current release there).
    fn status(
        &self,
        pf: &Pipelinefile,
        env: &str,
        current: Option<&Release>,
    ) -> Result<FleetStatus>;

    /// Rolls back a roll-out of `env` that is still running (started by a promotion in
    /// another terminal, or by one that died), and waits until what ran before runs again;
    /// what was rolled back, `None` when nothing was running. `dry_run` only looks.
    fn roll_back_running(
        &self,
        pf: &Pipelinefile,
        env: &str,
        dry_run: bool,
        printer: &Printer,
    ) -> Result<Option<Running>>;

    /// Moves `env` to the release. On a failure, Ctrl-C or SIGTERM, what serves runs the
    /// previous release again before this returns (the error says why).
    fn roll_out(
        &self,
        runner: &mut Runner<'_>,
        pf: &Pipelinefile,
        env: &str,
        release: &Release,
        printer: &Printer,
    ) -> Result<RolledOut>;
}

/// Who held an environment's promotion lock, as the lock says (each field `None` when it
/// did not say).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// The run that took it.
    pub run: Option<String>,
    /// `user@host`.
    pub who: Option<String>,
    /// RFC 3339, UTC.
    pub since: Option<String>,
    /// The release it was promoting (alias).
    pub release: Option<String>,
}

impl LockHolder {
    /// Reads a lock's value (`{"run", "who", "since", "release"}`); a value that is not such
    /// JSON is kept as `who`, shortened, so a broken lock is still recorded as found.
    pub fn parse(value: &str) -> Self {
        serde_json::from_str(value).unwrap_or_else(|_| Self {
            who: Some(value.chars().take(200).collect()),
            ..Self::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_holder_is_read_leniently() {
        let h = LockHolder::parse(
            r#"{"run":"r1","who":"bob@ci","since":"2025-01-01T10:00:00Z","release":"abc"}"#,
        );
        assert_eq!(h.run.as_deref(), Some("r1"));
        assert_eq!(h.who.as_deref(), Some("bob@ci"));
        let odd = LockHolder::parse("held by hand");
        assert_eq!(odd.who.as_deref(), Some("held by hand"));
        assert_eq!(odd.run, None);
    }
}
