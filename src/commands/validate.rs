//! `pipe validate`: every problem at once, or a summary.

use crate::cli::ValidateArgs;
use crate::config::{Pipelinefile, vars};
use crate::error::Result;

use super::Ctx;

pub fn run(ctx: &Ctx, args: ValidateArgs) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    check_vars(ctx, &pf)?;
    let shown = pf
        .path
        .strip_prefix(&ctx.cwd)
        .unwrap_or(&pf.path)
        .to_path_buf();
    let envs: Vec<&str> = pf.envs.keys().map(String::as_str).collect();
    let _ = args.digests;
    ctx.printer.result(
        "validate",
        serde_json::json!({
            "file": shown.display().to_string(),
            "pipeline": pf.pipeline.name.value,
            "environments": envs,
        }),
        &format!(
            "{} is valid: pipeline `{}`, environments: {}",
            shown.display(),
            pf.pipeline.name.value,
            if envs.is_empty() {
                "none".to_string()
            } else {
                envs.join(", ")
            }
        ),
    );
    Ok(())
}

/// `--var` must name declared vars and `--env` a known environment; host variables that are
/// unset are only a warning here (the command that uses the var fails).
fn check_vars(ctx: &Ctx, pf: &Pipelinefile) -> Result<()> {
    let host = |k: &str| std::env::var(k).ok();
    let envs: Vec<Option<&str>> = match ctx.global.env.as_deref() {
        Some(env) => vec![Some(env)],
        None => std::iter::once(None)
            .chain(pf.envs.keys().map(|k| Some(k.as_str())))
            .collect(),
    };
    let mut warned = Vec::new();
    for env in envs {
        let resolved = vars::resolve(pf, env, &ctx.global.vars, &host)?;
        for (var, host_var) in &resolved.unset {
            if !warned.contains(var) {
                ctx.printer.warn(
                    format!("var `{var}` reads host variable {host_var}, which is unset"),
                    Some(format!(
                        "commands that use it will fail until you export {host_var} or pass `--var {var}=...`"
                    )),
                );
                warned.push(var.clone());
            }
        }
    }
    Ok(())
}
