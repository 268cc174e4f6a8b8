//! Promotion on Docker: the release's exact image becomes the container serving an environment
//! on this machine.
//!
//! A serving container is named `pipe-<pipeline>-<env>-<release alias>` (so the old and the new
//! one can exist side by side), labelled `pipe.role=serving`, `pipe.env`, `pipe.release`, and has
//! no `pipe.run` label: it is a run's result, which `pipe clean` never sweeps. The image is also
//! tagged `pipe/<pipeline>:<env>` once it serves.
//!
//! Ports: each service is published on 127.0.0.1 at its host port plus the environment's
//! position among the Pipelinefile's `[env.*]` tables (first = +0), so that dev (`pipe up`),
//! staging and production can run side by side on one machine (8080, 8081, 8082 in the
//! example). Two containers cannot publish the same host port, so a switch goes:
//!
//! 1. verify the release on a fresh, unpublished machine (the old container keeps serving; a
//!    failure here changes nothing);
//! 2. stop the old container;
//! 3. start the new one with the ports, wait for its services, run `[verify]` again in it;
//! 4. remove the old container and tag the image.
//!
//! The only downtime is step 3 (seconds). If step 2 or 3 fails, the new container is removed and
//! the old one is started again with its services, so it keeps serving, and the promotion is
//! recorded as failed.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::communicators::docker::DockerExec;
use crate::config::Pipelinefile;
use crate::error::{Error, Result};
use crate::ledger::Release;
use crate::plan::Plan;
use crate::runner::{Resource, Runner};
use crate::ui::Printer;

use super::build::label;
use super::machine::deliver_services;
use super::machine::{MachineRequest, create_container};
use super::verify::{start_services_and_check, verify_image};
use crate::engine::docker::{ContainerInfo, DockerClient, PortSpec};

/// How long the old container gets to stop.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The serving container's name for a release in an environment.
pub fn serving_name(pipeline: &str, env: &str, alias: &str) -> String {
    format!("pipe-{pipeline}-{env}-{alias}")
}

/// `pipe/<pipeline>` and `<env>`: the tag of the image serving an environment.
pub fn env_tag(pipeline: &str, env: &str) -> (String, String) {
    (format!("pipe/{pipeline}"), env.to_string())
}

/// The serving containers of an environment (normally one), running or not.
pub fn find_serving(
    client: &DockerClient,
    pipeline: &str,
    project: &str,
    env: &str,
) -> Result<Vec<ContainerInfo>> {
    super::machine::find_by_role(client, pipeline, project, "serving", Some(env))
}

/// A published service: name, port in the machine, port on 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub service: String,
    pub port: u16,
    pub host_port: u16,
}

/// The host ports an environment's serving container publishes (see the module doc).
pub fn host_ports(pf: &Pipelinefile, env: &str) -> Result<Vec<ServicePort>> {
    let offset = pf.envs.get_index_of(env).unwrap_or(0) as u32;
    let mut out = Vec::new();
    for s in &pf.services {
        if let (Some(port), Some(host)) = (&s.port, s.published_port()) {
            let host_port = u16::try_from(host as u32 + offset).map_err(|_| {
                Error::usage(
                    format!(
                        "service `{}`: host port {host} + {offset} (env `{env}`) is above 65535",
                        s.name.value
                    ),
                    Some("choose a lower host_port".to_string()),
                )
            })?;
            out.push(ServicePort {
                service: s.name.value.clone(),
                port: port.value,
                host_port,
            });
        }
    }
    Ok(out)
}

/// What a promotion works from.
pub struct Promotion<'a> {
    /// Rendered for the environment the release was baked in: its services and checks run as
    /// they were verified.
    pub plan: &'a Plan<'a>,
    /// The environment to serve.
    pub env: &'a str,
    pub release: &'a Release,
    /// The release's image id.
    pub image: &'a str,
    /// The environment's serving containers now.
    pub old: Vec<ContainerInfo>,
}

