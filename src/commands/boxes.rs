//! `pipe box build|list|remove`: base OS images built from `boxes/NAME.toml`.

use super::Ctx;
use crate::boxes::{self, BoxImage, BoxTarget, Recipe};
use crate::cli::{BoxBuildArgs, BoxCommand, BoxRemoveArgs};
use crate::error::{Error, Result};
use crate::targets::docker::DockerClient;

pub fn run(ctx: &Ctx, cmd: BoxCommand) -> Result<()> {
    match cmd {
        BoxCommand::Build(args) => build(ctx, args),
        BoxCommand::List => list(ctx),
        BoxCommand::Remove(args) => remove(ctx, args),
    }
}

fn target(kind: &str) -> Result<BoxTarget> {
    match kind {
        "docker" => Ok(BoxTarget::Docker),
        "qemu" => Ok(BoxTarget::Qemu),
        other => Err(Error::usage(
            format!("unknown target kind `{other}` for a box"),
            Some("use --target docker or --target qemu".into()),
        )),
    }
}

fn build(ctx: &Ctx, args: BoxBuildArgs) -> Result<()> {
    let target = target(&args.target)?;
    // Recipes live next to the Pipelinefile: start from `-f`'s folder when given.
    let start = ctx
        .global
        .file
        .as_deref()
        .and_then(|f| f.parent())
        .map(|p| ctx.cwd.join(p))
        .unwrap_or_else(|| ctx.cwd.clone());
    let recipe = Recipe::find(&args.name, &start)?;
    crate::interrupt::install();
    if target == BoxTarget::Qemu {
        let built = boxes::qemu::build_qemu_box(&recipe, ctx.printer, args.force)?;
        ctx.printer.result(
            "box build",
            serde_json::to_value(&built).expect("serializes"),
            &built.disk.display().to_string(),
        );
        return Ok(());
    }
    let client = DockerClient::connect()?;
    let image = boxes::build_docker_box(&client, &recipe, ctx.printer, args.force)?;
    ctx.printer.result(
        "box build",
        serde_json::to_value(&image).expect("serializes"),
        &image.image,
    );
    Ok(())
}

fn list(ctx: &Ctx) -> Result<()> {
    let client = DockerClient::connect()?;
    let images = boxes::list_docker_boxes(&client)?;
    let human = if images.is_empty() {
        "no boxes built yet (pipe box build NAME)\n".to_string()
    } else {
        table(&images)
    };
    ctx.printer.result(
        "box list",
        serde_json::to_value(&images).expect("serializes"),
        &human,
    );
    Ok(())
}

fn remove(ctx: &Ctx, args: BoxRemoveArgs) -> Result<()> {
    if target(&args.target)? == BoxTarget::Qemu {
        let removed = boxes::qemu::remove_qemu_box(&args.name)?;
        ctx.printer.result(
            "box remove",
            serde_json::json!({ "name": args.name, "target": "qemu", "removed": removed }),
            &format!(
                "removed {} qemu box folder(s) of {}",
                removed.len(),
                args.name
            ),
        );
        return Ok(());
    }
    let client = DockerClient::connect()?;
    let removed = boxes::remove_docker_box(&client, &args.name)?;
    ctx.printer.result(
        "box remove",
        serde_json::json!({ "name": args.name, "removed": removed }),
        &format!("removed {} image(s) of box {}", removed.len(), args.name),
    );
    Ok(())
}

fn table(images: &[BoxImage]) -> String {
    let rows: Vec<[String; 6]> = images
        .iter()
        .map(|i| {
            [
                i.name.clone(),
                i.image.clone(),
                if i.latest {
                    "latest".into()
                } else {
                    String::new()
                },
                i.id.trim_start_matches("sha256:")
                    .chars()
                    .take(12)
                    .collect(),
                chrono::DateTime::from_timestamp(i.created, 0)
                    .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default(),
                format!("{} MB", i.size / 1_000_000),
            ]
        })
        .collect();
    let header = ["BOX", "IMAGE", "", "ID", "CREATED (UTC)", "SIZE"];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(header.map(String::from)).chain(rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
