//! Where layers are built and machines run: one [`Target`] interface, implemented by `docker`
//! (containers and images through the Engine API), `qemu` (VMs and qcow2 layers over SSH) and
//! `ec2` (instances and AMIs through the AWS SDK, over SSH).
//!
//! Commands open a target once ([`open`]) and never ask which kind it is again. What every
//! target does the same way is written once over the interface: building layers
//! ([`layers`]), `[verify]` on a fresh machine ([`verify`]), and the switch of what serves an
//! environment ([`switch`]). A target implements only the operations that differ: finding a
//! layer by digest, starting a build machine, committing it, starting a machine from a layer or
//! artifact, delivering services, and listing, stopping and removing serving machines.
//!
//! Every resource an implementation creates goes through the runner ([`Runner::create`]) with
//! [`resource::destroy`] as its cleanup, the same destroy `pipe clean` uses.

pub mod checks;
pub mod docker;
pub mod ec2;
pub mod fleet;
pub mod guest;
pub mod layers;
pub mod local;
pub mod ports;
pub mod qemu;
pub mod ready;
pub mod resource;
pub mod switch;
pub mod verify;
pub mod watch;

#[cfg(test)]
mod fake;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::communicators::Communicator;
use crate::config::{LayerName, Pipelinefile, TargetKind};
use crate::error::Result;
use crate::layers::digest::Digest;
use crate::ledger::Release;
use crate::plan::Plan;
use crate::runner::{Resource, Runner};
use crate::services::RenderedService;
use crate::ui::Printer;

pub use ports::ServicePort;

/// A machine a target started for a run: reached through its communicator, removed through
/// the resources journaled for it (disposed in reverse order).
pub struct Machine {
    pub name: String,
    pub comm: Box<dyn Communicator>,
    /// Journaled for it, in the order they were created.
    pub resources: Vec<Resource>,
    /// How a person gets in (`docker exec -it ...`, `ssh -i ...`), for messages.
    pub login: String,
    /// Environment a build machine adds to every provisioning command (the package cache's
    /// settings); empty on other machines.
    pub build_env: BTreeMap<String, String>,
}

impl Machine {
    /// Removes the machine now, through the runner (its resources leave the journal).
    pub fn dispose(&self, runner: &mut Runner<'_>) -> Result<()> {
        let mut first = None;
        for res in self.resources.iter().rev() {
            if let Err(e) = runner.dispose(res) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Keeps the machine as the run's result: no cleanup, out of the journal.
    pub fn keep(&self, runner: &mut Runner<'_>) -> Result<()> {
        for res in &self.resources {
            runner.keep(res)?;
        }
        Ok(())
    }
}

/// What a machine is for; a target labels, names and places it accordingly.
#[derive(Debug, Clone, Copy)]
pub enum Role<'r> {
    /// Runs `[verify]` on a layer or a release's artifact, then goes away.
    Verify,
    /// Serves an environment with a promoted release.
    Serving { env: &'r str, release: &'r Release },
}

/// A machine to start from a layer or an artifact.
#[derive(Debug, Clone)]
pub struct MachineSpec<'r> {
    pub name: String,
    pub role: Role<'r>,
    /// Published (docker) or forwarded (qemu) on 127.0.0.1.
    pub ports: Vec<ServicePort>,
}

/// A machine serving an environment, as a target finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serving {
    pub name: String,
    pub running: bool,
    /// The release it runs.
    pub release: Option<String>,
    /// How the target finds it again (a container id, a VM folder).
    pub id: String,
}

/// A leftover found by [`Target::sweep`].
#[derive(Debug)]
pub struct Swept {
    pub resource: Resource,
    /// The run that made it.
    pub run: String,
    /// The label or tag that says so (`pipe.run`, `pipe.build`), for messages.
    pub label: &'static str,
    /// Why it could not be removed.
    pub error: Option<crate::error::Error>,
}

/// What a release records of a bake's artifacts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Artifacts {
    /// Artifact ids by ledger key ([`crate::ledger::artifact_key`]): `docker`, `qemu`, or one
    /// `ec2:<region>` per region.
    pub ids: BTreeMap<String, String>,
    /// The base layer's image, when the target records it (the base AMI).
    pub base: Option<String>,
    /// The snapshots behind each artifact, by the same keys.
    pub snapshots: BTreeMap<String, Vec<String>>,
}

impl Artifacts {
    /// One artifact on a local target, keyed by its kind.
    pub fn local(kind: TargetKind, id: String) -> Self {
        Self {
            ids: BTreeMap::from([(crate::ledger::artifact_key(kind, None), id)]),
            ..Self::default()
        }
    }
}

