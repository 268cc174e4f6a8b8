//! `pipe validate`: every problem at once, or a summary.

use crate::cli::ValidateArgs;
use crate::error::Result;

use super::Ctx;

pub fn run(ctx: &Ctx, args: ValidateArgs) -> Result<()> {
    let pf = ctx.pipelinefile()?;
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
