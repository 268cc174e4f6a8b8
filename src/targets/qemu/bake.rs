//! The artifact of a QEMU bake (the bake itself is the target-neutral one in
//! [`crate::targets::layers`], over [`super::QemuTarget`]): a standalone, compressed qcow2 of the app
//! layer with its backing chain (box, base) folded in, in
//! `$XDG_CACHE_HOME/pipe/qemu/artifacts/<pipeline>/<env>-<app digest 12>.qcow2`; it boots
//! on its own bootloader (a cloud image) or with the kernel and initrd of the box it was baked
//! on (a recipe box), copied next to it (`.vmlinuz`, `.initrd.img`) so that a promotion boots
//! the release exactly as verified even after the box was rebuilt or removed. `<stem>.json`
//! says how it boots.

use std::path::{Path, PathBuf};

use super::disk;
use super::vm;
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::runner::{Resource, Runner};
use crate::targets::resource::{self, Destroyer};

/// Where artifacts go.
pub fn artifacts_dir(pipeline: &str) -> PathBuf {
    crate::boxes::cache_dir()
        .join("qemu")
        .join("artifacts")
        .join(pipeline)
}

/// How an artifact boots (its `<stem>.json`), `None` for artifacts baked before pipe wrote it.
pub fn artifact_boot(artifact: &Path) -> Option<vm::Boot> {
    let text = std::fs::read(artifact.with_extension("json")).ok()?;
    let boot: vm::Boot = serde_json::from_slice(&text).ok()?;
    match &boot {
        vm::Boot::Kernel { kernel, initrd } if !kernel.is_file() || !initrd.is_file() => None,
        _ => Some(boot),
    }
}

/// Writes the artifact's boot files: the kernel and initrd next to it (recipe boxes) and
/// `<stem>.json`, all before the qcow2 itself appears.
fn boot_files(path: &Path, boot: &vm::Boot) -> Result<()> {
    let io = |what: &Path, e: std::io::Error| {
        Error::runtime(format!("writing {}: {e}", what.display()), None)
    };
    let own = match boot {
        vm::Boot::Kernel { kernel, initrd } => {
            let (k, i) = (
                path.with_extension("vmlinuz"),
                path.with_extension("initrd.img"),
            );
            for (from, to) in [(kernel, &k), (initrd, &i)] {
                let tmp = to.with_extension("tmp");
                std::fs::copy(from, &tmp).map_err(|e| io(to, e))?;
                std::fs::rename(&tmp, to).map_err(|e| io(to, e))?;
            }
            vm::Boot::Kernel {
                kernel: k,
                initrd: i,
            }
        }
        vm::Boot::Disk => vm::Boot::Disk,
    };
    let json = path.with_extension("json");
    crate::state::write_atomic(&json, &serde_json::to_vec_pretty(&own).expect("serializes"))
        .map_err(|e| io(&json, e))
}

/// Flattens the app layer into the artifact (through a journaled temporary file).
pub fn artifact(
    runner: &mut Runner<'_>,
    plan: &Plan,
    app: &Path,
    boot: &vm::Boot,
) -> Result<PathBuf> {
    let dir = artifacts_dir(&plan.pf.pipeline.name.value);
    std::fs::create_dir_all(&dir).map_err(|e| {
        Error::runtime(format!("creating {}: {e}", dir.display()), None).caused_by(e)
    })?;
    let path = dir.join(format!("{}-{}.qcow2", plan.env, plan.digests.app.short()));
    if path.is_file() && artifact_boot(&path).is_some() {
        return Ok(path);
    }
    boot_files(&path, boot)?;
    let tmp = path.with_extension(format!("qcow2.tmp-{}", std::process::id()));
    let res = Resource::Path { path: tmp.clone() };
    resource::create(runner, Destroyer::default(), &res, || {
        disk::flatten(app, &tmp, true)
    })?;
    std::fs::rename(&tmp, &path).map_err(|e| {
        Error::runtime(format!("keeping {}: {e}", path.display()), None).caused_by(e)
    })?;
    runner.dispose(&res)?;
    Ok(path)
}
