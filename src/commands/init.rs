//! `pipe init`: a commented starter Pipelinefile that validates as written, and the box recipe
//! it names, so that `pipe validate` passes in a fresh folder.

use std::path::Path;

use crate::cli::InitArgs;
use crate::config::FILE_NAME;
use crate::config::schema::FILE_NAME as SCHEMA_NAME;
use crate::error::{Error, Result};

use super::Ctx;

/// The starter file; `{{NAME}}` is replaced with the pipeline's name.
const TEMPLATE: &str = include_str!("init_template.toml");

/// The box recipe the starter file uses (`box = "debian-12"`): the repository's own.
pub(super) const BOX_RECIPE: &str = include_str!("../../boxes/debian-12.toml");
pub(super) const BOX_PATH: &str = "boxes/debian-12.toml";

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
    if !crate::config::parse::is_valid_name(&name) {
        let fixed = sanitize(&name);
        return Err(Error::usage(
            format!("invalid pipeline name `{name}`"),
            Some(format!(
                "use lowercase letters, digits and `-`{}",
                if fixed.is_empty() {
                    String::new()
                } else {
                    format!(", e.g. `--name {fixed}`")
                }
            )),
        ));
    }
    // An existing recipe is the user's: keep it.
    let recipe = ctx.cwd.join(BOX_PATH);
    let wrote_recipe = !recipe.exists();
    if wrote_recipe {
        std::fs::create_dir_all(recipe.parent().unwrap_or(Path::new(".")))?;
        std::fs::write(&recipe, BOX_RECIPE)?;
    }
    std::fs::write(&path, TEMPLATE.replace("{{NAME}}", &name))?;
    let mut files = vec![FILE_NAME];
    if wrote_recipe {
        files.push(BOX_PATH);
    }
    // The schema the `#:schema` line points at, for editors; refreshed by `pipe schema`.
    std::fs::write(ctx.cwd.join(SCHEMA_NAME), crate::config::schema::render())?;
    files.push(SCHEMA_NAME);
    ctx.printer.result(
        "init",
        serde_json::json!({ "file": FILE_NAME, "files": files, "pipeline": name }),
        &format!(
            "wrote {} for pipeline `{name}`; next: pipe validate, then pipe up --local",
            list(&files)
        ),
    );
    Ok(())
}

/// `a`, `a and b`, `a, b and c`.
fn list(files: &[&str]) -> String {
    match files {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Lowercase letters, digits and dashes: valid in image names, tags and AWS names.
fn sanitize(s: &str) -> String {
    crate::config::parse::sanitize_name(s)
}
