//! What the local-machine commands share: the plan for the chosen environment, the Docker
//! connection, and finding the environment's machine.

use crate::config::{Pipelinefile, TargetKind};
use crate::error::{Error, Result};
use crate::plan::{self, Plan, Selection};
use crate::targets::local::LocalTarget;

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
/// or the one its machine was made on with `pipe up --target KIND` (as `.pipe/state.json`
/// says, and that target still has the machine).
pub fn env_and_target(ctx: &Ctx, pf: &Pipelinefile) -> Result<(String, TargetKind)> {
    let env = plan::pick_env(pf, ctx.global.env.as_deref())?;
    let declared = plan::effective_target(pf, &env, &selection(ctx, true, None))?;
    if let Some(m) = crate::state::State::load(&pf.root).machines.get(&env)
        && let Some(kind) = m.kind()
        && kind != declared
        && let Ok(target) = crate::targets::open_local(kind, pf, "up")
        && target.still_there(pf, &env, m)
    {
        return Ok((env, kind));
    }
    Ok((env, declared))
}

/// The environment a machine command acts on and its local target, opened.
pub fn open(ctx: &Ctx, pf: &Pipelinefile, command: &str) -> Result<(String, Box<dyn LocalTarget>)> {
    let (env, kind) = env_and_target(ctx, pf)?;
    Ok((env, crate::targets::open_local(kind, pf, command)?))
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