/// What `pipe prune` would remove of a release on a target, or why the release stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrunePlan {
    /// These images and their snapshots (none left: a run that removed them all before it
    /// was interrupted, which the ledger is then told of).
    Remove(Vec<crate::ledger::PrunedImage>),
    /// Something the target will not remove (a protected AMI), said as a sentence.
    Keep(String),
}

/// A layer a target already has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundLayer {
    /// What the next layer builds on and machines start from (image id, qcow2 path).
    pub reference: String,
    /// How it is named to the user (`pipe/p-app:abc`, `app-<digest>.qcow2`).
    pub shown: String,
}

/// Where layers are built and machines run. See the module doc for what is written once over
/// it; `docs`: ARCHITECTURE.md.
pub trait Target {
    /// The kind, for records (releases, state) and messages.
    fn kind(&self) -> TargetKind;

    /// What a serving machine is called in messages: `container`, `machine`.
    fn noun(&self) -> &'static str;

    /// What a release's artifact is called in messages: `image`, `artifact`.
    fn artifact_noun(&self) -> &'static str;

    /// The box the base layer builds on: built, downloaded or resolved on first use.
    fn prepare_box(&self, plan: &Plan, printer: &Printer) -> Result<String>;

    /// Holds other runs off building the same layer until dropped (`None` when the target
    /// needs no lock).
    fn lock_layer(
        &self,
        plan: &Plan,
        layer: LayerName,
        digest: &Digest,
    ) -> Result<Option<std::fs::File>>;

    /// The layer with this digest, if the target has it.
    fn find_layer(
        &self,
        plan: &Plan,
        layer: LayerName,
        digest: &Digest,
    ) -> Result<Option<FoundLayer>>;

    /// Starts a machine to build `layer` (to be committed as `digest`) on `parent`, reachable
    /// and ready for provisioners.
    fn start_build_machine(
        &self,
        runner: &mut Runner<'_>,
        plan: &Plan,
        layer: LayerName,
        digest: &Digest,
        parent: &str,
        printer: &Printer,
    ) -> Result<Machine>;

    /// Whether a base with a precache step is built in two layers: see
    /// [`TargetKind::checkpoints_base`].
    fn checkpoints_base(&self) -> bool {
        self.kind().checkpoints_base()
    }

    /// Warning and hint for a build machine kept with `--keep-on-error`.
    fn kept_build_machine(&self, machine: &Machine) -> (String, String);

    /// Makes the provisioned build machine the layer with `digest` (sealed: no build key,
    /// host keys or machine-id in it); returns what [`Target::find_layer`] would now find.
    /// The build machine is disposed by the caller afterwards.
    fn commit_layer(
        &self,
        runner: &mut Runner<'_>,
        plan: &Plan,
        machine: &Machine,
        layer: LayerName,
        digest: &Digest,
        parent: &str,
    ) -> Result<String>;

    /// Starts a machine from a layer or a release's artifact, reachable; its services are not
    /// delivered yet.
    fn start_machine(
        &self,
        runner: &mut Runner<'_>,
        plan: &Plan,
        from: &str,
        spec: &MachineSpec<'_>,
        printer: &Printer,
    ) -> Result<Machine>;

    /// Hands a machine its services (a supervisor in containers, systemd units on VMs) and
    /// (re)starts them.
    fn deliver_services(&self, comm: &dyn Communicator, rendered: &[RenderedService])
    -> Result<()>;

    /// Waits until every service with a port listens; on timeout the error shows its log.
    fn wait_ready(
        &self,
        comm: &dyn Communicator,
        rendered: &[RenderedService],
        timeout: Duration,
    ) -> Result<()>;

    /// The release's artifacts made from the verified app layer `app` (built on `base`): the
    /// image itself on docker, a standalone qcow2 on qemu, the app AMI and its copies in
    /// other regions on ec2.
    fn seal_artifact(
        &self,
        runner: &mut Runner<'_>,
        plan: &Plan,
        base: &str,
        app: &str,
        printer: &Printer,
    ) -> Result<Artifacts>;

    /// Whether this target can switch what serves an environment (promote, rollback); an
    /// error (not implemented) when it cannot yet.
    fn can_switch(&self) -> Result<()> {
        Ok(())
    }

    /// A release's artifact on this target, checked to still exist.
    fn release_artifact(&self, release: &Release) -> Result<String>;

    /// The fleet the target rolls itself when it switches an environment (ec2); `None` when
    /// it switches machine by machine ([`switch`]).
    fn fleet(&self) -> Option<&dyn fleet::Fleet> {
        None
    }

