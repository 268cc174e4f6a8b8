//! `pipe init`: a commented starter Pipelinefile that validates as written.

use crate::cli::InitArgs;
use crate::config::FILE_NAME;
use crate::error::{Error, Result};

use super::Ctx;

/// The starter file; `{{NAME}}` is replaced with the pipeline's name.
const TEMPLATE: &str = include_str!("init_template.toml");

pub fn run(ctx: &Ctx, args: InitArgs) -> Result<()> {
    let path = ctx.cwd.join(FILE_NAME);
    if path.exists() {
        return Err(Error::usage(
            format!("{FILE_NAME} already exists here; pipe init never overwrites"),
            Some("edit it, or remove it first to start over".to_string()),
        ));
    }
    let name = args.name.unwrap_or_else(|| {
        ctx.cwd
            .file_name()
            .and_then(|n| n.to_str())
            .map(sanitize)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "app".to_string())
    });
    std::fs::write(&path, TEMPLATE.replace("{{NAME}}", &name))?;
    ctx.printer.result(
        "init",
        serde_json::json!({ "file": FILE_NAME, "pipeline": name }),
        &format!(
            "wrote {FILE_NAME} for pipeline `{name}`; next: pipe validate, then pipe up --local"
        ),
    );
    Ok(())
}

/// Lowercase letters, digits and dashes: valid in image names, tags and AWS names.
fn sanitize(s: &str) -> String {
    let s: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.trim_matches('-').to_string()
}
