//! `pipe exec -- CMD` and `pipe ssh`: into the running machine (a container through docker
//! exec, a qemu VM over SSH with its own key).

use crate::cli::ExecArgs;
use crate::error::{Error, Result};
use crate::process;

use super::{Ctx, local};

pub fn run(ctx: &Ctx, args: ExecArgs) -> Result<()> {
    crate::interrupt::install();
    let pf = ctx.pipelinefile()?;
    let (env, target) = local::open(ctx, &pf, "exec")?;
    let m = target.running(&pf, &env)?;
    local::run_passthrough(&*m.comm, args.command, ctx.printer, "exec", &m.name)
}

/// An interactive login shell with a TTY, through the CLI that owns the terminal (`docker
/// exec -it`, `ssh -t` with the machine's key, port and known_hosts).
pub fn ssh(ctx: &Ctx) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let (env, target) = local::open(ctx, &pf, "ssh")?;
    let (mut cmd, hint) = target.login(&pf, &env)?;
    let status =
        process::status_of(&mut cmd).map_err(|e| Error::runtime(e.to_string(), Some(hint)))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(Error::Exit(code)),
        None => Err(Error::Interrupted),
    }
}
