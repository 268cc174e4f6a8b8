//! Baking on QEMU: the base and app layers (reused by digest), `[verify]` on a fresh machine
//! booted from the app layer, and the artifact: a standalone, compressed qcow2 of the app
//! layer with its backing chain (box, base) folded in, in
//! `$XDG_CACHE_HOME/pipe/qemu/artifacts/<pipeline>/<env>-<app digest 12>.qcow2`; it boots
//! on its own bootloader (a cloud image) or with the kernel and initrd of the box it was baked
//! on (a recipe box), copied next to it (`.vmlinuz`, `.initrd.img`) so that a promotion boots
//! the release exactly as verified even after the box was rebuilt or removed. `<stem>.json`
//! says how it boots.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::accel;
use super::build::{self, QemuEnv};
use super::disk;
use super::machine::{deliver_units, wait_ready};
use super::up::{SSH_TIMEOUT, resolve_box, settings};
use super::vm;
use crate::error::{Error, Result};
use crate::ledger::VerifyOutcome;
use crate::plan::Plan;
use crate::runner::{Journal, Resource, Runner};
use crate::ui::Printer;

/// What a qemu bake produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Baked {
    /// The standalone qcow2: the release's artifact.
    pub artifact: PathBuf,
    /// How it boots.
    #[serde(flatten)]
    pub boot: vm::Boot,
    pub base_layer: PathBuf,
    pub app_layer: PathBuf,
    /// `None` with `skip_verify`.
    pub verify: Option<VerifyOutcome>,
    pub accel: accel::Accel,
}

/// Where artifacts go.
pub fn artifacts_dir(pipeline: &str) -> PathBuf {
    crate::boxes::cache_dir()
        .join("qemu")
        .join("artifacts")
        .join(pipeline)
}

/// Builds, verifies and flattens; everything temporary is journaled and removed.
pub fn bake(
    plan: &Plan,
    keep_on_error: bool,
    skip_verify: bool,
    printer: &Printer,
) -> Result<Baked> {
    crate::interrupt::install();
    let pf = plan.pf;
    let qbox = resolve_box(plan, printer)?;
    let env = QemuEnv {
        qbox: &qbox,
        accel: accel::choose(&settings(plan).accel)?,
        settings: settings(plan),
        ssh_timeout: SSH_TIMEOUT,
    };
    let journal = Journal::start(
        &crate::state::dir(&pf.root),
        "bake",
        &pf.pipeline.name.value,
    )?;
    let mut runner = Runner::new(journal, printer);
    let result = (|| {
        let (base, app) =
            build::build_layers(&mut runner, &env, plan, &qbox.disk, keep_on_error, printer)?;
        let verify = if skip_verify {
            None
        } else {
            let step = format!("verify app layer {}", plan.digests.app.short());
            Some(runner.step(&step, |r| verify_layer(r, &env, plan, &app, printer))?)
        };
        let artifact = runner.step("flatten and compress the artifact", |r| {
            artifact(r, plan, &app, &qbox.boot)
        })?;
        Ok(Baked {
            boot: artifact_boot(&artifact).unwrap_or_else(|| qbox.boot.clone()),
            artifact,
            base_layer: base,
            app_layer: app,
            verify,
            accel: env.accel.accel,
        })
    })();
    runner.finish(result)
}

/// Boots a temporary machine from the app layer, starts the services, runs the checks.
pub fn verify_layer(
    runner: &mut Runner<'_>,
    env: &QemuEnv<'_>,
    plan: &Plan,
    app: &Path,
    printer: &Printer,
) -> Result<VerifyOutcome> {
    let run_id = runner.run_id();
    let suffix = &run_id[run_id.len().saturating_sub(6)..];
    let name = format!("pipe-{}-verify-{suffix}", plan.pf.pipeline.name.value);
    let dir = crate::state::dir(&plan.pf.root).join("qemu").join(&name);
    let overlay = dir.join("disk.qcow2");
    let res = Resource::QemuMachine {
        pidfile: vm::pidfile(&dir),
        overlay: overlay.clone(),
    };
    let spec = env.spec(&name, &dir, &overlay, Vec::new());
    let (cdir, coverlay) = (dir.clone(), overlay.clone());
    let machine = runner.create(
        res.clone(),
        || {
            disk::create_overlay(app, &overlay, None)?;
            vm::start(&spec)
        },
        move || {
            build::remove_vm(&cdir, &coverlay)?;
            let _ = std::fs::remove_dir_all(&cdir);
            Ok(())
        },
    )?;
    let outcome = (|| {
        let (comm, took) = machine.wait_for_ssh(env.ssh_timeout)?;
        printer.info(format!(
            "{name}: SSH up {:.1}s after start",
            took.as_secs_f64()
        ));
        env.settle(&comm, &name, printer)?;
        let rendered = plan.services();
        let timeout = Duration::from_secs(plan.pf.verify.timeout.max(1));
        deliver_units(&comm, &rendered)?;
        crate::runner::pause_point(printer, "verify machine started");
        match wait_ready(&comm, &rendered, timeout) {
            Ok(()) => {}
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => {
                return Ok(VerifyOutcome {
                    ok: false,
                    excerpt: crate::targets::docker::verify::excerpt(&e.to_string(), printer),
                });
            }
        }
        crate::targets::docker::verify::run_checks(&comm, plan, timeout, printer)
    })();
    let disposed = runner.dispose(&res);
    let outcome = outcome?;
    disposed?;
    Ok(outcome)
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
fn artifact(runner: &mut Runner<'_>, plan: &Plan, app: &Path, boot: &vm::Boot) -> Result<PathBuf> {
    let dir = artifacts_dir(&plan.pf.pipeline.name.value);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::runtime(format!("creating {}: {e}", dir.display()), None))?;
    let path = dir.join(format!("{}-{}.qcow2", plan.env, plan.digests.app.short()));
    if path.is_file() && artifact_boot(&path).is_some() {
        return Ok(path);
    }
    boot_files(&path, boot)?;
    let tmp = path.with_extension(format!("qcow2.tmp-{}", std::process::id()));
    let res = Resource::Path { path: tmp.clone() };
    let t2 = tmp.clone();
    runner.create(
        res.clone(),
        || disk::flatten(app, &tmp, true),
        move || match std::fs::remove_file(&t2) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
            _ => Ok(()),
        },
    )?;
    std::fs::rename(&tmp, &path)
        .map_err(|e| Error::runtime(format!("keeping {}: {e}", path.display()), None))?;
    runner.dispose(&res)?;
    Ok(path)
}
