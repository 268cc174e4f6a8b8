//! QEMU machines on this host ([`LocalTarget`]): `pipe up`'s VM per environment in
//! `.pipe/qemu/pipe-<pipeline>-<env>/` and the VMs serving promoted releases, read from their
//! folders (record, pid file, QMP), reached over SSH with their own key.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::machine::{self, MachineRecord, machine_dir, machine_name};
use super::{QemuTarget, find_serving, vm};
use crate::config::Pipelinefile;
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::services;
use crate::state::MachineState;
use crate::targets::ServicePort;
use crate::targets::local::{LocalTarget, MachineRow, Running, UpReport};
use crate::ui::Printer;

/// How long `exec`, `logs` and `ssh` wait for a running VM's SSH.
pub const SSH_TIMEOUT: Duration = Duration::from_secs(30);

/// The folder of an environment's `pipe up` machine.
pub fn env_dir(pf: &Pipelinefile, env: &str) -> PathBuf {
    machine_dir(&pf.root, &machine_name(pf, env))
}

/// The file in a machine's folder saying when `pipe up --watch` last changed it; the folder
/// goes with the machine, and so does the mark.
const WATCH_MARK: &str = "watched";

/// When `pipe up --watch` last changed the machine in `dir`, if it did.
fn watched(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(WATCH_MARK))
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The records of this project's `pipe up` machines (of `env`, or all), with their folders.
pub fn up_machines(pf: &Pipelinefile, env: Option<&str>) -> Vec<(PathBuf, MachineRecord)> {
    let mut found: Vec<(PathBuf, MachineRecord)> = pf
        .envs
        .keys()
        .filter(|e| env.is_none_or(|want| want == e.as_str()))
        .filter_map(|e| {
            let dir = env_dir(pf, e);
            machine::load_record(&dir).map(|rec| (dir, rec))
        })
        .collect();
    found.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    found
}

/// What a machine is doing: QMP's status (`running`, `paused`, ...) while QEMU runs,
/// `running` when its QEMU lives but QMP does not answer, else `stopped`.
pub fn state(dir: &Path, rec: &MachineRecord) -> String {
    if !rec.running() {
        return "stopped".into();
    }
    vm::status(dir).unwrap_or_else(|| "running".into())
}

/// The environment's running machine (its record, a live QEMU by pid file, QMP), or a clear
/// error.
fn running_record(pf: &Pipelinefile, env: &str) -> Result<MachineRecord> {
    let dir = env_dir(pf, env);
    let Some(rec) = machine::load_record(&dir) else {
        return Err(Error::runtime(
            format!("env `{env}` has no qemu machine"),
            Some("create it with `pipe up` (or `pipe up --target qemu`)".to_string()),
        ));
    };
    match state(&dir, &rec).as_str() {
        "running" => Ok(rec),
        state => Err(Error::runtime(
            format!("machine {} of env `{env}` is {state}", rec.name),
            Some("start it with `pipe up`".to_string()),
        )),
    }
}

impl LocalTarget for QemuTarget {
    fn up(&self, plan: &Plan, keep_on_error: bool, printer: &Printer) -> Result<UpReport> {
        let (rec, what) = super::up::up(plan, keep_on_error, printer)?;
        Ok(UpReport {
            name: rec.name.clone(),
            what,
            state: rec.state(),
            ports: rec
                .ports
                .iter()
                .map(|p| ServicePort {
                    service: p.service.clone(),
                    port: p.guest,
                    host_port: p.host,
                })
                .collect(),
            detail: format!(", qemu, {}", rec.vm.accel),
            login: Some(format!(
                "ssh -i {} -p {} root@127.0.0.1",
                rec.vm.dir.join("id_ed25519").display(),
                rec.vm.ssh_port,
            )),
            extra: serde_json::json!({
                "accel": rec.vm.accel,
                "accel_reason": rec.accel_reason,
                "boot_to_ssh_secs": rec.boot_to_ssh,
                "ssh_port": rec.vm.ssh_port,
                "console_log": rec.vm.console(),
            }),
        })
    }

    fn running(&self, pf: &Pipelinefile, env: &str) -> Result<Running> {
        let rec = running_record(pf, env)?;
        Ok(Running {
            comm: Box::new(rec.vm.ssh(SSH_TIMEOUT)),
            name: rec.name,
        })
    }

    fn login(&self, pf: &Pipelinefile, env: &str) -> Result<(Command, String)> {
        let rec = running_record(pf, env)?;
        let dir = &rec.vm.dir;
        let mut known_hosts = std::ffi::OsString::from("UserKnownHostsFile=");
        known_hosts.push(dir.join("known_hosts"));
        let mut cmd = Command::new("ssh");
        cmd.arg("-i")
            .arg(dir.join("id_ed25519"))
            .args(["-p", &rec.vm.ssh_port.to_string()])
            .arg("-o")
            .arg(known_hosts)
            .args([
                "-o",
                "StrictHostKeyChecking=accept-new",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "LogLevel=ERROR",
                "-t",
                "root@127.0.0.1",
            ]);
        Ok((
            cmd,
            format!(
                "an interactive shell needs the ssh client: install openssh-client, or use `pipe exec -- sh` (no TTY) on {}",
                rec.name
            ),
        ))
    }

