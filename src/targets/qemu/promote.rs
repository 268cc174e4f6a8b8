//! Promotion on QEMU: the release's artifact (the standalone qcow2 its bake wrote, never
//! rebuilt) becomes the VM serving an environment on this machine.
//!
//! A serving VM lives in `.pipe/qemu/pipe-<pipeline>-<env>-<release alias>/` (so the old and
//! the new one can exist side by side): a copy-on-write overlay on the artifact file itself,
//! the QEMU process, its login key, its console log, and `machine.json` saying
//! `"role": "serving"` and the release id. It is a run's result: `pipe clean` never touches it,
//! `pipe status` lists it, `pipe destroy` removes it. (`pipe up`'s machine of an environment is
//! `pipe-<pipeline>-<env>` and has no role.)
//!
//! Ports and steps are Docker's (see [`crate::targets::docker::promote`]): each service is
//! forwarded on 127.0.0.1 at its host port plus the environment's position, and since two VMs
//! cannot forward the same host port a switch goes:
//!
//! 1. verify the artifact on a fresh VM without forwards (the bake's verification; the old VM
//!    keeps serving, and a failure here changes nothing);
//! 2. stop the old VM cleanly (ACPI power-down; its disk stays);
//! 3. boot the new VM with the ports, deliver the release's services as systemd units, wait
//!    for them, run `[verify]` again in it;
//! 4. remove the old VM's folder.
//!
//! If step 2 or 3 fails, or Ctrl-C/SIGTERM arrives, the new VM is removed and the old one boots
//! again on its own disk and gets its services back (that boot goes on after Ctrl-C), so it
//! keeps serving. Everything is journaled first: the new VM's folder and overlay
//! (`Resource::Path`, `Resource::QemuMachine`), the old VM's second boot
//! (`Resource::QemuProcess`: a killed run leaves no stray process and keeps the disk).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::accel;
use super::bake::{artifact_boot, verify_layer};
use super::build::{QemuEnv, SHUTDOWN_GRACE};
use super::machine::{self, Forward, Identity, MachineRecord, machine_dir};
use super::up::{SSH_TIMEOUT, resolve_box};
use super::vm;
use crate::boxes::qemu::QemuBox;
use crate::config::{Pipelinefile, QemuSettings, TargetSettings};
use crate::error::{Error, Result};
use crate::ledger::Release;
use crate::plan::Plan;
use crate::runner::{Resource, Runner};
use crate::services::RenderedService;
use crate::targets::docker::promote::{host_ports, serving_name};
use crate::ui::Printer;

/// The role in a serving VM's record.
pub const ROLE: &str = "serving";

/// A serving VM found in `.pipe/qemu/`.
#[derive(Debug, Clone)]
pub struct ServingVm {
    pub dir: PathBuf,
    pub rec: MachineRecord,
}

impl ServingVm {
    pub fn name(&self) -> &str {
        &self.rec.name
    }

    /// Whether its QEMU process is alive.
    pub fn running(&self) -> bool {
        self.rec.running()
    }
}

/// The serving VMs of this project's pipeline (of `env`, or all), by name.
pub fn find_serving(pf: &Pipelinefile, env: Option<&str>) -> Vec<ServingVm> {
    let prefix = format!("pipe-{}-", pf.pipeline.name.value);
    let dir = crate::state::dir(&pf.root).join("qemu");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found: Vec<ServingVm> = entries
        .flatten()
        .map(|e| e.path())
        .filter_map(|dir| {
            let rec = machine::load_record(&dir)?;
            let ours = rec.role.as_deref() == Some(ROLE)
                && rec.name.starts_with(&prefix)
                && env.is_none_or(|want| rec.env == want);
            ours.then_some(ServingVm { dir, rec })
        })
        .collect();
    found.sort_by(|a, b| a.rec.name.cmp(&b.rec.name));
    found
}

/// The qemu settings (cpus, memory, accel, disk size) of the environment to serve.
fn env_settings(pf: &Pipelinefile, env: &str) -> QemuSettings {
    match pf.envs.get(env).map(|e| &e.settings) {
        Some(TargetSettings::Qemu(q)) => q.clone(),
        _ => QemuSettings::default(),
    }
}

