//! `pipe import packer FILE...`: a Pipelinefile from Packer templates, validated before it is
//! reported; what has no equivalent is printed as warnings (and listed at the file's top).

use crate::cli::{ImportCommand, ImportPackerArgs};
use crate::config;
use crate::error::{Error, Result};
use crate::import::packer::{self, ImportError, LOCAL_BOX};

use super::Ctx;
use super::init::{BOX_PATH, BOX_RECIPE};

pub fn run(ctx: &Ctx, cmd: ImportCommand) -> Result<()> {
    match cmd {
        ImportCommand::Packer(args) => packer_templates(ctx, args),
    }
}

fn packer_templates(ctx: &Ctx, args: ImportPackerArgs) -> Result<()> {
    let output = ctx.cwd.join(&args.output);
    if output.exists() && !args.force {
        return Err(Error::usage(
            format!("{} already exists", args.output.display()),
            Some("pass --force to overwrite it, or --output PATH to write elsewhere".into()),
        ));
    }
    let fallback = ctx
        .cwd
        .file_name()
        .and_then(|n| n.to_str())
        .map(config::parse::sanitize_name)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "app".to_string());
    if let Some(name) = args
        .name
        .as_deref()
        .filter(|n| !config::parse::is_valid_name(n))
    {
        return Err(Error::usage(
            format!("invalid pipeline name `{name}`"),
            Some("use lowercase letters, digits and `-`".into()),
        ));
    }
    let files: Vec<_> = args.files.iter().map(|f| ctx.cwd.join(f)).collect();
    let shown: Vec<_> = files
        .iter()
        .zip(&args.files)
        .map(|(abs, given)| {
            if given.is_absolute() {
                abs.clone()
            } else {
                given.clone()
            }
        })
        .collect();
    let imported = packer::import(&shown, args.name.as_deref(), &fallback)
        .map_err(|e: ImportError| Error::usage(e.to_string(), e.hint()))?;
    let dir = output.parent().unwrap_or(&ctx.cwd).to_path_buf();
    let mut written = vec![args.output.display().to_string()];
    for recipe in &imported.box_recipes {
        let path = dir.join("boxes").join(format!("{recipe}.toml"));
        if recipe == LOCAL_BOX && !path.exists() {
            std::fs::create_dir_all(path.parent().expect("boxes/"))?;
            std::fs::write(&path, BOX_RECIPE)?;
            written.push(BOX_PATH.to_string());
        }
    }
    std::fs::write(&output, &imported.text)?;
    for note in &imported.notes {
        ctx.printer.warn(format!("import: {note}"), None);
    }
    // The result must load as any Pipelinefile does: a problem here is shown with its place.
    config::load(&output, &ctx.cwd)?;
    ctx.printer.result(
        "import",
        serde_json::json!({
            "files": written,
            "pipeline": imported.name,
            "not_imported": imported.notes,
        }),
        &format!(
            "wrote {} for pipeline `{}` ({} note{} at its top); next: pipe validate, then pipe up --local",
            written.join(" and "),
            imported.name,
            imported.notes.len(),
            if imported.notes.len() == 1 { "" } else { "s" }
        ),
    );
    Ok(())
}
