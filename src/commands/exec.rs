//! `pipe exec -- CMD` and `pipe ssh`: into the running machine (a container through docker
//! exec, a qemu VM over SSH with its own key). `pipe exec --service NAME` runs the command as
//! that service runs: the machine's own copy of its environment is read by a shell there (so
//! sensitive values never leave the machine's tmpfs but through a process environment), then
//! its folder and user.

use crate::cli::ExecArgs;
use crate::error::{Error, Result};
use crate::process;
use crate::services;

use super::{Ctx, local};

pub fn run(ctx: &Ctx, args: ExecArgs) -> Result<()> {
    crate::interrupt::install();
    let pf = ctx.pipelinefile()?;
    let (env, target) = local::open(ctx, &pf, "exec")?;
    let argv = match &args.service {
        None => args.command,
        Some(name) => {
            let Some(svc) = pf.services.iter().find(|s| &s.name.value == name) else {
                let names: Vec<&str> = pf.services.iter().map(|s| s.name.value.as_str()).collect();
                return Err(Error::usage(
                    format!("the Pipelinefile has no [[service]] `{name}`"),
                    Some(if names.is_empty() {
                        "it declares no services".to_string()
                    } else {
                        format!("services: {}", names.join(", "))
                    }),
                ));
            };
            services::exec_as_service(
                name,
                svc.user.as_deref(),
                svc.workdir.as_deref(),
                &services::env_files(name),
                &args.command,
            )
        }
    };
    let m = target.running(&pf, &env)?;
    local::run_passthrough(&*m.comm, argv, ctx.printer, "exec", &m.name)
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