/// What a promotion works from.
pub struct Promotion<'a> {
    /// Rendered for the environment the release was baked in: its services and checks run as
    /// they were verified.
    pub plan: &'a Plan<'a>,
    /// The environment to serve.
    pub env: &'a str,
    pub release: &'a Release,
    /// The release's artifact (checked to exist).
    pub artifact: &'a Path,
    /// The environment's serving VMs now.
    pub old: Vec<ServingVm>,
    /// The services an old VM gets back if it has to boot again, by VM name (its own
    /// release's; `plan`'s when missing).
    pub old_services: BTreeMap<String, Vec<RenderedService>>,
}

/// A release's artifact as the box its VMs boot (only how it boots matters: nothing is built
/// on it). It boots as it was verified, with its own kernel and initrd (or bootloader); the
/// environment's box is only asked for artifacts baked before pipe kept those.
pub fn release_box(
    plan: &Plan,
    release: &Release,
    artifact: &Path,
    printer: &Printer,
) -> Result<QemuBox> {
    let Some(boot) = artifact_boot(artifact) else {
        return resolve_box(plan, printer);
    };
    Ok(QemuBox {
        name: release.alias.clone(),
        digest: release.id.clone(),
        dir: artifact.parent().unwrap_or(Path::new(".")).to_path_buf(),
        disk: artifact.to_path_buf(),
        boot,
        created: 0,
        size: 0,
        built: false,
    })
}

/// Runs `[verify]` again on a fresh VM booted from a release's artifact (`pipe verify`).
pub fn verify_release(
    runner: &mut Runner<'_>,
    plan: &Plan,
    release: &Release,
    artifact: &Path,
    printer: &Printer,
) -> Result<crate::ledger::VerifyOutcome> {
    let qbox = release_box(plan, release, artifact, printer)?;
    let settings = env_settings(plan.pf, &release.env);
    let qenv = QemuEnv {
        qbox: &qbox,
        accel: accel::choose(&settings.accel)?,
        settings,
        ssh_timeout: SSH_TIMEOUT,
    };
    verify_layer(runner, &qenv, plan, artifact, printer)
}

