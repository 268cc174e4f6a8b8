//! Switching an environment that a target runs as a fleet it rolls itself, instead of machine
//! by machine ([`super::switch`]): on ec2, an Auto Scaling group moved to the release's AMI by
//! a launch template version and an instance refresh. The command around it (gates, the plan's
//! report, the ledger) stays the same for every target.

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