/// Switches the environment to the release (see the module doc); returns the new container.
pub fn promote(
    runner: &mut Runner<'_>,
    client: &DockerClient,
    p: &Promotion,
    printer: &Printer,
) -> Result<ContainerInfo> {
    let pipeline = p.plan.pf.pipeline.name.value.clone();
    let alias = &p.release.alias;
    let outcome = runner.step(&format!("verify release {alias} on a fresh machine"), |r| {
        verify_image(r, client, p.plan, p.image, printer)
    })?;
    if !outcome.ok {
        return Err(Error::VerifyFailed(format!(
            "release {alias} failed [verify] on a fresh machine; {} keeps serving\n{}",
            p.env, outcome.excerpt
        )));
    }
    let mut stopped: Vec<&ContainerInfo> = Vec::new();
    let name = serving_name(&pipeline, p.env, alias);
    let switched = (|| {
        for old in p.old.iter().filter(|c| c.running) {
            // Listed first: a Ctrl-C during the stop ends the step with the container already
            // stopped, and it must still be brought back (`restore` skips it if it runs).
            stopped.push(old);
            runner.step(&format!("stop the old container {}", old.name), |_| {
                client.stop_container(&old.id, STOP_GRACE)?;
                crate::runner::pause_point(printer, "old container stopped");
                Ok(())
            })?;
        }
        let ports = host_ports(p.plan.pf, p.env)?;
        runner.step(&format!("start {name}"), |r| {
            let res = create_container(
                r,
                client,
                MachineRequest {
                    name: name.clone(),
                    image: p.image,
                    labels: BTreeMap::from([
                        (label::PIPELINE.into(), pipeline.clone()),
                        (
                            label::PROJECT.into(),
                            crate::state::project_id(&p.plan.pf.root),
                        ),
                        (label::ENV.into(), p.env.to_string()),
                        (label::ROLE.into(), "serving".into()),
                        (label::RELEASE.into(), p.release.id.clone()),
                        (label::DIGEST.into(), p.release.app_digest.clone()),
                        (label::LAYER.into(), "app".into()),
                    ]),
                    ports: ports
                        .iter()
                        .map(|sp| PortSpec::tcp(sp.port, Some(sp.host_port)))
                        .collect(),
                },
            )?;
            let comm = DockerExec::new(client.clone(), name.clone());
            let outcome = start_services_and_check(&comm, p.plan, printer)?;
            if !outcome.ok {
                return Err(Error::VerifyFailed(format!(
                    "the new container {name} failed [verify]\n{}",
                    outcome.excerpt
                )));
            }
            let info = client.inspect_container(&name)?.ok_or_else(|| {
                Error::runtime(
                    format!("container {name} vanished right after it started"),
                    None,
                )
            })?;
            Ok((res, info))
        })
    })();
    // Kept only once the step is over: a Ctrl-C during it still removes the new container.
    let switched = switched.and_then(|(res, info)| {
        runner.keep(&res)?;
        Ok(info)
    });
    let info = match switched {
        Ok(info) => info,
        Err(e) => {
            // Free the ports first, then bring the old container back.
            let removed = runner.dispose(&Resource::Container { name: name.clone() });
            let restored = restore(client, p.plan, &stopped);
            return Err(with_restore_notes(e, removed.err(), restored));
        }
    };
    // The switch is done: finish it even if Ctrl-C comes now, so that what serves and what
    // the ledger says agree. Removing the old container and tagging are two API calls.
    for old in &p.old {
        let step = printer.step(format!("remove the old container {}", old.name));
        match client.remove_container(&old.id) {
            Ok(_) => step.done(None),
            Err(e) => {
                step.failed(Some(e.to_string()));
                printer.warn(
                    format!("the old container {} is stopped but still there", old.name),
                    Some(format!("remove it with `docker rm -f {}`", old.name)),
                );
            }
        }
    }
    let (repo, tag) = env_tag(&pipeline, p.env);
    if let Err(e) = client.tag_image(p.image, &repo, &tag) {
        printer.warn(format!("tagging {repo}:{tag}: {e}"), None);
    }
    Ok(info)
}

/// Starts stopped old containers again and hands them their services.
fn restore(client: &DockerClient, plan: &Plan, stopped: &[&ContainerInfo]) -> Vec<String> {
    let mut problems = Vec::new();
    let rendered = plan.services();
    for old in stopped {
        let result = (|| {
            if client
                .inspect_container(&old.id)?
                .is_some_and(|c| c.running)
            {
                return Ok(());
            }
            client.start_container(&old.id)?;
            // After a Ctrl-C too: bringing the old container back is the cleanup.
            let comm = DockerExec::new(client.clone(), old.name.clone()).uninterruptible();
            // Not waiting for the ports: it served these services a moment ago.
            deliver_services(&comm, &rendered)
        })();
        if let Err(e) = result {
            problems.push(format!(
                "the old container {} could not be restarted: {e} (start it again with `pipe promote` of its release)",
                old.name
            ));
        }
    }
    problems
}

fn with_restore_notes(e: Error, removed: Option<Error>, restored: Vec<String>) -> Error {
    let mut failures = restored;
    if let Some(r) = removed {
        failures.insert(0, r.to_string());
    }
    if failures.is_empty() {
        e
    } else {
        Error::Cleanup {
            error: Some(Box::new(e)),
            failures,
        }
    }
}
