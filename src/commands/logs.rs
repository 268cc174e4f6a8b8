//! `pipe logs [NAME]`: a service's log from the machine.

use crate::cli::LogsArgs;
use crate::communicators::docker::DockerExec;
use crate::communicators::{Communicator, ExecRequest};
use crate::error::{Error, Result};
use crate::services;
use crate::targets::docker::DockerClient;

use super::{Ctx, local};

pub fn run(ctx: &Ctx, args: LogsArgs) -> Result<()> {
    crate::interrupt::install();
    let pf = ctx.pipelinefile()?;
    let (env, target) = local::env_and_target(ctx, &pf)?;
    local::require_docker(target, "logs")?;
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
    let code = comm
        .exec(
            &ExecRequest {
                argv,
                ..Default::default()
            },
            &mut local::Passthrough(ctx.printer, "logs"),
        )
        .map_err(|e| match e {
            crate::communicators::ExecError::Interrupted => Error::Interrupted,
            e => Error::runtime(format!("reading logs in {}: {e}", c.name), None),
        })?;
    if code == 0 {
        Ok(())
    } else {
        Err(Error::Exit(code))
    }
}
