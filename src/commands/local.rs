//! What the local-machine commands share: the plan for the chosen environment, the Docker
//! connection, and finding the environment's machine.

use std::path::PathBuf;

use crate::config::{Pipelinefile, TargetKind};
use crate::engine::docker::{ContainerInfo, DockerClient};
use crate::error::{Error, Result};
use crate::plan::{self, Plan, Selection};
use crate::targets::docker::machine::{self, find_machines};
use crate::targets::qemu::machine::{self as qmachine, MachineRecord};
use crate::targets::qemu::vm;

use super::Ctx;

/// The selection from the global flags.
pub fn selection(ctx: &Ctx, local: bool, target: Option<String>) -> Selection {
    Selection {
        env: ctx.global.env.clone(),
        local,
        target,
        cli_vars: ctx.global.vars.clone(),
    }
}

/// A full plan for a local command.
pub fn make_plan<'a>(ctx: &Ctx, pf: &'a Pipelinefile, local: bool) -> Result<Plan<'a>> {
    plan::make(pf, &selection(ctx, local, None), ctx.printer)
}

/// The environment a machine command acts on, and its local target kind: the environment's,
/// or qemu when its machine was made with `pipe up --target qemu` (as `.pipe/state.json` and
/// the machine's folder say).
pub fn env_and_target(ctx: &Ctx, pf: &Pipelinefile) -> Result<(String, TargetKind)> {
    let env = plan::pick_env(pf, ctx.global.env.as_deref())?;
    let mut target = plan::effective_target(pf, &env, &selection(ctx, true, None))?;
    if target == TargetKind::Docker
        && crate::state::State::load(&pf.root)
            .machines
            .get(&env)
            .is_some_and(|m| m.target == "qemu")
        && qmachine::load_record(&qemu_dir(pf, &env)).is_some()
    {
        target = TargetKind::Qemu;
    }
    Ok((env, target))
}

/// A target this build of pipe cannot run yet (ec2): says how to run the environment on the
/// local Docker engine instead.
pub fn remote_hint(ctx: &Ctx, e: Error, env: &str) -> Error {
    if let Error::NotImplemented(_) = e {
        ctx.printer.warn(
            format!("env `{env}` runs on ec2"),
            Some(format!(
                "add --local to run `{env}` on the local Docker engine (`pipe bake --env {env} --local`, `pipe promote {env} --local`)"
            )),
        );
    }
    e
}

/// Fails for targets without local machines (ec2).
pub fn require_local(target: TargetKind, command: &'static str) -> Result<()> {
    match target {
        TargetKind::Docker | TargetKind::Qemu => Ok(()),
        TargetKind::Ec2 => Err(Error::usage(
            format!("`pipe {command}` works on local machines, and this environment targets ec2"),
            Some("add --local to run it on docker".to_string()),
        )),
    }
}

/// The folder of an environment's qemu machine (`.pipe/qemu/<name>/`).
pub fn qemu_dir(pf: &Pipelinefile, env: &str) -> PathBuf {
    qmachine::machine_dir(&pf.root, &qmachine::machine_name(pf, env))
}

/// The records of this project's qemu machines (of `env`, or all), with their folders.
pub fn qemu_machines(pf: &Pipelinefile, env: Option<&str>) -> Vec<(PathBuf, MachineRecord)> {
    let mut found: Vec<(PathBuf, MachineRecord)> = pf
        .envs
        .keys()
        .filter(|e| env.is_none_or(|want| want == e.as_str()))
        .filter_map(|e| {
            let dir = qemu_dir(pf, e);
            qmachine::load_record(&dir).map(|rec| (dir, rec))
        })
        .collect();
    found.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    found
}

/// What a qemu machine is doing: QMP's status (`running`, `paused`, ...) while QEMU runs,
/// `running` when its QEMU lives but QMP does not answer, else `stopped`.
pub fn qemu_state(dir: &std::path::Path, rec: &MachineRecord) -> String {
    if !rec.running() {
        return "stopped".into();
    }
    vm::status(dir).unwrap_or_else(|| "running".into())
}

/// The environment's running qemu machine (found as `pipe up` does: its record, a live QEMU
/// by pid file, QMP), or a clear error.
pub fn running_qemu_machine(pf: &Pipelinefile, env: &str) -> Result<MachineRecord> {
    let dir = qemu_dir(pf, env);
    let Some(rec) = qmachine::load_record(&dir) else {
        return Err(Error::runtime(
            format!("env `{env}` has no qemu machine"),
            Some("create it with `pipe up` (or `pipe up --target qemu`)".to_string()),
        ));
    };
    match qemu_state(&dir, &rec).as_str() {
        "running" => Ok(rec),
        state => Err(Error::runtime(
            format!("machine {} of env `{env}` is {state}", rec.name),
            Some("start it with `pipe up`".to_string()),
        )),
    }
}

/// The environment's machine container, running or not.
pub fn find_machine(
    client: &DockerClient,
    pf: &Pipelinefile,
    env: &str,
) -> Result<Option<ContainerInfo>> {
    let name = machine::machine_name(pf, env);
    let project = crate::state::project_id(&pf.root);
    let found = find_machines(client, &pf.pipeline.name.value, &project, Some(env))?;
    Ok(found.into_iter().find(|c| c.name == name).or(None))
}

/// The environment's running machine, or a clear error.
pub fn running_machine(
    client: &DockerClient,
    pf: &Pipelinefile,
    env: &str,
) -> Result<ContainerInfo> {
    match find_machine(client, pf, env)? {
        Some(c) if c.running => Ok(c),
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

/// Hands a machine command's output straight to the terminal (`pipe exec`, `pipe logs`).
pub struct Passthrough<'a>(pub &'a crate::ui::Printer, pub &'static str);

impl crate::communicators::OutputSink for Passthrough<'_> {
    fn chunk(&mut self, stream: crate::communicators::Stream, data: &[u8]) {
        self.0.passthrough(self.1, stream, data);
    }
}

/// Runs `argv` on the machine with its output passed straight through; the command's exit
/// code becomes pipe's (`pipe exec`, `pipe logs`).
pub fn run_passthrough(
    comm: &dyn crate::communicators::Communicator,
    argv: Vec<String>,
    printer: &crate::ui::Printer,
    source: &'static str,
    machine: &str,
) -> Result<()> {
    let code = comm
        .exec(
            &crate::communicators::ExecRequest {
                argv,
                ..Default::default()
            },
            &mut Passthrough(printer, source),
        )
        .map_err(|e| match e {
            crate::communicators::ExecError::Interrupted => Error::Interrupted,
            e => Error::runtime(format!("{source} in {machine}: {e}"), None),
        })?;
    if code == 0 {
        Ok(())
    } else {
        Err(Error::Exit(code))
    }
}
