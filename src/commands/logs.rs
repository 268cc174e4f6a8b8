//! `pipe logs [NAME]`: a service's log from the machine (its log file in a container, its
//! systemd journal on a qemu VM).

use crate::cli::LogsArgs;
use crate::communicators::docker::DockerExec;
use crate::config::TargetKind;
use crate::engine::docker::DockerClient;
use crate::error::{Error, Result};
use crate::services;

use super::{Ctx, local};

pub fn run(ctx: &Ctx, args: LogsArgs) -> Result<()> {
    crate::interrupt::install();
    let pf = ctx.pipelinefile()?;
    let (env, target) = local::env_and_target(ctx, &pf)?;
    local::require_local(target, "logs")?;
    let names: Vec<String> = match &args.service {
        Some(n) => {
            if !pf.services.iter().any(|s| &s.name.value == n) {
                let known: Vec<&str> = pf.services.iter().map(|s| s.name.value.as_str()).collect();
                return Err(Error::usage(
                    format!("no service `{n}` in the Pipelinefile"),
                    Some(format!("services are: {}", known.join(", "))),
                ));
            }
            vec![n.clone()]
        }
        None => pf.services.iter().map(|s| s.name.value.clone()).collect(),
    };
    if names.is_empty() {
        return Err(Error::usage(
            "the Pipelinefile declares no [[service]]",
            None,
        ));
    }
    if target == TargetKind::Qemu {
        return logs_qemu(ctx, &pf, &env, &args, &names);
    }
    let client = DockerClient::connect()?;
    let c = local::running_machine(&client, &pf, &env)?;
    let comm = DockerExec::new(client, c.name.clone());
    let mut argv = vec!["tail".to_string(), "-n".into(), args.lines.to_string()];
    if args.follow {
        argv.push("-F".into());
    }
    if names.len() > 1 {
        argv.push("-v".into());
    }
    argv.extend(names.iter().map(|n| services::log_path(n)));
    local::run_passthrough(&comm, argv, ctx.printer, "logs", &c.name)
}

/// `journalctl -u pipe-<name>.service -n N [-f]` on the VM, over SSH.
fn logs_qemu(
    ctx: &Ctx,
    pf: &crate::config::Pipelinefile,
    env: &str,
    args: &LogsArgs,
    names: &[String],
) -> Result<()> {
    let rec = local::running_qemu_machine(pf, env)?;
    let comm = rec.vm.ssh(super::exec::QEMU_SSH_TIMEOUT);
    let mut argv = vec![
        "journalctl".to_string(),
        "--no-pager".into(),
        "-n".into(),
        args.lines.to_string(),
    ];
    if args.follow {
        argv.push("-f".into());
    }
    for n in names {
        argv.push("-u".into());
        argv.push(services::systemd_unit_name(n));
    }
    local::run_passthrough(&comm, argv, ctx.printer, "logs", &rec.name)
}
