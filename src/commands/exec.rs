//! `pipe exec -- CMD` and `pipe ssh`: into the running machine.

use crate::cli::ExecArgs;
use crate::communicators::docker::DockerExec;
use crate::communicators::{Communicator, ExecRequest};
use crate::error::{Error, Result};
use crate::targets::docker::DockerClient;

use super::{Ctx, local};

pub fn run(ctx: &Ctx, args: ExecArgs) -> Result<()> {
    crate::interrupt::install();
    let pf = ctx.pipelinefile()?;
    let (env, target) = local::env_and_target(ctx, &pf)?;
    local::require_docker(target, "exec")?;
    let client = DockerClient::connect()?;
    let c = local::running_machine(&client, &pf, &env)?;
    let comm = DockerExec::new(client, c.name.clone());
    let code = comm
        .exec(
            &ExecRequest {
                argv: args.command,
                ..Default::default()
            },
            &mut local::Passthrough(ctx.printer, "exec"),
        )
        .map_err(|e| Error::runtime(format!("exec in {}: {e}", c.name), None))?;
    if code == 0 {
        Ok(())
    } else {
        Err(Error::Exit(code))
    }
}

/// An interactive login shell with a TTY, through the docker CLI (which owns the terminal).
pub fn ssh(ctx: &Ctx) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let (env, target) = local::env_and_target(ctx, &pf)?;
    local::require_docker(target, "ssh")?;
    let client = DockerClient::connect()?;
    let c = local::running_machine(&client, &pf, &env)?;
    let status = std::process::Command::new("docker")
        .args(["exec", "-it", &c.name, "sh", "-c"])
        .arg("if command -v bash >/dev/null; then exec bash -l; else exec sh -l; fi")
        .status()
        .map_err(|e| {
            Error::runtime(
                format!("cannot run the docker CLI for an interactive shell: {e}"),
                Some(format!(
                    "install it, or use `pipe exec -- sh` (no TTY) on {}",
                    c.name
                )),
            )
        })?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(Error::Exit(code)),
        None => Err(Error::Interrupted),
    }
}