    /// Removes `env`'s promotion lock, whoever holds it, unless the run that holds it is in
    /// `live` (still running on this host); returns who held the lock it removed. `None`
    /// when there was no lock, or the target takes none (docker and qemu take none: what
    /// serves an environment there lives on this host).
    fn break_lock(
        &self,
        _pf: &Pipelinefile,
        _env: &str,
        _live: &std::collections::BTreeSet<String>,
    ) -> Result<Option<fleet::LockHolder>> {
        Ok(None)
    }

    /// Images used outside the ledger that `pipe prune` must leave (ec2: the AMI of every
    /// version of an environment's launch template), each with why, as a phrase.
    fn images_in_use(&self, _pf: &Pipelinefile) -> Result<BTreeMap<String, String>> {
        Ok(BTreeMap::new())
    }

    /// What removing `release`'s artifacts would remove, everywhere the target keeps them
    /// (ec2: every region, copies found by digest); an image in `in_use` (from
    /// [`Target::images_in_use`]) keeps the release. `None` when the target has nothing to
    /// prune (docker and qemu: their images live on this host and go with `pipe clean`).
    fn prune_plan(
        &self,
        _pf: &Pipelinefile,
        _release: &Release,
        _in_use: &BTreeMap<String, String>,
    ) -> Result<Option<PrunePlan>> {
        Ok(None)
    }

    /// Removes what [`Target::prune_plan`] listed; what is already gone is skipped, so a
    /// re-run finishes an interrupted one.
    fn prune_artifacts(
        &self,
        _pf: &Pipelinefile,
        _release: &Release,
        _images: &[crate::ledger::PrunedImage],
    ) -> Result<()> {
        Ok(())
    }

    /// The machines serving `env` now (normally one), running or not.
    fn serving(&self, pf: &Pipelinefile, env: &str) -> Result<Vec<Serving>>;

    /// Stops a serving machine cleanly; what it runs on stays.
    fn stop_serving(&self, serving: &Serving, printer: &Printer) -> Result<()>;

    /// Starts a stopped serving machine again and hands it `rendered`; goes on after Ctrl-C
    /// (it is the cleanup of a failed switch).
    fn restore_serving(
        &self,
        runner: &mut Runner<'_>,
        plan: &Plan,
        serving: &Serving,
        rendered: &[RenderedService],
        printer: &Printer,
    ) -> Result<()>;

    /// Removes a serving machine that no longer serves.
    fn remove_serving(&self, serving: &Serving) -> Result<()>;

    /// Called once a release serves `env` (docker tags the image `pipe/<pipeline>:<env>`).
    fn switched(&self, plan: &Plan, env: &str, artifact: &str, printer: &Printer);

    /// Finds what runs of this project's pipeline that are not alive (not in `live`) left
    /// behind, by the run label or tag every temporary resource carries, and removes it
    /// unless `dry_run`. Results of runs (layers, machines, serving machines, releases) carry
    /// no run label and are never swept.
    fn sweep(
        &self,
        pf: &Pipelinefile,
        live: &std::collections::BTreeSet<String>,
        dry_run: bool,
    ) -> Result<Vec<Swept>>;

    /// What [`Target::switched`] will do, for `--plan` (`tag the image ...`).
    fn after_switch(&self, pf: &Pipelinefile, env: &str) -> Option<String>;

    /// Extra fields of a promotion's `--json` result, and how the new machine is described
    /// (`image pipe/p:production`, `a VM on <artifact>`).
    fn switch_details(
        &self,
        pf: &Pipelinefile,
        env: &str,
        artifact: &str,
    ) -> (serde_json::Value, String);
}

/// Opens the target a command runs on. The one place that matches on the kind.
pub fn open(kind: TargetKind, pf: &Pipelinefile) -> Result<Box<dyn Target>> {
    match kind {
        TargetKind::Docker => Ok(Box::new(docker::DockerTarget::connect()?)),
        TargetKind::Qemu => Ok(Box::new(qemu::QemuTarget::new(pf))),
        TargetKind::Ec2 => Ok(Box::new(ec2::Ec2Target::new(pf))),
    }
}

/// Opens a local target for a machine-only command; ec2 is refused with a hint.
pub fn open_local(
    kind: TargetKind,
    pf: &Pipelinefile,
    command: &str,
) -> Result<Box<dyn local::LocalTarget>> {
    match kind {
        TargetKind::Docker => Ok(Box::new(docker::DockerTarget::connect()?)),
        TargetKind::Qemu => Ok(Box::new(qemu::QemuTarget::new(pf))),
        TargetKind::Ec2 => Err(crate::error::Error::usage(
            format!("`pipe {command}` works on local machines, and this environment targets ec2"),
            Some("add --local to run it on docker".to_string()),
        )),
    }
}

/// The last six characters of a run id, for machine names.
pub fn suffix(run_id: &str) -> &str {
    &run_id[run_id.len().saturating_sub(6)..]
}
