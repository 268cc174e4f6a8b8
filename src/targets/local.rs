//! What the machine-only commands (`up`, `halt`, `exec`, `ssh`, `logs`, `provision`, `status`,
//! `destroy`) need from a target that runs machines on this host: docker and qemu implement
//! [`LocalTarget`]; ec2 does not (its machines are images and instances, reached by `bake` and
//! `promote`).

use std::process::Command;

use crate::boxes::package_cache::{CacheRun, PackageCache};
use crate::communicators::Communicator;
use crate::config::{LayerName, Pipelinefile, TargetKind};
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::runner::{Resource, Runner};
use crate::state::MachineState;
use crate::ui::Printer;

use super::resource::{self, Destroyer};
use super::{ServicePort, Target};

/// What `pipe up` did.
pub struct UpReport {
    pub name: String,
    /// `up to date`, `started`, `created`, `replaced`.
    pub what: &'static str,
    /// Its entry in `.pipe/state.json`.
    pub state: MachineState,
    /// Published on 127.0.0.1.
    pub ports: Vec<ServicePort>,
    /// Said after the env in the human line (`, qemu, tcg`).
    pub detail: String,
    /// How to log in, when that is not `pipe ssh` alone (qemu: the ssh command).
    pub login: Option<String>,
    /// Target-specific fields of the `--json` result (accel, ssh port, console log).
    pub extra: serde_json::Value,
}

/// A running machine, reached through its communicator.
pub struct Running {
    pub name: String,
    pub comm: Box<dyn Communicator>,
}

/// A machine as `pipe status` lists it.
pub struct MachineRow {
    pub env: String,
    pub name: String,
    pub state: String,
    /// The app digest a `pipe up` machine runs (`None` for serving machines).
    pub digest: Option<String>,
    /// The release a serving machine runs.
    pub release: Option<String>,
    pub ports: Vec<String>,
    /// Its entry in `.pipe/state.json` (`pipe up` machines).
    pub state_entry: Option<MachineState>,
    /// When `pipe up --watch` last changed it (RFC 3339): it then runs more than its image.
    pub watched: Option<String>,
    /// Target-specific fields of the `--json` row.
    pub extra: serde_json::Value,
}

/// A target whose machines run on this host.
pub trait LocalTarget: Target {
    /// Brings the environment's machine up: nothing when it runs the current app digest,
    /// started again when it is halted on it, else built (layers reused by digest) and
    /// started, replacing an older one.
    fn up(&self, plan: &Plan, keep_on_error: bool, printer: &Printer) -> Result<UpReport>;

    /// The environment's running machine, or an error saying how to start it.
    fn running(&self, pf: &Pipelinefile, env: &str) -> Result<Running>;

    /// An interactive login shell on the running machine (the CLI that owns the terminal),
    /// and the hint for when that CLI is missing.
    fn login(&self, pf: &Pipelinefile, env: &str) -> Result<(Command, String)>;

    /// The command printing the last `lines` of the services' logs (`follow`: and on).
    fn logs_argv(&self, services: &[String], lines: usize, follow: bool) -> Vec<String>;

    /// Restarts the services of a machine after `pipe provision` and waits for them.
    fn restart_services(&self, pf: &Pipelinefile, plan: &Plan, machine: &Running) -> Result<()>;

    /// Marks the running machine as changed by `pipe up --watch` at `when` (RFC 3339), where
    /// [`LocalTarget::machines`] reads it back: the mark lives exactly as long as the machine.
    fn mark_watched(
        &self,
        pf: &Pipelinefile,
        env: &str,
        machine: &Running,
        when: &str,
    ) -> Result<()>;

    /// Stops the environment's machine cleanly (its disk stays); its name, `None` when
    /// there is none.
    fn halt(&self, pf: &Pipelinefile, env: &str, printer: &Printer) -> Result<Option<String>>;

    /// The `pipe up` and serving machines of this project (of `env`, or all).
    fn machines(&self, pf: &Pipelinefile, env: Option<&str>) -> Result<Vec<MachineRow>>;

    /// Removes the machines of this project (of `env`, or all); returns their names.
    fn destroy_machines(
        &self,
        pf: &Pipelinefile,
        env: Option<&str>,
        printer: &Printer,
    ) -> Result<Vec<String>>;

    /// Removes the pipeline's cached layers that no remaining machine runs on.
    fn destroy_layers(&self, pf: &Pipelinefile) -> Result<Vec<String>>;

    /// True when `state` (from `.pipe/state.json`) names a machine of this target that still
    /// exists.
    fn still_there(&self, pf: &Pipelinefile, env: &str, state: &MachineState) -> bool;
}

/// The kinds of target that run machines on this host.
pub fn kinds() -> [TargetKind; 2] {
    [TargetKind::Docker, TargetKind::Qemu]
}

/// Prepares a build's use of the box's package cache (see [`crate::boxes::package_cache`]):
/// its own apt archives folder, journaled so that it goes with the build machine on every path.
pub fn prepare_package_cache(
    runner: &mut Runner<'_>,
    cache: &PackageCache,
    layer: LayerName,
) -> Result<(Resource, CacheRun)> {
    let run_dir = cache.run_dir(&runner.run_id(), layer.as_str());
    let res = Resource::Path {
        path: run_dir.clone(),
    };
    let run = resource::create(runner, Destroyer::default(), &res, || {
        cache.prepare(&run_dir).map_err(|e| {
            Error::runtime(
                format!("preparing the package cache {}: {e}", cache.dir.display()),
                Some(
                    "check that the folder is writable, or turn the cache off with `package_cache = false` in [build]"
                        .to_string(),
                ),
            )
        })
    })?;
    Ok((res, run))
}
