//! [`Ec2Target`]: the [`Target`] interface on EC2.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::copies::{CopyPlan, copy_to_regions};
use super::image::{self, ImageSpec};
use super::launch::{self, Launch};
use super::{DEFAULT_INSTANCE_TYPE, DEFAULT_SSH_USERNAME};
use crate::communicators::Communicator;
use crate::communicators::ssh::DEFAULT_SSH_TIMEOUT;
use crate::config::{Ec2Settings, LayerName, Pipelinefile, Strategy, TargetKind, TargetSettings};
use crate::engine::aws::{AwsClient, AwsSettings};
use crate::error::{Error, Result};
use crate::layers::digest::Digest;
use crate::ledger::{PrunedImage, Release, artifact_key};
use crate::plan::Plan;
use crate::runner::Runner;
use crate::services::RenderedService;
use crate::targets::fleet::{Fleet, FleetPlan, FleetStatus, LockHolder, RolledOut, Running};
use crate::targets::{
    Artifacts, FoundLayer, Machine, MachineSpec, PrunePlan, Role, Serving, Swept, Target, suffix,
};
use crate::ui::Printer;

/// How long an instance may take to run, by default.
const INSTANCE_WAIT: Duration = Duration::from_secs(600);
/// How long an AMI may take to be available, by default.
const IMAGE_WAIT: Duration = Duration::from_secs(1800);

/// The command that is not built on ec2 yet (issue 11): promotion and rollback.
const PROMOTE: &str = "promote";

/// The ec2 target: one AWS client per command (the run's environment's region and endpoint),
/// connected on first use; instance ids of the machines it launched.
pub struct Ec2Target {
    envs: BTreeMap<String, Ec2Settings>,
    client: RefCell<Option<AwsClient>>,
    instances: RefCell<BTreeMap<String, String>>,
}

impl Ec2Target {
    /// Nothing connects until a call needs AWS.
    pub fn new(pf: &Pipelinefile) -> Self {
        let envs = pf
            .envs
            .iter()
            .filter_map(|(name, e)| match &e.settings {
                TargetSettings::Ec2(s) => Some((name.clone(), (**s).clone())),
                _ => None,
            })
            .collect();
        Self {
            envs,
            client: RefCell::new(None),
            instances: RefCell::new(BTreeMap::new()),
        }
    }

    fn settings(&self, env: &str) -> Ec2Settings {
        self.envs.get(env).cloned().unwrap_or_default()
    }

    /// The client for the plan's environment.
    fn client(&self, plan: &Plan) -> Result<AwsClient> {
        if let Some(c) = &*self.client.borrow() {
            return Ok(c.clone());
        }
        let c = AwsClient::connect(&crate::plan::aws_settings(plan.pf, &plan.env))?;
        *self.client.borrow_mut() = Some(c.clone());
        Ok(c)
    }

    fn waits(&self, env: &str) -> (Duration, Duration) {
        match self.settings(env).wait_timeout {
            Some(s) => (Duration::from_secs(s), Duration::from_secs(s)),
            None => (INSTANCE_WAIT, IMAGE_WAIT),
        }
    }

    /// Launches a machine from `image` named `name`, tagged for `purpose` (a layer, `verify`).
    fn launch(
        &self,
        runner: &mut Runner<'_>,
        plan: &Plan,
        name: String,
        image: &str,
        purpose: &str,
        printer: &Printer,
    ) -> Result<Machine> {
        let client = self.client(plan)?;
        let settings = self.settings(&plan.env);
        let tags = launch::run_tags(
            &plan.pf.pipeline.name.value,
            &runner.run_id(),
            &plan.env,
            purpose,
        );
        let l = Launch {
            client: &client,
            name,
            image: image.to_string(),
            instance_type: settings
                .instance_type
                .clone()
                .unwrap_or_else(|| DEFAULT_INSTANCE_TYPE.into()),
            ssh_username: settings
                .ssh_username
                .clone()
                .unwrap_or_else(|| DEFAULT_SSH_USERNAME.into()),
            settings: &settings,
            tags,
            root: &plan.pf.root,
            wait: self.waits(&plan.env).0,
            ssh_timeout: settings
                .ssh_timeout
                .map_or(DEFAULT_SSH_TIMEOUT, Duration::from_secs),
        };
        let (machine, id) = launch::launch(runner, &l, printer)?;
        self.instances.borrow_mut().insert(machine.name.clone(), id);
        Ok(machine)
    }

