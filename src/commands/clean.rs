//! `pipe clean`: removes what dead runs left behind, first by their journals
//! (`.pipe/journal/<run-id>.json` of runs whose process is gone), then by label: containers and
//! images of this pipeline labelled `pipe.run=<id>` for a run that is not alive. Results of runs
//! (layer images, machines, serving containers) carry no `pipe.run` value and are never touched.

use std::collections::BTreeSet;
use std::path::Path;

use crate::cli::CleanArgs;
use crate::engine::docker::DockerClient;
use crate::error::{Error, Result};
use crate::runner::Resource;
use crate::runner::journal::{self, JournalFile};
use crate::state;
use crate::targets::docker::build::label;

use super::Ctx;

pub fn run(ctx: &Ctx, args: CleanArgs) -> Result<()> {
    let pf = ctx.pipelinefile()?;
    let pipeline = pf.pipeline.name.value.clone();
    let journals = journal::list(&state::dir(&pf.root))?;
    let live: BTreeSet<String> = journals
        .iter()
        .filter(|(_, f)| journal::is_alive(f))
        .map(|(_, f)| f.run_id.clone())
        .collect();
    let dead: Vec<&(std::path::PathBuf, JournalFile)> = journals
        .iter()
        .filter(|(_, f)| !live.contains(&f.run_id))
        .collect();
    let mut client: Option<DockerClient> = None;
    let mut docker = || -> Result<DockerClient> {
        if client.is_none() {
            client = Some(DockerClient::connect()?);
        }
        Ok(client.clone().expect("connected"))
    };
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut done: Vec<serde_json::Value> = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for (path, file) in dead {
        let mut left = Vec::new();
        for res in file.resources.iter().rev() {
            let outcome = if args.dry_run {
                Ok(true)
            } else {
                remove(&mut docker, res)
            };
            match outcome {
                Ok(existed) => {
                    let what = if existed {
                        res.to_string()
                    } else {
                        format!("{res} (already gone)")
                    };
                    lines.push(format!(
                        "{verb} {what}  [run {} of `pipe {}`]",
                        file.run_id, file.command
                    ));
                    done.push(serde_json::json!({"run": file.run_id, "resource": res, "existed": existed}));
                }
                Err(e) => {
                    failures.push(format!("{res} (run {}): {e}", file.run_id));
                    left.push(res.clone());
                }
            }
        }
        if !args.dry_run {
            if left.is_empty() {
                std::fs::remove_file(path)?;
            } else {
                let mut kept = file.clone();
                kept.resources = left;
                let data = serde_json::to_vec_pretty(&kept).expect("journal serializes");
                state::write_atomic(path, &data)?;
            }
        }
        lines.push(format!("{verb} journal {}", file.run_id));
    }
    // By label: what a run created before (or without) writing its journal.
    let c = docker()?;
    let p = format!("{}={pipeline}", label::PIPELINE);
    let stale = |run: Option<&String>| run.is_some_and(|r| !r.is_empty() && !live.contains(r));
    // Only this project's: another checkout of the same pipeline may be building right now.
    let proj = format!("{}={}", label::PROJECT, crate::state::project_id(&pf.root));
    for container in c.containers_by_labels(&[&p, &proj, label::RUN], true)? {
        let run = container.labels.get(label::RUN);
        if !stale(run) {
            continue;
        }
        let res = Resource::Container {
            name: container.name.clone(),
        };
        if !args.dry_run
            && let Err(e) = c.remove_container(&container.id)
        {
            failures.push(format!("{res}: {e}"));
            continue;
        }
        lines.push(format!(
            "{verb} {res}  [labelled pipe.run={}]",
            run.expect("stale has a run")
        ));
        done.push(serde_json::json!({"run": run, "resource": res, "existed": true}));
    }
    for image in c.images_by_labels(&[&p, label::RUN])? {
        let run = image.labels.get(label::RUN);
        if !stale(run) {
            continue;
        }
        let reference = image.tags.first().cloned().unwrap_or(image.id.clone());
        let res = Resource::Image { reference };
        if !args.dry_run
            && let Err(e) = c.remove_image(&image.id, true)
        {
            failures.push(format!("{res}: {e}"));
            continue;
        }
        lines.push(format!(
            "{verb} {res}  [labelled pipe.run={}]",
            run.expect("stale has a run")
        ));
        done.push(serde_json::json!({"run": run, "resource": res, "existed": true}));
    }
    if !live.is_empty() {
        lines.push(format!(
            "left alone: {} run(s) still in progress ({})",
            live.len(),
            live.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let human = if lines.is_empty() {
        "nothing to clean".to_string()
    } else {
        lines.join("\n")
    };
    ctx.printer.result(
        "clean",
        serde_json::json!({"dry_run": args.dry_run, "removed": done, "in_progress": live}),
        &human,
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::Cleanup {
            error: None,
            failures,
        })
    }
}

/// Removes one journaled resource; `Ok(false)` when it was already gone.
fn remove(docker: &mut dyn FnMut() -> Result<DockerClient>, res: &Resource) -> Result<bool> {
    match res {
        Resource::Container { name } => Ok(docker()?.remove_container(name)?),
        Resource::Image { reference } => Ok(docker()?.remove_image(reference, true)?),
        Resource::QemuMachine { pidfile, overlay } => {
            let existed = kill_qemu(pidfile)?;
            Ok(remove_path(overlay)? || existed)
        }
        Resource::QemuProcess { pidfile } => kill_qemu(pidfile),
        Resource::Path { path } => remove_path(path),
    }
}

/// Kills the QEMU process of a pid file and removes the file; true when either existed.
fn kill_qemu(pidfile: &Path) -> Result<bool> {
    let mut existed = false;
    if let Ok(text) = std::fs::read_to_string(pidfile)
        && let Ok(pid) = text.trim().parse::<i32>()
        && is_qemu(pid)
    {
        // SAFETY: kill(2) with a pid read from pipe's own pidfile.
        existed = unsafe { libc::kill(pid, libc::SIGKILL) } == 0;
    }
    Ok(remove_path(pidfile)? || existed)
}

/// True when `pid` is a QEMU process (a pidfile's pid may have been recycled since).
fn is_qemu(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmd| cmd.windows(11).any(|w| w == b"qemu-system"))
}

fn remove_path(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
        Ok(m) if m.is_dir() => {
            std::fs::remove_dir_all(path)?;
            Ok(true)
        }
        Ok(_) => {
            std::fs::remove_file(path)?;
            Ok(true)
        }
    }
}
