//! Machines on Docker: a container from the app image, its services supervised inside, their
//! ports published on 127.0.0.1. Found again by labels, so `.pipe/` is only a cache.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::communicators::docker::DockerExec;
use crate::communicators::{Collect, Communicator, ExecRequest};
use crate::config::{Pipelinefile, TargetSettings};
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::provisioners::trace::Traced;
use crate::runner::{Resource, Runner};
use crate::services::{self, RUN_DIR, RenderedService};
use crate::targets::resource::{self, Destroyer};

use super::build::label;
use crate::engine::docker::{ContainerInfo, ContainerSpec, DockerClient, PortSpec};
use crate::targets::ready::{LogTail, wait_listening};

/// How long services get to start listening.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The container name of an environment's machine.
pub fn machine_name(pf: &Pipelinefile, env: &str) -> String {
    if let Some(e) = pf.envs.get(env)
        && let TargetSettings::Docker(d) = &e.settings
        && let Some(name) = &d.container_name
    {
        return name.clone();
    }
    format!("pipe-{}-{env}", pf.pipeline.name.value)
}

/// The machines of a pipeline (of one environment, if given), running or not.
pub fn find_machines(
    client: &DockerClient,
    pipeline: &str,
    project: &str,
    env: Option<&str>,
) -> Result<Vec<ContainerInfo>> {
    find_by_role(client, pipeline, project, "machine", env)
}

/// This project's containers of a pipeline with a `pipe.role` (`machine`, `serving`), of one
/// environment if given, running or not.
pub fn find_by_role(
    client: &DockerClient,
    pipeline: &str,
    project: &str,
    role: &str,
    env: Option<&str>,
) -> Result<Vec<ContainerInfo>> {
    let p = format!("{}={pipeline}", label::PIPELINE);
    let role = format!("{}={role}", label::ROLE);
    let proj = format!("{}={project}", label::PROJECT);
    let e = env.map(|e| format!("{}={e}", label::ENV));
    let mut filters = vec![p.as_str(), role.as_str(), proj.as_str()];
    if let Some(e) = &e {
        filters.push(e);
    }
    Ok(client.containers_by_labels(&filters, true)?)
}

/// What a machine container is started with.
pub struct MachineSpec<'a> {
    pub name: String,
    pub image: &'a str,
    /// Publish services' ports on 127.0.0.1 (verify machines don't, so they never collide).
    pub publish: bool,
    pub extra_labels: BTreeMap<String, String>,
}

/// Starts a machine from an image, delivers its services and waits until their ports listen.
/// The container is journaled; the caller decides whether to keep it.
pub fn start_machine(
    runner: &mut Runner<'_>,
    client: &DockerClient,
    plan: &Plan,
    spec: MachineSpec,
) -> Result<(Resource, ContainerInfo)> {
    let pipeline = plan.pf.pipeline.name.value.clone();
    let pipeline_labels = BTreeMap::from([
        (label::PIPELINE.into(), pipeline),
        (
            label::PROJECT.into(),
            crate::state::project_id(&plan.pf.root),
        ),
        (
            label::PROJECT_DIR.into(),
            plan.pf.root.to_string_lossy().into_owned(),
        ),
        (label::ENV.into(), plan.env.clone()),
        (label::ROLE.into(), "machine".into()),
        (label::DIGEST.into(), plan.digests.app.to_string()),
        (label::LAYER.into(), "app".into()),
    ]);
    let mut labels = pipeline_labels;
    labels.extend(spec.extra_labels);
    let ports = if spec.publish {
        plan.pf
            .services
            .iter()
            .filter_map(|s| {
                Some(PortSpec::tcp(
                    s.port.as_ref()?.value,
                    Some(s.published_port()?),
                ))
            })
            .collect()
    } else {
        Vec::new()
    };
    let printer = runner.printer().clone();
    let res = {
        let _p = printer.phase("machine: create and start");
        create_container(
            runner,
            client,
            MachineRequest {
                name: spec.name.clone(),
                image: spec.image,
                labels,
                ports,
            },
        )?
    };
    let comm = Traced::boxed(
        Box::new(DockerExec::new(client.clone(), spec.name.clone())),
        &printer,
    );
    let rendered = plan.services();
    {
        let _p = printer.phase("machine: deliver services");
        deliver_services(&*comm, &rendered)?;
    }
    let _p = printer.phase("machine: services ready");
    wait_ready(&*comm, &rendered, READY_TIMEOUT)?;
    drop(_p);
    let info = client.inspect_container(&spec.name)?.ok_or_else(|| {
        Error::runtime(
            format!("container {} vanished right after it started", spec.name),
            Some("check `docker events` and the engine's log".to_string()),
        )
    })?;
    Ok((res, info))
}

/// A container for an app image: created, started, journaled (removed by the runner unless kept).
pub struct MachineRequest<'a> {
    pub name: String,
    pub image: &'a str,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<PortSpec>,
}

/// Creates and starts a container through the runner (journaled before it exists). Services are
/// not delivered yet: see [`deliver_services`].
pub fn create_container(
    runner: &mut Runner<'_>,
    client: &DockerClient,
    req: MachineRequest,
) -> Result<Resource> {
    let mut spec = ContainerSpec::new(req.image);
    spec.name = Some(req.name.clone());
    spec.hostname = Some(req.name.chars().take(63).collect());
    spec.labels = req.labels;
    spec.ports = req.ports;
    spec.tmpfs.insert(
        crate::services::RUN_DIR.into(),
        "rw,nosuid,nodev,mode=0755,size=16m".into(),
    );
    let res = Resource::Container {
        name: req.name.clone(),
    };
    resource::create(runner, Destroyer::with_docker(client.clone()), &res, || {
        let id = client.create_container(&spec)?;
        client.start_container(&id)?;
        Ok(id)
    })?;
    Ok(res)
}

