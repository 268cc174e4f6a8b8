//! `pipe cache list|clear`: the package caches (apt, npm, pip) kept on the host per box and
//! mounted into build machines (see [`crate::boxes::package_cache`]).

use super::Ctx;
use crate::boxes::package_cache::{self as cache, CacheEntry};
use crate::cli::{CacheClearArgs, CacheCommand};
use crate::error::{Error, Result};

pub fn run(ctx: &Ctx, cmd: CacheCommand) -> Result<()> {
    match cmd {
        CacheCommand::List => list(ctx),
        CacheCommand::Clear(args) => clear(ctx, args),
    }
}

fn read() -> Result<Vec<CacheEntry>> {
    cache::list().map_err(|e| {
        Error::runtime(
            format!(
                "reading the package caches in {}: {e}",
                cache::root().display()
            ),
            None,
        )
    })
}

fn list(ctx: &Ctx) -> Result<()> {
    let entries = read()?;
    let human = if entries.is_empty() {
        format!(
            "no package cache yet ({}): a build on a local target makes one per box\n",
            cache::root().display()
        )
    } else {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                vec![
                    e.key.clone(),
                    e.files.to_string(),
                    megabytes(e.bytes),
                    e.path.display().to_string(),
                ]
            })
            .collect();
        crate::ui::table::table(&["BOX", "FILES", "SIZE", "FOLDER"], &rows)
    };
    ctx.printer.result(
        "cache list",
        serde_json::to_value(&entries).expect("serializes"),
        &human,
    );
    Ok(())
}

fn clear(ctx: &Ctx, args: CacheClearArgs) -> Result<()> {
    let entries = read()?;
    let chosen: Vec<&CacheEntry> = match &args.name {
        None => entries.iter().collect(),
        Some(name) => {
            let found: Vec<&CacheEntry> = entries.iter().filter(|e| &e.key == name).collect();
            if found.is_empty() {
                let known: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
                return Err(Error::usage(
                    format!("no package cache named `{name}`"),
                    Some(if known.is_empty() {
                        "there is none yet (`pipe cache list`)".to_string()
                    } else {
                        format!("`pipe cache list` shows them: {}", known.join(", "))
                    }),
                ));
            }
            found
        }
    };
    let mut freed = 0;
    for e in &chosen {
        std::fs::remove_dir_all(&e.path).map_err(|err| {
            Error::runtime(
                format!("removing the package cache {}: {err}", e.path.display()),
                Some(
                    "build machines write it as their root user: remove the folder as the user that owns it"
                        .to_string(),
                ),
            )
        })?;
        freed += e.bytes;
    }
    let names: Vec<&str> = chosen.iter().map(|e| e.key.as_str()).collect();
    ctx.printer.result(
        "cache clear",
        serde_json::json!({ "removed": names, "bytes": freed }),
        &format!(
            "removed {} package cache(s){}, {} freed\n",
            names.len(),
            if names.is_empty() {
                String::new()
            } else {
                format!(" ({})", names.join(", "))
            },
            megabytes(freed)
        ),
    );
    Ok(())
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}
