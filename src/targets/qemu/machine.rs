//! Machines on QEMU: an overlay in `.pipe/qemu/<name>/` on the app layer (`pipe up`'s machines)
//! or on a release's artifact (the VMs serving an environment, see [`super::promote`]), booted
//! with the services' ports forwarded on 127.0.0.1, the `[[service]]`s installed as systemd
//! units and their environments delivered into `/run/pipe/env` (a tmpfs) at every start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::build::QemuEnv;
use super::disk;
use super::vm::{self, Vm};
use crate::config::Pipelinefile;
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::provisioners::trace::Traced;
use crate::runner::{Resource, Runner};
use crate::services::RenderedService;
pub use crate::targets::guest::{deliver_units, wait_ready};
use crate::targets::resource::{self, Destroyer};
use crate::ui::Printer;

/// How long services get to start listening.
pub const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// The machine name of an environment: `pipe-<pipeline>-<env>`.
pub fn machine_name(pf: &Pipelinefile, env: &str) -> String {
    format!("pipe-{}-{env}", pf.pipeline.name.value)
}

/// The folder of a machine: `.pipe/qemu/<name>/`.
pub fn machine_dir(root: &Path, name: &str) -> PathBuf {
    crate::state::dir(root).join("qemu").join(name)
}

/// A forwarded service port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    pub service: String,
    pub host: u16,
    pub guest: u16,
}

/// `machine.json` in the machine's folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineRecord {
    pub name: String,
    pub env: String,
    /// The app layer digest it runs.
    pub digest: String,
    pub layer: PathBuf,
    pub vm: Vm,
    pub ports: Vec<Forward>,
    /// Why this accelerator.
    pub accel_reason: String,
    /// Seconds from QEMU start to SSH answering.
    pub boot_to_ssh: f64,
    /// `serving` for a VM that serves a promoted release (`pipe promote`); `None` for a
    /// `pipe up` machine (and in records written before roles existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The id of the release a serving VM runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

impl MachineRecord {
    pub fn running(&self) -> bool {
        self.vm.running()
    }

    /// Its entry in `.pipe/state.json`, as of now.
    pub fn state(&self) -> crate::state::MachineState {
        crate::state::MachineState {
            target: "qemu".into(),
            name: self.name.clone(),
            image: self.layer.display().to_string(),
            digest: self.digest.clone(),
            updated: chrono::Utc::now().to_rfc3339(),
        }
    }
}

/// The record of the machine in `dir`, if any.
pub fn load_record(dir: &Path) -> Option<MachineRecord> {
    let data = std::fs::read(dir.join("machine.json")).ok()?;
    serde_json::from_slice(&data).ok()
}

/// Writes `machine.json` (atomically).
pub fn save_record(dir: &Path, rec: &MachineRecord) -> Result<()> {
    let data = serde_json::to_vec_pretty(rec).expect("serializes");
    crate::state::write_atomic(&dir.join("machine.json"), &data)?;
    Ok(())
}

/// Stops a machine and removes its folder.
pub fn destroy(dir: &Path) -> Result<()> {
    let d = Destroyer::default();
    let vm = Resource::QemuMachine {
        pidfile: vm::pidfile(dir),
        overlay: dir.join("disk.qcow2"),
    };
    let folder = Resource::Path {
        path: dir.to_path_buf(),
    };
    for res in [vm, folder] {
        d.destroy(&res).map_err(|e| {
            Error::runtime(format!("removing {}: {e}", dir.display()), None).caused_by(e)
        })?;
    }
    Ok(())
}

/// What a machine is besides its disk: its name, environment, forwarded ports, the app digest
/// it runs, and for a serving VM its role and release.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub env: String,
    pub ports: Vec<Forward>,
    pub digest: String,
    pub role: Option<String>,
    pub release: Option<String>,
}