    /// The client for a release's artifact: its region, the endpoint of its environment.
    fn release_client(&self, release: &Release, region: &str) -> Result<AwsClient> {
        let s = self.settings(&release.env);
        Ok(AwsClient::connect(&AwsSettings {
            region: Some(region.to_string()),
            endpoint_url: s.endpoint_url,
            ..AwsSettings::default()
        })?)
    }
}

/// What an AMI of a layer made in run `run_id` is called (its copies too):
/// `pipe-<pipeline>-<layer>-<digest>-<run>`, unique per run.
fn image_name(pipeline: &str, layer: LayerName, digest: &Digest, run_id: &str) -> String {
    format!(
        "pipe-{pipeline}-{layer}-{}-{}",
        digest.short(),
        suffix(run_id)
    )
}

impl Target for Ec2Target {
    fn kind(&self) -> TargetKind {
        TargetKind::Ec2
    }

    fn noun(&self) -> &'static str {
        "instance"
    }

    fn artifact_noun(&self) -> &'static str {
        "AMI"
    }

    fn prepare_box(&self, plan: &Plan, _: &Printer) -> Result<String> {
        // Resolved by the plan: the base digest covers the AMI id.
        plan.source_ami
            .clone()
            .ok_or_else(|| Error::runtime("the ec2 box was not resolved to an AMI", None))
    }

    fn lock_layer(
        &self,
        plan: &Plan,
        layer: LayerName,
        digest: &Digest,
    ) -> Result<Option<std::fs::File>> {
        // Runs on this host wait for each other; runs elsewhere may build the same layer
        // twice, and find_layer takes the newest.
        let dir = crate::state::dir(&plan.pf.root).join("ec2").join("locks");
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::runtime(format!("creating {}: {e}", dir.display()), None))?;
        let path = dir.join(format!("{layer}-{}.lock", digest.hex()));
        let lock = crate::boxes::lock_file(&path)
            .map_err(|e| Error::runtime(format!("locking {}: {e}", path.display()), None))?;
        Ok(Some(lock))
    }

    fn find_layer(
        &self,
        plan: &Plan,
        layer: LayerName,
        digest: &Digest,
    ) -> Result<Option<FoundLayer>> {
        image::find(
            &self.client(plan)?,
            &plan.pf.pipeline.name.value,
            layer,
            digest,
        )
    }

    fn start_build_machine(
        &self,
        runner: &mut Runner<'_>,
        plan: &Plan,
        layer: LayerName,
        _digest: &Digest,
        parent: &str,
        printer: &Printer,
    ) -> Result<Machine> {
        let run_id = runner.run_id();
        let name = format!(
            "pipe-{}-build-{layer}-{}",
            plan.pf.pipeline.name.value,
            suffix(&run_id)
        );
        self.launch(runner, plan, name, parent, &layer.to_string(), printer)
    }

    fn kept_build_machine(&self, machine: &Machine) -> (String, String) {
        let id = self
            .instances
            .borrow()
            .get(&machine.name)
            .cloned()
            .unwrap_or_default();
        (
            format!(
                "kept the build machine {} (instance {id}, --keep-on-error): it costs money while it runs",
                machine.name
            ),
            format!(
                "log in with `{}`; remove it, its key pair and security group with `pipe clean`",
                machine.login
            ),
        )
    }

    fn commit_layer(
        &self,
        runner: &mut Runner<'_>,
        plan: &Plan,
        machine: &Machine,
        layer: LayerName,
        digest: &Digest,
        parent: &str,
    ) -> Result<String> {
        if layer == LayerName::App {
            // Instances an Auto Scaling group launches from the release's AMI must serve
            // without pipe: the services are in it, enabled, as they were verified.
            let secrets = plan.vars.secrets();
            let left_out =
                crate::targets::guest::bake_units(&*machine.comm, &plan.services(), &secrets)?;
            if !left_out.is_empty() {
                runner.printer().warn(
                    format!(
                        "sensitive variables are not baked into the app AMI: {}",
                        left_out.join(", ")
                    ),
                    Some("an instance launched without pipe gets them only if something writes /run/pipe/env/<service> at boot (user data reading SSM or Secrets Manager)".into()),
                );
            }
        }
        let client = self.client(plan)?;
        let instance = self
            .instances
            .borrow()
            .get(&machine.name)
            .cloned()
            .expect("launched by this target");
        let pipeline = &plan.pf.pipeline.name.value;
        let run_id = runner.run_id();
        let tags = BTreeMap::from([
            ("pipe:pipeline".to_string(), pipeline.clone()),
            ("pipe:layer".to_string(), layer.to_string()),
            ("pipe:digest".to_string(), digest.to_string()),
            ("pipe:env".to_string(), plan.env.clone()),
            ("pipe:git-commit".to_string(), plan.git_commit.clone()),
            ("pipe:parent".to_string(), parent.to_string()),
            (
                "Name".to_string(),
                format!("pipe-{pipeline}-{layer}-{}", digest.short()),
            ),
        ]);
        let spec = ImageSpec {
            name: image_name(pipeline, layer, digest, &run_id),
            description: format!("pipe {pipeline} {layer} layer {digest}"),
            tags,
            wait: self.waits(&plan.env).1,
        };
        image::commit(runner, &client, machine, &instance, &spec)
    }

    fn start_machine(
        &self,
        runner: &mut Runner<'_>,
        plan: &Plan,
        from: &str,
        spec: &MachineSpec<'_>,
        printer: &Printer,
    ) -> Result<Machine> {
        match spec.role {
            Role::Verify => self.launch(runner, plan, spec.name.clone(), from, "verify", printer),
            Role::Serving { .. } => Err(Error::NotImplemented(PROMOTE)),
        }
    }

    fn deliver_services(
        &self,
        comm: &dyn Communicator,
        rendered: &[RenderedService],
    ) -> Result<()> {
        crate::targets::guest::deliver_units(comm, rendered)
    }

    fn wait_ready(
        &self,
        comm: &dyn Communicator,
        rendered: &[RenderedService],
        timeout: Duration,
    ) -> Result<()> {
        crate::targets::guest::wait_ready(comm, rendered, timeout)
    }

    fn seal_artifact(
        &self,
        runner: &mut Runner<'_>,
        plan: &Plan,
        base: &str,
        app: &str,
        printer: &Printer,
    ) -> Result<Artifacts> {
        // The app AMI is the artifact, in the bake's region and copied to `ami_regions`.
        let client = self.client(plan)?;
        let settings = self.settings(&plan.env);
        let region = client.region().to_string();
        let source = client.image(app)?.ok_or_else(|| {
            Error::runtime(
                format!("recording the release: the app AMI {app} is gone from {region}"),
                Some(format!("bake again: pipe bake --env {}", plan.env)),
            )
        })?;
        let key = |r: &str| artifact_key(TargetKind::Ec2, Some(r));
        let mut out = Artifacts {
            ids: BTreeMap::from([(key(&region), app.to_string())]),
            base: Some(base.to_string()),
            snapshots: BTreeMap::from([(key(&region), source.snapshots.clone())]),
        };
        if settings.ami_regions.is_empty() {
            return Ok(out);
        }
        let digest = plan.digests.app.to_string();
        let copy = CopyPlan {
            source: &source,
            pipeline: &plan.pf.pipeline.name.value,
            digest: &digest,
            name: image_name(
                &plan.pf.pipeline.name.value,
                LayerName::App,
                &plan.digests.app,
                &runner.run_id(),
            ),
            regions: &settings.ami_regions,
            kms_keys: &settings.region_kms_key_ids,
            wait: self.waits(&plan.env).1,
        };
        let step = format!("copy app AMI to {}", settings.ami_regions.join(", "));
        let copies = runner.step(&step, |r| copy_to_regions(r, &client, &copy, printer))?;
        for c in copies {
            out.ids.insert(key(&c.region), c.image.id);
            out.snapshots.insert(key(&c.region), c.image.snapshots);
        }
        Ok(out)
    }

    fn release_artifact(&self, release: &Release) -> Result<String> {
        // The AMI in the region the environment runs in (a release with copies has one per
        // region); else the first, as a release recorded before its environment moved.
        let s = self.settings(&release.env);
        let home = AwsClient::connect(&AwsSettings {
            region: s.region.clone(),
            endpoint_url: s.endpoint_url.clone(),
            ..AwsSettings::default()
        })?;
        let amis = release.artifacts_on(TargetKind::Ec2);
        let artifact = amis
            .iter()
            .find(|a| a.region == Some(home.region()))
            .or(amis.first())
            .copied()
            .ok_or_else(|| {
                Error::runtime(format!("release {} has no ec2 AMI", release.alias), None)
            })?;
        let region = artifact.region.ok_or_else(|| {
            Error::runtime(
                format!("release {}'s ec2 AMI has no region", release.alias),
                None,
            )
        })?;
        let client = self.release_client(release, region)?;
        match client.image(artifact.id)? {
            Some(i) if i.state == "available" => Ok(i.id),
            found => Err(Error::runtime(
                format!(
                    "release {}'s AMI {} in {region} is {}",
                    release.alias,
                    artifact.id,
                    found.map_or("gone".to_string(), |i| i.state)
                ),
                Some(format!("bake again: pipe bake --env {}", release.env)),
            )),
        }
    }

    fn can_switch(&self) -> Result<()> {
        Ok(())
    }

    fn fleet(&self) -> Option<&dyn Fleet> {
        Some(self)
    }

    fn break_lock(
        &self,
        pf: &Pipelinefile,
        env: &str,
        live: &BTreeSet<String>,
    ) -> Result<Option<LockHolder>> {
        let name = super::promote::lock_name(&pf.pipeline.name.value, env);
        super::promote::break_lock(&self.env_client(pf, env)?, &name, env, live)
    }

    fn images_in_use(&self, pf: &Pipelinefile) -> Result<BTreeMap<String, String>> {
        super::prune::images_in_use(pf)
    }

    fn prune_plan(
        &self,
        pf: &Pipelinefile,
        release: &Release,
        in_use: &BTreeMap<String, String>,
    ) -> Result<Option<PrunePlan>> {
        super::prune::plan(pf, release, in_use).map(Some)
    }

    fn prune_artifacts(
        &self,
        pf: &Pipelinefile,
        release: &Release,
        images: &[PrunedImage],
    ) -> Result<()> {
        super::prune::remove(pf, release, images)
    }

    fn serving(&self, _: &Pipelinefile, _: &str) -> Result<Vec<Serving>> {
        Err(Error::NotImplemented(PROMOTE))
    }

    fn stop_serving(&self, _: &Serving, _: &Printer) -> Result<()> {
        Err(Error::NotImplemented(PROMOTE))
    }

    fn restore_serving(
        &self,
        _: &mut Runner<'_>,
        _: &Plan,
        _: &Serving,
        _: &[RenderedService],
        _: &Printer,
    ) -> Result<()> {
        Err(Error::NotImplemented(PROMOTE))
    }

    fn remove_serving(&self, _: &Serving) -> Result<()> {
        Err(Error::NotImplemented(PROMOTE))
    }

    fn switched(&self, _: &Plan, _: &str, _: &str, _: &Printer) {}

    fn sweep(
        &self,
        pf: &Pipelinefile,
        live: &BTreeSet<String>,
        dry_run: bool,
    ) -> Result<Vec<Swept>> {
        super::sweep::sweep(pf, &self.envs, live, dry_run)
    }

    fn after_switch(&self, _: &Pipelinefile, _: &str) -> Option<String> {
        None
    }

    fn switch_details(
        &self,
        _: &Pipelinefile,
        _: &str,
        artifact: &str,
    ) -> (serde_json::Value, String) {
        (serde_json::json!({}), format!("instances from {artifact}"))
    }
}

