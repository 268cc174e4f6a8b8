//! `pipe up` on QEMU: box, base and app layers (reused by digest), then the machine.
//! Idempotent: with nothing changed it only checks that the machine runs.

use std::time::Duration;

use super::accel;
use super::build::{self, QemuEnv};
use super::machine::{self, MachineRecord};
use super::vm;
use crate::boxes::qemu::{QemuBox, build_qemu_box};
use crate::config::{BoxSource, QemuSettings, TargetKind, TargetSettings};
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::runner::{Journal, Runner};
use crate::targets::layers::build_layers;
use crate::ui::Printer;

/// How long a VM may take from start to answering SSH.
pub const SSH_TIMEOUT: Duration = Duration::from_secs(300);

/// The qemu settings of the plan's environment (defaults when it is not a qemu one).
pub fn settings(plan: &Plan) -> QemuSettings {
    match plan.pf.envs.get(&plan.env).map(|e| &e.settings) {
        Some(TargetSettings::Qemu(q)) => q.clone(),
        _ => QemuSettings::default(),
    }
}

/// The environment's qemu box: a recipe's, built on first use (and when the recipe changed), or
/// a cloud image, downloaded on first use (and when its checksum changed).
pub fn resolve_box(plan: &Plan, printer: &Printer) -> Result<QemuBox> {
    let Some(b) = plan.pf.boxes.get(TargetKind::Qemu) else {
        return Err(Error::usage(
            "[box] has no qemu entry",
            Some("add `qemu = { box = \"debian-12\" }` under [box]".to_string()),
        ));
    };
    match &b.value {
        BoxSource::Recipe(name) => {
            let recipe = crate::boxes::recipe::Recipe::load(
                &plan.pf.root.join("boxes").join(format!("{name}.toml")),
            )?;
            Ok(build_qemu_box(&recipe, printer, false)?)
        }
        BoxSource::CloudImage { image, checksum } => Ok(crate::boxes::cloud::fetch_cloud_image(
            &plan.pf.root,
            image,
            checksum.as_deref(),
            printer,
        )?),
        other => Err(Error::usage(format!("{other:?} is not a qemu box"), None)),
    }
}

/// Brings the environment's machine up; returns it and what happened (`up to date`,
/// `started`, `created`, `replaced`).
pub fn up(
    plan: &Plan,
    keep_on_error: bool,
    printer: &Printer,
) -> Result<(MachineRecord, &'static str)> {
    crate::interrupt::install();
    let pf = plan.pf;
    let name = machine::machine_name(pf, &plan.env);
    let dir = machine::machine_dir(&pf.root, &name);
    let existing = machine::load_record(&dir);
    let digest = plan.digests.app.to_string();
    if let Some(rec) = &existing
        && rec.digest == digest
        && rec.running()
    {
        return Ok((rec.clone(), "up to date"));
    }
    let qbox = resolve_box(plan, printer)?;
    let settings = settings(plan);
    let choice = accel::choose(&settings.accel)?;
    let env = QemuEnv {
        qbox: &qbox,
        accel: choice,
        settings,
        ssh_timeout: SSH_TIMEOUT,
    };
    let journal = Journal::start(&crate::state::dir(&pf.root), "up", &pf.pipeline.name.value)?;
    let mut runner = Runner::new(journal, printer);
    let halted = existing
        .as_ref()
        .filter(|rec| rec.digest == digest && rec.vm.dir.join("disk.qcow2").is_file());
    if let Some(rec) = halted {
        // Same image, stopped: boot its own disk again (what was written there stays).
        let result = runner.step(&format!("start {name}"), |r| {
            machine::restart_machine(r, &env, plan, rec, printer)
        });
        let result = result.and_then(|(res, rec)| {
            runner.keep(&res)?;
            Ok(rec)
        });
        return Ok((runner.finish(result)?, "started"));
    }
    let result = (|| {
        let target = super::QemuTarget::new(pf);
        let parent = qbox.disk.display().to_string();
        let (_, app) = build_layers(&mut runner, &target, plan, &parent, keep_on_error, printer)?;
        let app = std::path::PathBuf::from(app);
        if existing.is_some() {
            runner.step(&format!("remove the old machine {name}"), |_| {
                machine::destroy(&dir)
            })?;
        }
        let (res, rec) = runner.step(&format!("start {name}"), |r| {
            machine::start_machine(r, &env, plan, &name, &app, printer)
        })?;
        runner.keep(&res)?;
        Ok(rec)
    })();
    let rec = runner.finish(result)?;
    Ok((
        rec,
        if existing.is_some() {
            "replaced"
        } else {
            "created"
        },
    ))
}

/// Stops the environment's machine cleanly (its disk stays); false when none runs.
pub fn halt(plan: &Plan) -> Result<bool> {
    halt_dir(&machine::machine_dir(
        &plan.pf.root,
        &machine::machine_name(plan.pf, &plan.env),
    ))
}

/// Stops the machine in `dir` cleanly (QMP power-down, then quit; its disk stays); false when
/// none runs.
pub fn halt_dir(dir: &std::path::Path) -> Result<bool> {
    match machine::load_record(dir) {
        Some(rec) if rec.running() => {
            rec.vm.shutdown(build::SHUTDOWN_GRACE).map_err(|e| {
                Error::runtime(format!("stopping {}: {e}", rec.name), None).caused_by(e)
            })?;
            Ok(true)
        }
        _ => {
            let _ = vm::stop(dir, Duration::from_secs(5));
            Ok(false)
        }
    }
}