impl Identity {
    /// The record of this machine, booted from `layer` as `vm` in `took` seconds.
    pub fn record(self, layer: &Path, vm: Vm, env: &QemuEnv<'_>, took: f64) -> MachineRecord {
        MachineRecord {
            name: self.name,
            env: self.env,
            digest: self.digest,
            layer: layer.to_path_buf(),
            vm,
            ports: self.ports,
            accel_reason: env.accel.reason.clone(),
            boot_to_ssh: took,
            role: self.role,
            release: self.release,
        }
    }
}

/// The ports a `pipe up` machine forwards: each service's published port, as declared.
fn published_ports(pf: &Pipelinefile) -> Vec<Forward> {
    pf.services
        .iter()
        .filter_map(|s| {
            Some(Forward {
                service: s.name.value.clone(),
                host: s.published_port()?,
                guest: s.port.as_ref()?.value,
            })
        })
        .collect()
}

/// Creates and boots the machine `name` on the app layer `app`, delivers its services and
/// waits until their ports listen. The VM is journaled; the caller decides to keep it.
pub fn start_machine(
    runner: &mut Runner<'_>,
    env: &QemuEnv<'_>,
    plan: &Plan,
    name: &str,
    app: &Path,
    printer: &Printer,
) -> Result<(Resource, MachineRecord)> {
    let id = Identity {
        name: name.to_string(),
        env: plan.env.clone(),
        ports: published_ports(plan.pf),
        digest: plan.digests.app.to_string(),
        role: None,
        release: None,
    };
    start_with(runner, env, plan, id, app, printer)
}

/// [`start_machine`] for any machine: an overlay on `disk` (an app layer, or a release's
/// artifact) in the folder of `id.name`, booted with `id.ports` forwarded, `plan`'s services
/// delivered and listening.
pub fn start_with(
    runner: &mut Runner<'_>,
    env: &QemuEnv<'_>,
    plan: &Plan,
    id: Identity,
    disk: &Path,
    printer: &Printer,
) -> Result<(Resource, MachineRecord)> {
    let dir = machine_dir(&plan.pf.root, &id.name);
    let overlay = dir.join("disk.qcow2");
    let spec = env.spec(
        &id.name,
        &dir,
        &overlay,
        id.ports.iter().map(|p| (p.host, p.guest)).collect(),
    );
    let res = Resource::QemuMachine {
        pidfile: vm::pidfile(&dir),
        overlay: overlay.clone(),
    };
    let disk_size = env.settings.disk_size.clone();
    let machine = resource::create(runner, Destroyer::default(), &res, || {
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::runtime(format!("creating {}: {e}", dir.display()), None).caused_by(e)
        })?;
        let _ = std::fs::remove_file(vm::console_log(&dir));
        disk::create_overlay(disk, &overlay, disk_size.as_deref())?;
        vm::start(&spec)
    })?;
    let rec = boot(env, plan, id, machine, disk, printer)?;
    Ok((res, rec))
}

/// Boots a halted machine again on its own disk. Only the QEMU process is journaled: a
/// failed or interrupted boot stops it and keeps the disk, as `vagrant up` after a halt does.
pub fn restart_machine(
    runner: &mut Runner<'_>,
    env: &QemuEnv<'_>,
    plan: &Plan,
    halted: &MachineRecord,
    printer: &Printer,
) -> Result<(Resource, MachineRecord)> {
    let dir = machine_dir(&plan.pf.root, &halted.name);
    let (res, machine) = start_again(runner, env, &dir, halted)?;
    let id = Identity {
        name: halted.name.clone(),
        env: plan.env.clone(),
        ports: halted.ports.clone(),
        digest: plan.digests.app.to_string(),
        role: halted.role.clone(),
        release: halted.release.clone(),
    };
    let rec = boot(env, plan, id, machine, &halted.layer, printer)?;
    Ok((res, rec))
}

/// Starts QEMU on the own disk of the stopped machine in `dir`, with its forwards; journals
/// the process only.
fn start_again(
    runner: &mut Runner<'_>,
    env: &QemuEnv<'_>,
    dir: &Path,
    halted: &MachineRecord,
) -> Result<(Resource, Vm)> {
    let dir = dir.to_path_buf();
    let spec = env.spec(
        &halted.name,
        &dir,
        &dir.join("disk.qcow2"),
        halted.ports.iter().map(|p| (p.host, p.guest)).collect(),
    );
    let res = Resource::QemuProcess {
        pidfile: vm::pidfile(&dir),
    };
    let machine = resource::create(runner, Destroyer::default(), &res, || vm::start(&spec))?;
    Ok((res, machine))
}

