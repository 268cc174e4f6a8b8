//! The docker target behind [`Target`]: layers are images labelled with their digest, build
//! machines are containers labelled `pipe.build=<run>` and verify machines `pipe.run=<run>`
//! (so `pipe.run` never reaches a layer, see [`label::RUN`]), serving machines are containers
//! named `pipe-<pipeline>-<env>-<release alias>` (labelled `pipe.role=serving`, `pipe.env`,
//! `pipe.release`, no `pipe.run`: a run's result, which `pipe clean` never sweeps), and the
//! image that serves an environment is also tagged `pipe/<pipeline>:<env>`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::boxes::package_cache::{self as cache, PackageCache};
use crate::communicators::Communicator;
use crate::communicators::docker::DockerExec;
use crate::config::{LayerName, Pipelinefile, TargetKind};
use crate::engine::docker::{ContainerSpec, DockerClient, ImageConfig, PortSpec};
use crate::error::{Error, Result};
use crate::layers::digest::Digest;
use crate::ledger::Release;
use crate::plan::Plan;
use crate::provisioners::trace::Traced;
use crate::runner::{Resource, Runner};
use crate::services::{self, RenderedService};
use crate::targets::local::prepare_package_cache;
use crate::targets::resource::{self, Destroyer};
use crate::targets::{
    Artifacts, FoundLayer, Machine, MachineSpec, Role, Serving, Swept, Target, suffix,
};
use crate::ui::Printer;

use super::build::{find_layer, image_repo, label};
use super::machine::{MachineRequest, create_container, deliver_services, wait_ready};
use super::promote::{env_tag, find_serving};

/// How long an old serving container gets to stop.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The docker target: a connection to the engine.
pub struct DockerTarget {
    client: DockerClient,
}

impl DockerTarget {
    /// Connects to the Docker engine.
    pub fn connect() -> Result<Self> {
        Ok(Self {
            client: DockerClient::connect()?,
        })
    }

    /// The target on an existing connection.
    pub fn new(client: DockerClient) -> Self {
        Self { client }
    }

    /// The engine connection.
    pub fn client(&self) -> &DockerClient {
        &self.client
    }

    /// Journals a container, creates it through `create`, and registers its one destroy.
    fn journaled_container(
        &self,
        runner: &mut Runner<'_>,
        name: &str,
        create: impl FnOnce() -> Result<String>,
    ) -> Result<Resource> {
        let res = Resource::Container {
            name: name.to_string(),
        };
        resource::create(
            runner,
            Destroyer::with_docker(self.client.clone()),
            &res,
            create,
        )?;
        Ok(res)
    }

    fn machine(&self, name: &str, res: Resource, printer: &Printer) -> Machine {
        Machine {
            name: name.to_string(),
            comm: Traced::boxed(
                Box::new(DockerExec::new(self.client.clone(), name.to_string())),
                printer,
            ),
            resources: vec![res],
            login: format!("docker exec -it {name} bash"),
            build_env: BTreeMap::new(),
        }
    }
}

