//! `pipe logs [NAME]`: a service's log from the machine (its log file in a container, its
//! systemd journal on a qemu VM).

use crate::cli::LogsArgs;
use crate::error::{Error, Result};

use super::{Ctx, local};

pub fn run(ctx: &Ctx, args: LogsArgs) -> Result<()> {
    crate::interrupt::install();
    let pf = ctx.pipelinefile()?;
    let (env, target) = local::open(ctx, &pf, "logs")?;
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
    let m = target.running(&pf, &env)?;
    let argv = target.logs_argv(&names, args.lines, args.follow);
    local::run_passthrough(&*m.comm, argv, ctx.printer, "logs", &m.name)
}