    fn logs_argv(&self, names: &[String], lines: usize, follow: bool) -> Vec<String> {
        let mut argv = vec![
            "journalctl".to_string(),
            "--no-pager".into(),
            "-n".into(),
            lines.to_string(),
        ];
        if follow {
            argv.push("-f".into());
        }
        for n in names {
            argv.push("-u".into());
            argv.push(services::systemd_unit_name(n));
        }
        argv
    }

    fn restart_services(&self, _: &Pipelinefile, plan: &Plan, m: &Running) -> Result<()> {
        // As units, not by a reboot.
        let rendered = plan.services();
        machine::deliver_units(&*m.comm, &rendered)?;
        machine::wait_ready(&*m.comm, &rendered, machine::READY_TIMEOUT)
    }

    fn mark_watched(&self, pf: &Pipelinefile, env: &str, m: &Running, when: &str) -> Result<()> {
        let path = env_dir(pf, env).join(WATCH_MARK);
        crate::state::write_atomic(&path, format!("{when}\n").as_bytes()).map_err(|e| {
            Error::runtime(
                format!(
                    "marking {} as changed by watch in {}: {e}",
                    m.name,
                    path.display()
                ),
                None,
            )
        })
    }

    fn halt(&self, pf: &Pipelinefile, env: &str, printer: &Printer) -> Result<Option<String>> {
        let dir = env_dir(pf, env);
        let Some(rec) = machine::load_record(&dir) else {
            return Ok(None);
        };
        if rec.running() {
            let step = printer.step(format!("power down {}", rec.name));
            super::up::halt_dir(&dir)?;
            step.done(None);
        }
        Ok(Some(rec.name))
    }

    fn machines(&self, pf: &Pipelinefile, env: Option<&str>) -> Result<Vec<MachineRow>> {
        let mut rows = Vec::new();
        for (dir, rec) in up_machines(pf, env) {
            let mut ports = vec![format!("127.0.0.1:{}->22", rec.vm.ssh_port)];
            ports.extend(
                rec.ports
                    .iter()
                    .map(|p| format!("127.0.0.1:{}->{}", p.host, p.guest)),
            );
            rows.push(MachineRow {
                env: rec.env.clone(),
                name: rec.name.clone(),
                state: state(&dir, &rec),
                digest: Some(rec.digest.clone()),
                release: None,
                ports,
                state_entry: Some(rec.state()),
                watched: watched(&dir),
                extra: serde_json::json!({
                    "accel": rec.vm.accel, "console_log": rec.vm.console(),
                }),
            });
        }
        // Serving VMs (`pipe promote` on qemu): their release instead of a freshness.
        for (dir, rec) in find_serving(pf, env) {
            rows.push(MachineRow {
                env: rec.env.clone(),
                name: rec.name.clone(),
                state: state(&dir, &rec),
                digest: None,
                release: Some(rec.release.clone().unwrap_or_default()),
                ports: rec
                    .ports
                    .iter()
                    .map(|p| format!("127.0.0.1:{}->{}", p.host, p.guest))
                    .collect(),
                state_entry: None,
                watched: None,
                extra: serde_json::json!({
                    "ssh_port": rec.vm.ssh_port, "artifact": rec.layer,
                    "accel": rec.vm.accel, "console_log": rec.vm.console(),
                }),
            });
        }
        Ok(rows)
    }

    fn destroy_machines(
        &self,
        pf: &Pipelinefile,
        env: Option<&str>,
        printer: &Printer,
    ) -> Result<Vec<String>> {
        // QEMU stopped, overlay and folder (record, key, console log) removed.
        let mut removed = Vec::new();
        for (dir, rec) in up_machines(pf, env)
            .into_iter()
            .chain(find_serving(pf, env))
        {
            let step = printer.step(format!("remove {}", rec.name));
            machine::destroy(&dir)?;
            step.done(None);
            removed.push(rec.name.clone());
        }
        Ok(removed)
    }

    fn destroy_layers(&self, pf: &Pipelinefile) -> Result<Vec<String>> {
        use super::disk;
        // Not those a remaining machine of this project runs on (its overlay's backing chain).
        let mut in_use = std::collections::HashSet::new();
        for (_, rec) in up_machines(pf, None) {
            let mut next = Some(rec.layer.clone());
            while let Some(layer) = next
                .and_then(|l| std::fs::canonicalize(l).ok())
                .filter(|l| in_use.insert(l.clone()))
            {
                next = disk::backing_file(&layer).ok().flatten();
            }
        }
        let dir = disk::layers_dir(&pf.pipeline.name.value);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut removed = Vec::new();
        for path in entries.flatten().map(|e| e.path()) {
            let layer = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                (n.starts_with("base-") || n.starts_with("app-")) && n.ends_with(".qcow2")
            });
            let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if !layer || in_use.contains(&canonical) {
                continue;
            }
            std::fs::remove_file(&path).map_err(|e| {
                Error::runtime(format!("removing layer {}: {e}", path.display()), None)
            })?;
            removed.push(path.display().to_string());
        }
        removed.sort();
        Ok(removed)
    }

    fn still_there(&self, pf: &Pipelinefile, env: &str, state: &MachineState) -> bool {
        machine::load_record(&env_dir(pf, env)).is_some_and(|r| r.name == state.name)
    }
}