impl Target for DockerTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::Docker
    }

    fn noun(&self) -> &'static str {
        "container"
    }

    fn artifact_noun(&self) -> &'static str {
        "image"
    }

    fn prepare_box(&self, plan: &Plan, printer: &Printer) -> Result<String> {
        super::box_image(&self.client, plan.pf, printer)
    }

    fn lock_layer(&self, _: &Plan, _: LayerName, _: &Digest) -> Result<Option<std::fs::File>> {
        // Two runs committing the same digest make two equal images; the newest is used.
        Ok(None)
    }

    fn find_layer(
        &self,
        plan: &Plan,
        layer: LayerName,
        digest: &Digest,
    ) -> Result<Option<FoundLayer>> {
        let pipeline = &plan.pf.pipeline.name.value;
        Ok(
            find_layer(&self.client, pipeline, layer, digest)?.map(|img| FoundLayer {
                reference: img.id,
                shown: format!("{}:{}", image_repo(pipeline, layer), digest.short()),
            }),
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
        let pipeline = plan.pf.pipeline.name.value.as_str();
        let run_id = runner.run_id();
        let name = format!("pipe-{pipeline}-build-{layer}-{}", suffix(&run_id));
        let mut spec = ContainerSpec::new(parent);
        spec.name = Some(name.clone());
        spec.cmd = Some(services::container_command());
        spec.labels = BTreeMap::from([
            (label::BUILD.into(), run_id.clone()),
            (label::PIPELINE.into(), pipeline.into()),
            (
                label::PROJECT.into(),
                crate::state::project_id(&plan.pf.root),
            ),
            (label::ROLE.into(), "build".into()),
            (label::LAYER.into(), layer.to_string()),
        ]);
        // The box's package cache, mounted while provisioning (a commit leaves mounts out).
        let cache = match PackageCache::for_build(plan.pf, TargetKind::Docker) {
            Some(cache) => Some(prepare_package_cache(runner, &cache, layer)?),
            None => None,
        };
        if let Some((_, run)) = &cache {
            spec.binds
                .push(format!("{}:{}", run.mount_source.display(), cache::MOUNT));
        }
        let res = self.journaled_container(runner, &name, || {
            let id = self.client.create_container(&spec)?;
            self.client.start_container(&id)?;
            Ok(id)
        })?;
        let mut machine = self.machine(&name, res, printer);
        if let Some((dir, run)) = cache {
            // Removed after the container, in reverse order.
            machine.resources.insert(0, dir);
            machine.build_env = run.env;
        }
        Ok(machine)
    }

    fn kept_build_machine(&self, machine: &Machine) -> (String, String) {
        let c = &machine.name;
        (
            format!("kept the build container {c} (--keep-on-error)"),
            format!(
                "look inside with `{}`; remove it with `docker rm -f {c}`",
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
        let pipeline = plan.pf.pipeline.name.value.as_str();
        let repo = image_repo(pipeline, layer);
        let tag = digest.short();
        let reference = format!("{repo}:{tag}");
        let config = ImageConfig {
            cmd: Some(services::container_command()),
            labels: BTreeMap::from([
                (label::PIPELINE.into(), pipeline.into()),
                (label::LAYER.into(), layer.to_string()),
                (label::DIGEST.into(), digest.to_string()),
                (label::PARENT.into(), parent.into()),
                (label::ROLE.into(), "layer".into()),
                // Labels are inherited through commits: the build container's run label must
                // not mark the layer as temporary, and the box's labels must not make a layer
                // look like the box. (Overridden, not removed: Docker cannot remove one.)
                (label::BUILD.into(), String::new()),
                ("pipe.box".into(), String::new()),
                ("pipe.box.digest".into(), String::new()),
            ]),
            ..Default::default()
        };
        let res = Resource::Image {
            reference: reference.clone(),
        };
        let destroyer = Destroyer::with_docker(self.client.clone());
        let id = resource::create(runner, destroyer, &res, || {
            Ok(self
                .client
                .commit_container(&machine.name, &repo, &tag, &config)?)
        })?;
        runner.keep(&res)?;
        Ok(id)
    }

    fn start_machine(
        &self,
        runner: &mut Runner<'_>,
        plan: &Plan,
        from: &str,
        spec: &MachineSpec<'_>,
        printer: &Printer,
    ) -> Result<Machine> {
        let pipeline = plan.pf.pipeline.name.value.clone();
        let project = crate::state::project_id(&plan.pf.root);
        let labels = match spec.role {
            Role::Verify => BTreeMap::from([
                (label::PIPELINE.into(), pipeline),
                (label::PROJECT.into(), project),
                (label::ENV.into(), plan.env.clone()),
                (label::ROLE.into(), "verify".into()),
                (label::RUN.into(), runner.run_id()),
                (label::DIGEST.into(), plan.digests.app.to_string()),
            ]),
            Role::Serving { env, release } => BTreeMap::from([
                (label::PIPELINE.into(), pipeline),
                (label::PROJECT.into(), project),
                (label::ENV.into(), env.to_string()),
                (label::ROLE.into(), "serving".into()),
                (label::RELEASE.into(), release.id.clone()),
                (label::DIGEST.into(), release.app_digest.clone()),
                (label::LAYER.into(), "app".into()),
            ]),
        };
        let res = create_container(
            runner,
            &self.client,
            MachineRequest {
                name: spec.name.clone(),
                image: from,
                labels,
                ports: spec
                    .ports
                    .iter()
                    .map(|p| PortSpec::tcp(p.port, Some(p.host_port)))
                    .collect(),
            },
        )?;
        Ok(self.machine(&spec.name, res, printer))
    }

    fn deliver_services(
        &self,
        comm: &dyn Communicator,
        rendered: &[RenderedService],
    ) -> Result<()> {
        deliver_services(comm, rendered)
    }

    fn wait_ready(
        &self,
        comm: &dyn Communicator,
        rendered: &[RenderedService],
        timeout: Duration,
    ) -> Result<()> {
        wait_ready(comm, rendered, timeout)
    }

    fn seal_artifact(
        &self,
        _: &mut Runner<'_>,
        _: &Plan,
        _: &str,
        app: &str,
        _: &Printer,
    ) -> Result<Artifacts> {
        // The app image is the artifact: nothing to flatten, it is promoted as it is.
        Ok(Artifacts::local(TargetKind::Docker, app.to_string()))
    }

    fn release_artifact(&self, release: &Release) -> Result<String> {
        let id = release.artifact(TargetKind::Docker).ok_or_else(|| {
            Error::runtime(
                format!("release {} has no docker image", release.alias),
                None,
            )
        })?;
        match self.client.inspect_image(id)? {
            Some(img) => Ok(img.id),
            None => Err(Error::runtime(
                format!(
                    "release {}'s image {id} is gone from this Docker engine",
                    release.alias
                ),
                Some("bake again (`pipe destroy --layers` or `docker rmi` removed it)".to_string()),
            )),
        }
    }

    fn serving(&self, pf: &Pipelinefile, env: &str) -> Result<Vec<Serving>> {
        let found = find_serving(
            &self.client,
            &pf.pipeline.name.value,
            &crate::state::project_id(&pf.root),
            env,
        )?;
        Ok(found
            .into_iter()
            .map(|c| Serving {
                running: c.running,
                release: c.labels.get(label::RELEASE).cloned(),
                name: c.name,
                id: c.id,
            })
            .collect())
    }

    fn stop_serving(&self, serving: &Serving, _: &Printer) -> Result<()> {
        Ok(self.client.stop_container(&serving.id, STOP_GRACE)?)
    }

    fn restore_serving(
        &self,
        _: &mut Runner<'_>,
        _: &Plan,
        serving: &Serving,
        rendered: &[RenderedService],
        _: &Printer,
    ) -> Result<()> {
        if self
            .client
            .inspect_container(&serving.id)?
            .is_some_and(|c| c.running)
        {
            return Ok(());
        }
        self.client.start_container(&serving.id)?;
        // After a Ctrl-C too: bringing the old container back is the cleanup.
        let comm = DockerExec::new(self.client.clone(), serving.name.clone()).uninterruptible();
        // Not waiting for the ports: it served these services a moment ago.
        deliver_services(&comm, rendered)
    }

    fn remove_serving(&self, serving: &Serving) -> Result<()> {
        self.client.remove_container(&serving.id)?;
        Ok(())
    }

    fn switched(&self, plan: &Plan, env: &str, artifact: &str, printer: &Printer) {
        let (repo, tag) = env_tag(&plan.pf.pipeline.name.value, env);
        if let Err(e) = self.client.tag_image(artifact, &repo, &tag) {
            printer.warn(format!("tagging {repo}:{tag}: {e}"), None);
        }
    }

    fn sweep(
        &self,
        pf: &Pipelinefile,
        live: &BTreeSet<String>,
        dry_run: bool,
    ) -> Result<Vec<Swept>> {
        let c = &self.client;
        let p = format!("{}={}", label::PIPELINE, pf.pipeline.name.value);
        let stale = |run: Option<&String>| run.is_some_and(|r| !r.is_empty() && !live.contains(r));
        let destroyer = Destroyer::with_docker(c.clone());
        let mut out = Vec::new();
        let mut sweep = |resource: Resource, run: &str, label: &'static str| {
            let error = if dry_run {
                None
            } else {
                destroyer.destroy(&resource).err()
            };
            out.push(Swept {
                resource,
                run: run.to_string(),
                label,
                error,
            });
        };
        // Only this project's containers: another checkout of the same pipeline may be
        // building right now.
        let proj = format!("{}={}", label::PROJECT, crate::state::project_id(&pf.root));
        for key in [label::RUN, label::BUILD] {
            for container in c.containers_by_labels(&[&p, &proj, key], true)? {
                let run = container.labels.get(key);
                if stale(run) {
                    let run = run.expect("stale has a run");
                    sweep(
                        Resource::Container {
                            name: container.name.clone(),
                        },
                        run,
                        key,
                    );
                }
            }
        }
        for image in c.images_by_labels(&[&p, label::RUN])? {
            let run = image.labels.get(label::RUN);
            if stale(run) {
                let run = run.expect("stale has a run");
                let reference = image.tags.first().cloned().unwrap_or(image.id.clone());
                sweep(Resource::Image { reference }, run, label::RUN);
            }
        }
        Ok(out)
    }

    fn after_switch(&self, pf: &Pipelinefile, env: &str) -> Option<String> {
        let (repo, tag) = env_tag(&pf.pipeline.name.value, env);
        Some(format!("tag the image {repo}:{tag}"))
    }

    fn switch_details(&self, pf: &Pipelinefile, env: &str, _: &str) -> (serde_json::Value, String) {
        let (repo, tag) = env_tag(&pf.pipeline.name.value, env);
        (
            serde_json::json!({"tag": format!("{repo}:{tag}")}),
            format!("image {repo}:{tag}"),
        )
    }
}