/// Writes the services' environments and the supervisor into `/run/pipe` (a tmpfs: Docker's
/// archive API cannot write there, so the bytes go through an exec's stdin — never its argv),
/// all in one exec: a tar unpacked beside them, then moved into place, the supervisor last (the
/// container starts services as soon as it appears).
pub fn deliver_services(comm: &dyn Communicator, rendered: &[RenderedService]) -> Result<()> {
    let staging = format!("{RUN_DIR}/.deliver");
    let script = format!(
        "{} && \
         for f in {staging}/env/*; do [ -e \"$f\" ] || continue; mv -f \"$f\" {RUN_DIR}/env/; done && \
         mv -f {staging}/supervise {RUN_DIR}/supervise && rm -rf {staging}",
        unpack(&staging)
    );
    run_with_stdin(
        comm,
        &format!("{RUN_DIR} (services)"),
        script,
        services_archive(rendered)?,
    )
}

/// How [`restart_in_place`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InPlace {
    /// The services restarted and listen.
    Ready,
    /// The services restarted; whether they listen is for [`wait_ready`] to say.
    Restarted,
    /// The supervisor cannot restart them (another command, a container started by an older
    /// pipe): nothing changed.
    No,
}

/// Restarts the services of a running container in place (`pipe up --watch`): the
/// supervisor restarts each at once, nothing else of the container changes, and the same exec
/// waits until they listen (at most `timeout`).
pub fn restart_in_place(
    comm: &dyn Communicator,
    rendered: &[RenderedService],
    timeout: Duration,
) -> Result<InPlace> {
    let staging = format!("{RUN_DIR}/.restart");
    let script = format!(
        "{} || exit 1\n{}\n{}",
        unpack(&staging),
        services::restart_script(rendered, &staging, 10),
        crate::targets::ready::wait_script(
            &crate::targets::ready::service_ports(rendered),
            timeout.as_secs().max(1)
        )
    );
    let code = exec_with_stdin(
        comm,
        "restarting the services",
        script,
        services_archive(rendered)?,
        &[0, 3, 4, 5],
        Some("`pipe logs` shows the services' output; `pipe up` makes the machine again"),
    )?;
    Ok(match code {
        0 => InPlace::Ready,
        3 => InPlace::No,
        _ => InPlace::Restarted,
    })
}

/// The services' env files and the supervisor, as a tar for an exec's stdin.
fn services_archive(rendered: &[RenderedService]) -> Result<Vec<u8>> {
    let envs: Vec<(String, String)> = rendered
        .iter()
        .map(|s| (format!("env/{}", s.name), services::env_file(s)))
        .collect();
    let supervisor = services::supervisor_script(rendered);
    let mut files: Vec<(&str, &[u8], u32)> = envs
        .iter()
        .map(|(path, text)| (path.as_str(), text.as_bytes(), 0o600))
        .collect();
    files.push(("supervise", supervisor.as_bytes(), 0o755));
    let mut archive = Vec::new();
    crate::communicators::tar::write_files(&files, &mut archive)
        .map_err(|e| Error::runtime(format!("packing the services' files: {e}"), None))?;
    Ok(archive)
}

/// Unpacks the tar on stdin into `staging` (made afresh, private), with `RUN_DIR/env` made.
fn unpack(staging: &str) -> String {
    format!(
        "umask 077 && rm -rf {staging} && mkdir -p {staging} {RUN_DIR}/env && tar -x -f - -C {staging}"
    )
}

/// Runs a shell script that writes `what` from its stdin; a failure names it and shows stderr.
fn run_with_stdin(
    comm: &dyn Communicator,
    what: &str,
    script: String,
    stdin: Vec<u8>,
) -> Result<()> {
    exec_with_stdin(comm, &format!("writing {what}"), script, stdin, &[0], None).map(|_| ())
}

/// Runs a shell script with `stdin`; its exit code when one of `ok`, else an error that says
/// what it was `doing`, the code and stderr, with `hint`.
fn exec_with_stdin(
    comm: &dyn Communicator,
    doing: &str,
    script: String,
    stdin: Vec<u8>,
    ok: &[i32],
    hint: Option<&str>,
) -> Result<i32> {
    let mut sink = Collect::default();
    let code = comm
        .exec(
            &ExecRequest {
                stdin: Some(stdin),
                ..ExecRequest::shell(script)
            },
            &mut sink,
        )
        .map_err(|e| match e {
            crate::communicators::ExecError::Interrupted => Error::Interrupted,
            e => Error::runtime(format!("{doing} on {}: {e}", comm.describe()), None),
        })?;
    if !ok.contains(&code) {
        return Err(Error::runtime(
            format!(
                "{doing} on {} failed (exit code {code}): {}",
                comm.describe(),
                String::from_utf8_lossy(&sink.stderr).trim()
            ),
            hint.map(str::to_string),
        ));
    }
    Ok(code)
}

/// Waits until every service with a port listens; on timeout the error shows its log's tail.
pub fn wait_ready(
    comm: &dyn Communicator,
    rendered: &[RenderedService],
    timeout: Duration,
) -> Result<()> {
    let log = LogTail {
        command: |name| ExecRequest {
            argv: vec![
                "tail".into(),
                "-n".into(),
                "20".into(),
                services::log_path(name),
            ],
            ..Default::default()
        },
        title: "last lines of its log",
    };
    wait_listening(comm, rendered, timeout, Duration::from_millis(100), &log)
}
