//! `pipe validate`: every problem at once, or a summary.

use crate::cli::ValidateArgs;
use crate::config::{BoxSource, Pipelinefile, TargetKind, vars};
use crate::error::Result;
use crate::layers::{self, DigestError, DigestKey, HostEnv, VarValue};

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
    let mut data = serde_json::json!({
        "file": shown.display().to_string(),
        "pipeline": pf.pipeline.name.value,
        "environments": envs,
    });
    let mut human = format!(
        "{} is valid: pipeline `{}`, environments: {}",
        shown.display(),
        pf.pipeline.name.value,
        if envs.is_empty() {
            "none".to_string()
        } else {
            envs.join(", ")
        }
    );
    if args.digests {
        let (json, lines) = digests(ctx, &pf)?;
        data["digests"] = json;
        for line in lines {
            human.push('\n');
            human.push_str(&line);
        }
    }
    ctx.printer.result("validate", data, &human);
    Ok(())
}

/// `--var` must name declared vars and `--env` a known environment; host variables that are
/// unset are only a warning here (the command that uses the var fails).
fn check_vars(ctx: &Ctx, pf: &Pipelinefile) -> Result<()> {
    let host = |k: &str| std::env::var(k).ok();
    let envs: Vec<Option<&str>> = match ctx.global.env.as_deref() {
        Some(env) => vec![Some(env)],
        None if pf.envs.is_empty() => vec![None],
        None => pf.envs.keys().map(|k| Some(k.as_str())).collect(),
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

/// `--digests`: the base and app layer digests of each environment (or `--env`'s), on its
/// declared target, and the base's checkpoint where the target keeps one (a precache step, on
/// docker or qemu). JSON gets the full digests, humans
/// `env <name> (<target>): base <short> app <short>[ checkpoint <short>]`. An environment
/// whose layers use a var that has no value here (an unset host variable) is reported as
/// unavailable, not an error, like the unset-variable warnings above.
fn digests(ctx: &Ctx, pf: &Pipelinefile) -> Result<(serde_json::Value, Vec<String>)> {
    let host = |k: &str| std::env::var(k).ok();
    let names: Vec<&str> = match ctx.global.env.as_deref() {
        Some(env) => vec![env],
        None => pf.envs.keys().map(String::as_str).collect(),
    };
    let timestamp = vars::timestamp();
    let git_commit = vars::git_commit(&pf.root);
    // Loaded (or created) only once a layer uses a sensitive var.
    let mut key: Option<DigestKey> = None;
    let mut json = Vec::new();
    let mut lines = Vec::new();
    for name in names {
        let target = pf.envs[name].target.value;
        // An ami_filter becomes an AMI id only through AWS, and the base digest covers the
        // id: validate stays offline and says so instead of printing a digest no bake has.
        if target == TargetKind::Ec2
            && pf
                .boxes
                .get(target)
                .is_some_and(|b| matches!(b.value, BoxSource::AmiFilter { .. }))
        {
            let message =
                "needs AWS: [box] ec2 is an ami_filter, which `pipe bake` resolves to an AMI id";
            json.push(serde_json::json!({
                "env": name,
                "target": target.as_str(),
                "error": message,
                "needs_aws": true,
            }));
            lines.push(format!("env {name} ({target}): unavailable ({message})"));
            continue;
        }
        let resolved = vars::resolve(pf, Some(name), &ctx.global.vars, &host)?;
        let mut inputs = crate::plan::digest_inputs(pf, target, HostEnv::Process)?;
        inputs.vars = resolved
            .vars
            .iter()
            .map(|(k, v)| {
                let value = VarValue {
                    value: v.value.clone(),
                    sensitive: v.sensitive,
                };
                (k.clone(), value)
            })
            .collect();
        inputs.host_env = HostEnv::Process;
        inputs.timestamp = timestamp.clone();
        inputs.git_commit = git_commit.clone();
        inputs.key = key.clone();
        let mut result = layers::compute(pf, name, &inputs);
        if let Err(DigestError::MissingKey { .. }) = result {
            let loaded = DigestKey::load()?;
            inputs.key = Some(loaded.clone());
            key = Some(loaded);
            result = layers::compute(pf, name, &inputs);
        }
        match result {
            Ok(d) => {
                let checkpoint = d.checkpoint.filter(|_| target.checkpoints_base());
                json.push(serde_json::json!({
                    "env": name,
                    "target": target.as_str(),
                    "base": d.base.to_string(),
                    "app": d.app.to_string(),
                    "checkpoint": checkpoint.as_ref().map(ToString::to_string),
                }));
                let mut line = format!(
                    "env {name} ({target}): base {} app {}",
                    d.base.short(),
                    d.app.short()
                );
                if let Some(c) = &checkpoint {
                    line.push_str(&format!(" checkpoint {}", c.short()));
                }
                lines.push(line);
            }
            Err(e @ DigestError::UnresolvedVar { .. }) => {
                let message = e.to_string();
                ctx.printer
                    .warn(format!("env {name}: no layer digests: {message}"), e.hint());
                json.push(serde_json::json!({
                    "env": name,
                    "target": target.as_str(),
                    "error": message,
                }));
                lines.push(format!("env {name} ({target}): unavailable ({message})"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok((serde_json::Value::Array(json), lines))
}
