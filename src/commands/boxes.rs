//! `pipe box build|list|remove`: base OS images built from `boxes/NAME.toml`.

use super::Ctx;
use crate::boxes::{self, BoxImage, BoxTarget, Recipe};
use crate::cli::{BoxBuildArgs, BoxCommand, BoxRemoveArgs};
use crate::engine::docker::DockerClient;
use crate::error::{Error, Result};

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

/// Docker boxes (when the engine answers) and qemu boxes (recipe builds and cloud images).
fn list(ctx: &Ctx) -> Result<()> {
    let docker = match DockerClient::connect() {
        Ok(client) => boxes::list_docker_boxes(&client)?,
        Err(e) => {
            ctx.printer.warn(
                format!("docker boxes not listed: {e}"),
                Some("start the Docker engine (scripts/setup starts dockerd)".into()),
            );
            Vec::new()
        }
    };
    let qemu = boxes::list_qemu_boxes();
    let mut rows: Vec<Row> = docker.iter().map(Row::docker).collect();
    rows.extend(qemu.iter().map(Row::qemu));
    let human = if rows.is_empty() {
        "no boxes built yet (pipe box build NAME [--target qemu])\n".to_string()
    } else {
        table(&rows)
    };
    let mut json = Vec::new();
    for d in &docker {
        let mut v = serde_json::to_value(d).expect("serializes");
        v["target"] = "docker".into();
        json.push(v);
    }
    for q in &qemu {
        let mut v = serde_json::to_value(q).expect("serializes");
        v["target"] = "qemu".into();
        json.push(v);
    }
    ctx.printer
        .result("box list", serde_json::Value::Array(json), &human);
    Ok(())
}

/// One line of `pipe box list`.
struct Row {
    name: String,
    target: &'static str,
    /// The image reference (docker) or the disk file (qemu).
    location: String,
    latest: bool,
    created: i64,
    size: u64,
}

impl Row {
    fn docker(i: &BoxImage) -> Self {
        Self {
            name: i.name.clone(),
            target: "docker",
            location: i.image.clone(),
            latest: i.latest,
            created: i.created,
            size: u64::try_from(i.size).unwrap_or(0),
        }
    }

    fn qemu(b: &boxes::qemu::QemuBox) -> Self {
        Self {
            name: b.name.clone(),
            target: "qemu",
            location: b.disk.display().to_string(),
            latest: false,
            created: b.created,
            size: b.size,
        }
    }
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

fn table(rows: &[Row]) -> String {
    let rows: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.target.to_string(),
                r.location.clone(),
                if r.latest {
                    "latest".into()
                } else {
                    String::new()
                },
                chrono::DateTime::from_timestamp(r.created, 0)
                    .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default(),
                format!("{} MB", r.size / 1_000_000),
            ]
        })
        .collect();
    let header = ["BOX", "TARGET", "IMAGE", "", "CREATED (UTC)", "SIZE"];
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
