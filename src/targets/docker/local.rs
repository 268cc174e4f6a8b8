//! Docker machines on this host ([`LocalTarget`]): `pipe up`'s container per environment
//! (named `pipe-<pipeline>-<env>`, or the env's `container_name`), found again by labels, so
//! `.pipe/` is only a cache; its services supervised inside and published on 127.0.0.1.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use crate::communicators::docker::DockerExec;
use crate::config::{LayerName, Pipelinefile};
use crate::engine::docker::ContainerInfo;
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::provisioners::trace::Traced;
use crate::runner::{Journal, Runner};
use crate::services;
use crate::state::MachineState;
use crate::targets::Target;
use crate::targets::layers::build_layers;
use crate::targets::local::{LocalTarget, MachineRow, Running, UpReport};
use crate::targets::ports::dev_ports;
use crate::ui::Printer;

use super::DockerTarget;
use super::build::label;
use super::machine::{
    self, MachineSpec, deliver_services, find_by_role, find_machines, machine_name, wait_ready,
};

/// How long a machine gets to stop.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The file in a machine saying when `pipe up --watch` last changed it: it lives in the
/// container, so it goes when the container is replaced, and is read even while it is stopped.
const WATCH_MARK: &str = "/var/lib/pipe/watched";

/// When `pipe up --watch` last changed the container, if it did.
fn watched(client: &crate::engine::docker::DockerClient, id: &str) -> Option<String> {
    client
        .get_archive(id, WATCH_MARK, |r| {
            let mut archive = tar::Archive::new(r);
            let mut text = String::new();
            if let Some(entry) = archive.entries()?.next() {
                std::io::Read::read_to_string(&mut entry?, &mut text)?;
            }
            Ok(text)
        })
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

impl DockerTarget {
    /// The environment's machine container, running or not.
    fn find_machine(&self, pf: &Pipelinefile, env: &str) -> Result<Option<ContainerInfo>> {
        let name = machine_name(pf, env);
        let project = crate::state::project_id(&pf.root);
        let found = find_machines(self.client(), &pf.pipeline.name.value, &project, Some(env))?;
        Ok(found.into_iter().find(|c| c.name == name))
    }

    fn state_of(c: &ContainerInfo, digest: String) -> MachineState {
        MachineState {
            target: "docker".into(),
            name: c.name.clone(),
            image: c.image.clone(),
            digest,
            updated: chrono::Utc::now().to_rfc3339(),
        }
    }

    fn report(plan: &Plan, c: &ContainerInfo, what: &'static str) -> UpReport {
        UpReport {
            name: c.name.clone(),
            what,
            state: Self::state_of(c, plan.digests.app.to_string()),
            ports: dev_ports(plan.pf),
            detail: String::new(),
            login: None,
            extra: serde_json::json!({}),
        }
    }
}

fn ports_of(c: &ContainerInfo) -> Vec<String> {
    c.ports
        .iter()
        .map(|p| format!("{}:{}->{}", p.host_ip, p.host_port, p.container_port))
        .collect()
}

impl LocalTarget for DockerTarget {
    fn up(&self, plan: &Plan, keep_on_error: bool, printer: &Printer) -> Result<UpReport> {
        crate::interrupt::install();
        let pf = plan.pf;
        let client = self.client();
        let name = machine_name(pf, &plan.env);
        let existing = client.inspect_container(&name)?;
        let digest = plan.digests.app.to_string();
        let project = crate::state::project_id(&pf.root);
        if let Some(c) = &existing
            && c.labels.get(label::PROJECT) != Some(&project)
        {
            let owner = c
                .labels
                .get(label::PROJECT_DIR)
                .map_or("another project".to_string(), |d| {
                    format!("the project in {d}")
                });
            return Err(Error::runtime(
                format!("a container named {name} already exists and belongs to {owner}"),
                Some(format!(
                    "run `pipe destroy` there, or give this environment another `container_name` (or `docker rm -f {name}` if it is not pipe's)"
                )),
            ));
        }
        if let Some(c) = &existing {
            let same = c.labels.get(label::DIGEST) == Some(&digest);
            if same && c.running {
                return Ok(Self::report(plan, c, "up to date"));
            }
            if same {
                // Halted: start it again and hand it its services.
                let step = printer.step(format!("start {name}"));
                client.start_container(&c.id)?;
                let comm = Traced::boxed(
                    Box::new(DockerExec::new(client.clone(), name.clone())),
                    printer,
                );
                let rendered = plan.services();
                deliver_services(&*comm, &rendered)?;
                wait_ready(&*comm, &rendered, machine::READY_TIMEOUT)?;
                step.done(None);
                let c = client
                    .inspect_container(&name)?
                    .unwrap_or_else(|| c.clone());
                return Ok(Self::report(plan, &c, "started"));
            }
        }
        let journal = Journal::start(&crate::state::dir(&pf.root), "up", &pf.pipeline.name.value)?;
        let mut runner = Runner::new(journal, printer);
        let result = (|| {
            let box_image = {
                let _p = printer.phase("box");
                self.prepare_box(plan, printer)?
            };
            let (_, app) =
                build_layers(&mut runner, self, plan, &box_image, keep_on_error, printer)?;
            if let Some(old) = &existing {
                let _p = printer.phase("remove the old machine");
                runner.step(&format!("remove the old machine {}", old.name), |_| {
                    client.remove_container(&old.id)?;
                    Ok(())
                })?;
            }
            let (res, info) = runner.step(&format!("start {name}"), |r| {
                machine::start_machine(
                    r,
                    client,
                    plan,
                    MachineSpec {
                        name: name.clone(),
                        image: &app,
                        publish: true,
                        extra_labels: BTreeMap::new(),
                    },
                )
            })?;
            runner.keep(&res)?;
            Ok(info)
        })();
        let info = runner.finish(result)?;
        let what = if existing.is_some() {
            "replaced"
        } else {
            "created"
        };
        Ok(Self::report(plan, &info, what))
    }

    fn running(&self, pf: &Pipelinefile, env: &str) -> Result<Running> {
        match self.find_machine(pf, env)? {
            Some(c) if c.running => Ok(Running {
                comm: Box::new(DockerExec::new(self.client().clone(), c.name.clone())),
                name: c.name,
            }),
            Some(c) => Err(Error::runtime(
                format!("machine {} of env `{env}` is {}", c.name, c.state),
                Some("start it with `pipe up`".to_string()),
            )),
            None => Err(Error::runtime(
                format!("env `{env}` has no machine"),
                Some("create it with `pipe up --local`".to_string()),
            )),
        }
    }

    fn login(&self, pf: &Pipelinefile, env: &str) -> Result<(Command, String)> {
        let c = self.running(pf, env)?;
        let mut cmd = Command::new("docker");
        cmd.args(["exec", "-it", &c.name, "sh", "-c"])
            .arg("if command -v bash >/dev/null; then exec bash -l; else exec sh -l; fi");
        Ok((
            cmd,
            format!(
                "an interactive shell needs the docker CLI: install it, or use `pipe exec -- sh` (no TTY) on {}",
                c.name
            ),
        ))
    }

    fn logs_argv(&self, names: &[String], lines: usize, follow: bool) -> Vec<String> {
        let mut argv = vec!["tail".to_string(), "-n".into(), lines.to_string()];
        if follow {
            argv.push("-F".into());
        }
        if names.len() > 1 {
            argv.push("-v".into());
        }
        argv.extend(names.iter().map(|n| services::log_path(n)));
        argv
    }

    fn restart_services(&self, pf: &Pipelinefile, plan: &Plan, m: &Running) -> Result<()> {
        let c = self
            .find_machine(pf, &plan.env)?
            .ok_or_else(|| Error::runtime(format!("{} is gone", m.name), None))?;
        let rendered = plan.services();
        // In place when the supervisor can (the same services as at start): a container
        // restart costs about half a second more.
        match machine::restart_in_place(&*m.comm, &rendered, machine::READY_TIMEOUT)? {
            machine::InPlace::Ready => return Ok(()),
            machine::InPlace::Restarted => {}
            machine::InPlace::No => {
                self.client().stop_container(&c.id, STOP_GRACE)?;
                self.client().start_container(&c.id)?;
                deliver_services(&*m.comm, &rendered)?;
            }
        }
        wait_ready(&*m.comm, &rendered, machine::READY_TIMEOUT)
    }

    fn mark_watched(&self, _: &Pipelinefile, _: &str, m: &Running, when: &str) -> Result<()> {
        m.comm
            .upload_bytes(format!("{when}\n").as_bytes(), WATCH_MARK, 0o644)
            .map_err(|e| {
                Error::runtime(format!("marking {} as changed by watch: {e}", m.name), None)
            })
    }

    fn halt(&self, pf: &Pipelinefile, env: &str, printer: &Printer) -> Result<Option<String>> {
        let Some(c) = self.find_machine(pf, env)? else {
            return Ok(None);
        };
        if c.running {
            let step = printer.step(format!("stop {}", c.name));
            self.client().stop_container(&c.id, STOP_GRACE)?;
            step.done(None);
        }
        Ok(Some(c.name))
    }

    fn machines(&self, pf: &Pipelinefile, env: Option<&str>) -> Result<Vec<MachineRow>> {
        let pipeline = &pf.pipeline.name.value;
        let project = crate::state::project_id(&pf.root);
        let mut rows = Vec::new();
        for c in find_machines(self.client(), pipeline, &project, env)? {
            let digest = c.labels.get(label::DIGEST).cloned().unwrap_or_default();
            rows.push(MachineRow {
                env: c.labels.get(label::ENV).cloned().unwrap_or_default(),
                name: c.name.clone(),
                state: c.state.clone(),
                release: None,
                ports: ports_of(&c),
                state_entry: Some(Self::state_of(&c, digest.clone())),
                digest: Some(digest),
                watched: watched(self.client(), &c.id),
                extra: serde_json::json!({}),
            });
        }
        for c in find_by_role(self.client(), pipeline, &project, "serving", env)? {
            rows.push(MachineRow {
                env: c.labels.get(label::ENV).cloned().unwrap_or_default(),
                name: c.name.clone(),
                state: c.state.clone(),
                digest: None,
                release: Some(c.labels.get(label::RELEASE).cloned().unwrap_or_default()),
                ports: ports_of(&c),
                state_entry: None,
                watched: None,
                extra: serde_json::json!({}),
            });
        }
        Ok(rows)
    }

    fn destroy_machines(
        &self,
        pf: &Pipelinefile,
        env: Option<&str>,
        printer: &Printer,
    ) -> Result<Vec<String>> {
        let pipeline = &pf.pipeline.name.value;
        let project = crate::state::project_id(&pf.root);
        let mut machines = find_machines(self.client(), pipeline, &project, env)?;
        machines.extend(find_by_role(
            self.client(),
            pipeline,
            &project,
            "serving",
            env,
        )?);
        let mut removed = Vec::new();
        for c in &machines {
            let step = printer.step(format!("remove {}", c.name));
            self.client().remove_container(&c.id)?;
            step.done(None);
            removed.push(c.name.clone());
        }
        Ok(removed)
    }

    fn destroy_layers(&self, pf: &Pipelinefile) -> Result<Vec<String>> {
        let pipeline = &pf.pipeline.name.value;
        let mut left = Vec::new();
        for layer in [LayerName::App, LayerName::Base] {
            let p = format!("{}={pipeline}", label::PIPELINE);
            let l = format!("{}={layer}", label::LAYER);
            left.extend(self.client().images_by_labels(&[&p, &l])?);
        }
        // Docker removes no image another one is built on (an app on its base, a base on its
        // checkpoint): newest first, and what was still built on goes in the next pass.
        left.sort_by_key(|i| std::cmp::Reverse(i.created));
        let mut images = Vec::new();
        for pass in 0..3 {
            let mut again = Vec::new();
            for img in left {
                match self.client().remove_image(&img.id, true) {
                    Ok(true) => images.push(img.id.clone()),
                    Ok(false) => {}
                    Err(_) if pass < 2 => again.push(img),
                    Err(e) => return Err(e.into()),
                }
            }
            left = again;
            if left.is_empty() {
                break;
            }
        }
        Ok(images)
    }

    fn still_there(&self, pf: &Pipelinefile, env: &str, state: &MachineState) -> bool {
        self.find_machine(pf, env)
            .map(|c| c.is_some_and(|c| c.name == state.name))
            .unwrap_or(true)
    }
}