impl Ec2Target {
    /// A client for `env`'s region and endpoint (not the bake's), with its `role_arn`
    /// assumed when it runs in another account.
    fn env_client(&self, pf: &Pipelinefile, env: &str) -> Result<AwsClient> {
        let mut settings = crate::plan::aws_settings(pf, env);
        settings.role = super::share::role(&pf.pipeline.name.value, env, &self.settings(env));
        Ok(AwsClient::connect(&settings)?)
    }
}

impl Fleet for Ec2Target {
    fn plan(&self, pf: &Pipelinefile, env: &str, release: &Release) -> Result<FleetPlan> {
        let r = super::promote::Rollout::of(env, &self.settings(env))?;
        let client = self.env_client(pf, env)?;
        match r.strategy {
            Strategy::Refresh => super::promote::plan(&client, pf, env, &r, release),
            Strategy::BlueGreen => super::bluegreen::plan(&client, pf, env, &r, release),
        }
    }

    fn status(
        &self,
        pf: &Pipelinefile,
        env: &str,
        current: Option<&Release>,
    ) -> Result<FleetStatus> {
        let r = super::promote::Rollout::of(env, &self.settings(env))?;
        super::drift::status(
            &self.env_client(pf, env)?,
            &pf.pipeline.name.value,
            &r,
            current,
        )
    }

