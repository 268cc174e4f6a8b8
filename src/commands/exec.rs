//! `pipe exec -- CMD` and `pipe ssh`: into the running machine (a container through docker
//! exec, a qemu VM over SSH with its own key).

use std::time::Duration;

use crate::cli::ExecArgs;
use crate::communicators::docker::DockerExec;
use crate::config::TargetKind;
use crate::engine::docker::DockerClient;
use crate::error::{Error, Result};
use crate::process;

use super::{Ctx, local};

pub fn run(ctx: &Ctx, args: ExecArgs) -> Result<()> {
    crate::interrupt::install();
    let pf = ctx.pipelinefile()?;
    let (env, target) = local::env_and_target(ctx, &pf)?;
    local::require_local(target, "exec")?;
    if target == TargetKind::Qemu {
        return exec_qemu(ctx, &pf, &env, args.command);
    }
    let client = DockerClient::connect()?;
    let c = local::running_machine(&client, &pf, &env)?;
    let comm = DockerExec::new(client, c.name.clone());
    local::run_passthrough(&comm, args.command, ctx.printer, "exec", &c.name)
}

/// An interactive login shell with a TTY, through the docker CLI (which owns the terminal).
pub fn ssh(ctx: &Ctx) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let (env, target) = local::env_and_target(ctx, &pf)?;
    local::require_local(target, "ssh")?;
    if target == TargetKind::Qemu {
        return ssh_qemu(&pf, &env);
    }
    let client = DockerClient::connect()?;
    let c = local::running_machine(&client, &pf, &env)?;
    let status = process::status_of(
        std::process::Command::new("docker")
            .args(["exec", "-it", &c.name, "sh", "-c"])
            .arg("if command -v bash >/dev/null; then exec bash -l; else exec sh -l; fi"),
    )
    .map_err(|e| {
        Error::runtime(
            e.to_string(),
            Some(format!(
                "an interactive shell needs the docker CLI: install it, or use `pipe exec -- sh` (no TTY) on {}",
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

/// How long `exec`, `logs` and `ssh` wait for a running VM's SSH.
pub const QEMU_SSH_TIMEOUT: Duration = Duration::from_secs(30);

fn exec_qemu(
    ctx: &Ctx,
    pf: &crate::config::Pipelinefile,
    env: &str,
    argv: Vec<String>,
) -> Result<()> {
    let rec = local::running_qemu_machine(pf, env)?;
    let comm = rec.vm.ssh(QEMU_SSH_TIMEOUT);
    local::run_passthrough(&comm, argv, ctx.printer, "exec", &rec.name)
}

/// An interactive login shell on the VM through the system `ssh` client (which owns the
/// terminal), with the machine's key, port and known_hosts.
fn ssh_qemu(pf: &crate::config::Pipelinefile, env: &str) -> Result<()> {
    let rec = local::running_qemu_machine(pf, env)?;
    let dir = &rec.vm.dir;
    let mut known_hosts = std::ffi::OsString::from("UserKnownHostsFile=");
    known_hosts.push(dir.join("known_hosts"));
    let mut cmd = std::process::Command::new("ssh");
    cmd.arg("-i")
        .arg(dir.join("id_ed25519"))
        .args(["-p", &rec.vm.ssh_port.to_string()])
        .arg("-o")
        .arg(known_hosts)
        .args([
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
            "-t",
            "root@127.0.0.1",
        ]);
    let status = process::status_of(&mut cmd).map_err(|e| {
        Error::runtime(
            e.to_string(),
            Some(format!(
                "an interactive shell needs the ssh client: install openssh-client, or use `pipe exec -- sh` (no TTY) on {}",
                rec.name
            )),
        )
    })?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(Error::Exit(code)),
        None => Err(Error::Interrupted),
    }
}