/// Switches the environment to the release (see the module doc); returns the new VM's record.
pub fn promote(runner: &mut Runner<'_>, p: &Promotion, printer: &Printer) -> Result<MachineRecord> {
    let pf = p.plan.pf;
    let alias = &p.release.alias;
    let qbox = release_box(p.plan, p.release, p.artifact, printer)?;
    let settings = env_settings(pf, p.env);
    let qenv = QemuEnv {
        qbox: &qbox,
        accel: accel::choose(&settings.accel)?,
        settings,
        ssh_timeout: SSH_TIMEOUT,
    };
    let outcome = runner.step(&format!("verify release {alias} on a fresh machine"), |r| {
        verify_layer(r, &qenv, p.plan, p.artifact, printer)
    })?;
    if !outcome.ok {
        return Err(Error::VerifyFailed(format!(
            "release {alias} failed [verify] on a fresh machine; {} keeps serving\n{}",
            p.env, outcome.excerpt
        )));
    }
    let name = serving_name(&pf.pipeline.name.value, p.env, alias);
    let dir = machine_dir(&pf.root, &name);
    let folder = Resource::Path { path: dir.clone() };
    let vm_res = Resource::QemuMachine {
        pidfile: vm::pidfile(&dir),
        overlay: dir.join("disk.qcow2"),
    };
    let mut stopped: Vec<&ServingVm> = Vec::new();
    let switched = (|| {
        for old in p.old.iter().filter(|o| o.running()) {
            let step = runner.step(&format!("stop the old machine {}", old.name()), |_| {
                old.rec
                    .vm
                    .shutdown(SHUTDOWN_GRACE)
                    .map_err(|e| Error::runtime(format!("stopping {}: {e}", old.name()), None))
            });
            // Stopped even when Ctrl-C came during the power-down: then it boots again too.
            if !old.running() {
                stopped.push(old);
            }
            step?;
        }
        // A stopped VM of this very release (the ledger said another one was current): it is
        // made anew, from the artifact, like any other.
        if let Some(same) = p.old.iter().find(|o| o.dir == dir) {
            runner.step(
                &format!("remove the stopped machine {}", same.name()),
                |_| machine::destroy(&same.dir),
            )?;
            stopped.retain(|o| o.dir != dir);
        }
        let ports = host_ports(pf, p.env)?;
        runner.step(&format!("start {name}"), |r| {
            let cdir = dir.clone();
            r.create(
                folder.clone(),
                || Ok(()),
                move || match std::fs::remove_dir_all(&cdir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                    _ => Ok(()),
                },
            )?;
            let id = Identity {
                name: name.clone(),
                env: p.env.to_string(),
                ports: ports
                    .iter()
                    .map(|sp| Forward {
                        service: sp.service.clone(),
                        host: sp.host_port,
                        guest: sp.port,
                    })
                    .collect(),
                digest: p.release.app_digest.clone(),
                role: Some(ROLE.to_string()),
                release: Some(p.release.id.clone()),
            };
            let (_, rec) = machine::start_with(r, &qenv, p.plan, id, p.artifact, printer)?;
            let comm = rec.vm.ssh(qenv.ssh_timeout);
            let timeout = Duration::from_secs(p.plan.pf.verify.timeout.max(1));
            let outcome =
                crate::targets::docker::verify::run_checks(&comm, p.plan, timeout, printer)?;
            if !outcome.ok {
                return Err(Error::VerifyFailed(format!(
                    "the new machine {name} failed [verify]\n{}",
                    outcome.excerpt
                )));
            }
            Ok(rec)
        })
    })();
    // Kept only once the step is over: a Ctrl-C during it still removes the new VM.
    let switched = switched.and_then(|rec| {
        runner.keep(&vm_res)?;
        runner.keep(&folder)?;
        Ok(rec)
    });
    let rec = match switched {
        Ok(rec) => rec,
        Err(e) => {
            // Free the ports first, then bring the old VM back.
            let mut failures = Vec::new();
            for res in [&vm_res, &folder] {
                if let Err(err) = runner.dispose(res) {
                    failures.push(err.to_string());
                }
            }
            failures.extend(restore(runner, &qenv, p, &stopped, printer));
            return Err(if failures.is_empty() {
                e
            } else {
                Error::Cleanup {
                    error: Some(Box::new(e)),
                    failures,
                }
            });
        }
    };
    // The switch is done: finish it even if Ctrl-C comes now, so that what serves and what
    // the ledger says agree. Removing a stopped VM's folder is quick.
    for old in p.old.iter().filter(|o| o.dir != dir) {
        let step = printer.step(format!("remove the old machine {}", old.name()));
        match machine::destroy(&old.dir) {
            Ok(()) => step.done(None),
            Err(e) => {
                step.failed(Some(e.to_string()));
                printer.warn(
                    format!("the old machine {} is stopped but still there", old.name()),
                    Some(format!("remove its folder: rm -rf {}", old.dir.display())),
                );
            }
        }
    }
    Ok(rec)
}

/// Boots stopped old VMs again on their own disks and hands them their services; returns
/// what went wrong.
fn restore(
    runner: &mut Runner<'_>,
    qenv: &QemuEnv<'_>,
    p: &Promotion,
    stopped: &[&ServingVm],
    printer: &Printer,
) -> Vec<String> {
    let mut problems = Vec::new();
    let fallback = p.plan.services();
    for old in stopped {
        let rendered = p.old_services.get(old.name()).unwrap_or(&fallback);
        let step = printer.step(format!("boot the old machine {} again", old.name()));
        match machine::start_again_uninterruptibly(
            runner, qenv, &old.dir, &old.rec, rendered, printer,
        ) {
            Ok(_) => step.done(None),
            Err(e) => {
                step.failed(Some(e.to_string().lines().next().unwrap_or("").to_string()));
                problems.push(format!(
                    "the old machine {} could not be booted again: {e} (start it again with `pipe promote` of its release)",
                    old.name()
                ));
            }
        }
    }
    problems
}