    fn roll_back_running(
        &self,
        pf: &Pipelinefile,
        env: &str,
        dry_run: bool,
        printer: &Printer,
    ) -> Result<Option<Running>> {
        let r = super::promote::Rollout::of(env, &self.settings(env))?;
        let client = self.env_client(pf, env)?;
        if r.strategy == Strategy::BlueGreen {
            return super::bluegreen::roll_back_running(
                &client,
                &pf.pipeline.name.value,
                &r,
                dry_run,
                printer,
            );
        }
        let Some(running) = client.running_refresh(&r.group)? else {
            return Ok(None);
        };
        if !dry_run {
            printer.info(format!(
                "instance refresh {} of group {} is {}: rolling it back",
                running.id, r.group, running.status
            ));
            crate::interrupt::install();
            client.roll_back_refresh(&r.group, r.wait, &crate::interrupt::requested)?;
        }
        Ok(Some(Running {
            what: format!("instance refresh {}", running.id),
            id: running.id,
        }))
    }

    fn roll_out(
        &self,
        runner: &mut Runner<'_>,
        pf: &Pipelinefile,
        env: &str,
        release: &Release,
        printer: &Printer,
    ) -> Result<RolledOut> {
        let r = super::promote::Rollout::of(env, &self.settings(env))?;
        let client = self.env_client(pf, env)?;
        match r.strategy {
            Strategy::Refresh => {
                super::promote::roll_out(runner, &client, pf, env, &r, release, printer)
            }
            Strategy::BlueGreen => {
                super::bluegreen::roll_out(runner, &client, pf, env, &r, release, printer)
            }
        }
    }
}