/// Boots a stopped machine again on its own disk as cleanup that must finish after Ctrl-C
/// (a failed promotion bringing the old serving VM back): SSH and the delivery of `rendered`
/// go on after an interrupt, only an abandoned cleanup stops them. Its ports are not waited
/// for: it served these services a moment ago. The QEMU process is kept once it runs, even
/// when its services could not be delivered (the error says so): it is the machine that
/// serves.
pub fn start_again_uninterruptibly(
    runner: &mut Runner<'_>,
    env: &QemuEnv<'_>,
    dir: &Path,
    halted: &MachineRecord,
    rendered: &[RenderedService],
    printer: &Printer,
) -> Result<MachineRecord> {
    let (res, machine) = start_again(runner, env, dir, halted)?;
    printer.info(format!(
        "{}: booting ({}: {})",
        halted.name, env.accel.accel, env.accel.reason
    ));
    let delivered = (|| {
        let (comm, took) = machine.wait_for_ssh_with(env.ssh_timeout, false)?;
        printer.info(format!(
            "{}: SSH up {:.1}s after start ({})",
            halted.name,
            took.as_secs_f64(),
            env.accel.accel
        ));
        deliver_units(&comm, rendered)?;
        Ok::<_, Error>(took.as_secs_f64())
    })();
    let running = machine.running();
    let rec = MachineRecord {
        vm: machine,
        boot_to_ssh: *delivered.as_ref().unwrap_or(&0.0),
        ..halted.clone()
    };
    if running {
        runner.keep(&res)?;
        save_record(dir, &rec)?;
    }
    delivered?;
    Ok(rec)
}

/// Waits for SSH on a started machine, hands it its services, waits until they listen and
/// writes its record.
fn boot(
    env: &QemuEnv<'_>,
    plan: &Plan,
    id: Identity,
    machine: Vm,
    layer: &Path,
    printer: &Printer,
) -> Result<MachineRecord> {
    let name = &id.name;
    let (comm, took) = env.reach(&machine, name, printer)?;
    let comm = Traced::boxed(Box::new(comm), printer);
    let rendered = plan.services();
    deliver_units(&*comm, &rendered)?;
    wait_ready(&*comm, &rendered, READY_TIMEOUT)?;
    let dir = machine_dir(&plan.pf.root, name);
    let rec = id.record(layer, machine, env, took.as_secs_f64());
    save_record(&dir, &rec)?;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_from_before_roles_still_load_and_serving_ones_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let old = r#"{
  "name": "pipe-p-dev", "env": "dev", "digest": "sha256:ab", "layer": "/l/app.qcow2",
  "vm": { "pid": 1, "dir": "/d", "ssh_port": 2222, "accel": "tcg" },
  "ports": [ { "service": "web", "host": 8080, "guest": 80 } ],
  "accel_reason": "tcg asked", "boot_to_ssh": 1.5
}"#;
        std::fs::write(dir.path().join("machine.json"), old).unwrap();
        let rec = load_record(dir.path()).expect("an old record loads");
        assert_eq!((rec.role, rec.release), (None, None));

        let serving = MachineRecord {
            role: Some("serving".into()),
            release: Some("1a2b".into()),
            ..load_record(dir.path()).unwrap()
        };
        save_record(dir.path(), &serving).unwrap();
        assert_eq!(load_record(dir.path()), Some(serving));
        // A `pipe up` record is written as before: no role, no release.
        let plain = MachineRecord {
            role: None,
            release: None,
            ..load_record(dir.path()).unwrap()
        };
        save_record(dir.path(), &plain).unwrap();
        let text = std::fs::read_to_string(dir.path().join("machine.json")).unwrap();
        assert!(
            !text.contains("role") && !text.contains("release"),
            "{text}"
        );
    }
}
