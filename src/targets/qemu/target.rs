//! The qemu target behind [`Target`]: layers are qcow2 overlays named by digest in the layer
//! cache, build and verify machines are VMs on overlays in `.pipe/qemu/<name>/`, and a serving
//! machine is a VM on an overlay on the release's artifact (the standalone qcow2 its bake
//! wrote, booted with its own kernel and initrd), with `machine.json` saying
//! `"role": "serving"` and the release id: a run's result, which `pipe clean` never touches.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::accel;
use super::bake::{artifact, artifact_boot};
use super::build::{QemuEnv, SHUTDOWN_GRACE, layer_path, seal};
use super::disk;
use super::machine::{
    self, Forward, Identity, MachineRecord, deliver_units, machine_dir, wait_ready,
};
use super::package_cache;
use super::up::{SSH_TIMEOUT, resolve_box};
use super::vm;
use crate::boxes::package_cache::PackageCache;
use crate::boxes::qemu::QemuBox;
use crate::communicators::Communicator;
use crate::config::{LayerName, Pipelinefile, QemuSettings, TargetKind, TargetSettings};
use crate::error::{Error, Result};
use crate::layers::digest::Digest;
use crate::ledger::Release;
use crate::plan::Plan;
use crate::provisioners::trace::Traced;
use crate::runner::{Resource, Runner};
use crate::services::RenderedService;
use crate::targets::local::prepare_package_cache;
use crate::targets::resource::{self, Destroyer};
use crate::targets::{
    Artifacts, FoundLayer, Machine, MachineSpec, Role, Serving, Swept, Target, suffix,
};
use crate::ui::Printer;

/// The role in a serving VM's record.
pub const ROLE: &str = "serving";

/// The qemu target: the project's box, resolved on first use.
pub struct QemuTarget {
    qbox: OnceCell<QemuBox>,
}

impl QemuTarget {
    pub fn new(_: &Pipelinefile) -> Self {
        Self {
            qbox: OnceCell::new(),
        }
    }

    /// The environment's box, built or downloaded once per command.
    fn qbox(&self, plan: &Plan, printer: &Printer) -> Result<&QemuBox> {
        if let Some(b) = self.qbox.get() {
            return Ok(b);
        }
        let b = resolve_box(plan, printer)?;
        Ok(self.qbox.get_or_init(|| b))
    }

    /// What a machine on `from` boots: a release's artifact boots as it was verified (its own
    /// kernel and initrd, or bootloader); a layer boots like the box.
    fn boot_box(&self, plan: &Plan, from: &Path, printer: &Printer) -> Result<QemuBox> {
        match artifact_boot(from) {
            Some(boot) => Ok(QemuBox {
                name: from
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                digest: String::new(),
                dir: from.parent().unwrap_or(Path::new(".")).to_path_buf(),
                disk: from.to_path_buf(),
                boot,
                created: 0,
                size: 0,
                built: false,
            }),
            None => Ok(self.qbox(plan, printer)?.clone()),
        }
    }

    /// Journals a VM (and, first, its folder when the machine owns it), starts it on an
    /// overlay on `backing`, and waits until it answers SSH (and cloud-init settled).
    #[allow(clippy::too_many_arguments)]
    fn boot(
        &self,
        runner: &mut Runner<'_>,
        qenv: &QemuEnv<'_>,
        name: &str,
        dir: &Path,
        overlay: &Path,
        backing: &Path,
        forwards: Vec<(u16, u16)>,
        own_folder: bool,
        package_cache: Option<PathBuf>,
        printer: &Printer,
    ) -> Result<(Machine, vm::Vm, f64)> {
        let mut resources = Vec::new();
        if own_folder {
            let folder = Resource::Path {
                path: dir.to_path_buf(),
            };
            journaled(runner, &folder, || Ok(()))?;
            resources.push(folder);
        }
        let res = Resource::QemuMachine {
            pidfile: vm::pidfile(dir),
            overlay: overlay.to_path_buf(),
        };
        resources.push(res.clone());
        let mut spec = qenv.spec(name, dir, overlay, forwards);
        spec.package_cache = package_cache;
        let disk_size = if own_folder {
            qenv.settings.disk_size.clone()
        } else {
            None
        };
        let started = journaled(runner, &res, || {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::runtime(format!("creating {}: {e}", dir.display()), None).caused_by(e)
            })?;
            let _ = std::fs::remove_file(vm::console_log(dir));
            disk::create_overlay(backing, overlay, disk_size.as_deref())?;
            vm::start(&spec)
        })?;
        let (comm, took) = qenv.reach(&started, name, printer)?;
        let machine = Machine {
            name: name.to_string(),
            comm: Traced::boxed(Box::new(comm), printer),
            resources,
            login: format!(
                "ssh -i {} -p {} -o StrictHostKeyChecking=no root@127.0.0.1",
                dir.join("id_ed25519").display(),
                started.ssh_port
            ),
            build_env: std::collections::BTreeMap::new(),
        };
        Ok((machine, started, took.as_secs_f64()))
    }
}

/// Journals `res` and creates it, with the one destroy of its kind as its cleanup.
fn journaled<T>(
    runner: &mut Runner<'_>,
    res: &Resource,
    create: impl FnOnce() -> Result<T>,
) -> Result<T> {
    resource::create(runner, Destroyer::default(), res, create)
}

/// The qemu settings (cpus, memory, accel, disk size) of an environment.
pub fn env_settings(pf: &Pipelinefile, env: &str) -> QemuSettings {
    match pf.envs.get(env).map(|e| &e.settings) {
        Some(TargetSettings::Qemu(q)) => q.clone(),
        _ => QemuSettings::default(),
    }
}

/// The serving VMs of this project's pipeline (of `env`, or all), by name, with their folders.
pub fn find_serving(pf: &Pipelinefile, env: Option<&str>) -> Vec<(PathBuf, MachineRecord)> {
    let prefix = format!("pipe-{}-", pf.pipeline.name.value);
    let dir = crate::state::dir(&pf.root).join("qemu");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, MachineRecord)> = entries
        .flatten()
        .map(|e| e.path())
        .filter_map(|dir| {
            let rec = machine::load_record(&dir)?;
            let ours = rec.role.as_deref() == Some(ROLE)
                && rec.name.starts_with(&prefix)
                && env.is_none_or(|want| rec.env == want);
            ours.then_some((dir, rec))
        })
        .collect();
    found.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    found
}

impl Target for QemuTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::Qemu
    }

    fn noun(&self) -> &'static str {
        "machine"
    }

    fn artifact_noun(&self) -> &'static str {
        "artifact"
    }

    fn prepare_box(&self, plan: &Plan, printer: &Printer) -> Result<String> {
        Ok(self.qbox(plan, printer)?.disk.display().to_string())
    }

    fn lock_layer(
        &self,
        plan: &Plan,
        layer: LayerName,
        digest: &Digest,
    ) -> Result<Option<std::fs::File>> {
        let path = layer_path(&plan.pf.pipeline.name.value, layer, digest);
        let io =
            |what: String| move |e: std::io::Error| Error::runtime(format!("{what}: {e}"), None);
        let folder = path.parent().expect("in a folder");
        std::fs::create_dir_all(folder).map_err(io(format!("creating {}", folder.display())))?;
        let lock = crate::boxes::lock_file(&path.with_extension("lock"))
            .map_err(io(format!("locking {}", path.display())))?;
        Ok(Some(lock))
    }

    fn find_layer(
        &self,
        plan: &Plan,
        layer: LayerName,
        digest: &Digest,
    ) -> Result<Option<FoundLayer>> {
        let path = layer_path(&plan.pf.pipeline.name.value, layer, digest);
        Ok(path.is_file().then(|| FoundLayer {
            shown: path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            reference: path.display().to_string(),
        }))
    }

    fn start_build_machine(
        &self,
        runner: &mut Runner<'_>,
        plan: &Plan,
        layer: LayerName,
        digest: &Digest,
        parent: &str,
        printer: &Printer,
    ) -> Result<Machine> {
        let pipeline = plan.pf.pipeline.name.value.as_str();
        let run_id = runner.run_id();
        let suffix = suffix(&run_id);
        let tmp = layer_path(pipeline, layer, digest).with_extension(format!("qcow2.tmp-{suffix}"));
        let dir = crate::state::dir(&plan.pf.root)
            .join("qemu")
            .join(format!("build-{layer}-{suffix}"));
        let name = format!("pipe-{pipeline}-build-{layer}-{suffix}");
        let qbox = self.qbox(plan, printer)?;
        let settings = env_settings(plan.pf, &plan.env);
        let qenv = QemuEnv {
            qbox,
            accel: accel::choose(&settings.accel)?,
            settings,
            ssh_timeout: SSH_TIMEOUT,
        };
        // The box's package cache: a disk of its own, made from the box's folder after this
        // build's apt archives folder is in it (see `package_cache`).
        let cache = PackageCache::for_build(plan.pf, TargetKind::Qemu).filter(|_| {
            let missing = package_cache::missing_tool();
            if let Some(tool) = missing {
                printer.warn(
                    format!("{name}: building without the package cache: {tool} is not installed"),
                    Some("install it: apt-get install e2fsprogs".into()),
                );
            }
            missing.is_none()
        });
        let cache = match cache {
            Some(cache) => {
                let (run_dir, run) = prepare_package_cache(runner, &cache, layer)?;
                let image = package_cache::image_path(&dir);
                let disk = Resource::Path {
                    path: image.clone(),
                };
                journaled(runner, &disk, || {
                    std::fs::create_dir_all(&dir).map_err(|e| {
                        Error::runtime(format!("creating {}: {e}", dir.display()), None)
                            .caused_by(e)
                    })?;
                    package_cache::make_image(&cache.dir, &image)
                })?;
                Some((vec![run_dir, disk], run.env, image))
            }
            None => None,
        };
        // Layers keep the box's size (a recipe's `[qemu] size`); `disk_size` is the machine's
        // disk, so one cached layer serves every environment.
        let (mut machine, _, _) = self.boot(
            runner,
            &qenv,
            &name,
            &dir,
            &tmp,
            Path::new(parent),
            Vec::new(),
            false,
            cache.as_ref().map(|(_, _, image)| image.clone()),
            printer,
        )?;
        if let Some((resources, env, _)) = cache {
            // Removed after the VM, in reverse order; the VM stays last (see `commit_layer`).
            machine.resources.splice(0..0, resources);
            // A cache only: a guest that cannot mount it builds without it.
            match package_cache::in_guest(
                &*machine.comm,
                package_cache::mount_command(),
                "mounting the package cache disk",
            ) {
                Ok(()) => machine.build_env = env,
                Err(e) => printer.warn(
                    format!("{name}: building without the package cache: {e}"),
                    None,
                ),
            }
        }
        Ok(machine)
    }

    fn kept_build_machine(&self, machine: &Machine) -> (String, String) {
        let dir = machine
            .resources
            .iter()
            .find_map(|r| match r {
                Resource::QemuMachine { pidfile, .. } => pidfile.parent().map(Path::to_path_buf),
                _ => None,
            })
            .unwrap_or_default();
        (
            format!("kept the build machine {} (--keep-on-error)", machine.name),
            format!(
                "log in with `{}`; its console is {}; stop it with `kill $(cat {})`",
                machine.login,
                vm::console_log(&dir).display(),
                vm::pidfile(&dir).display()
            ),
        )
    }

    fn commit_layer(
        &self,
        runner: &mut Runner<'_>,
        plan: &Plan,
        machine: &Machine,
        layer: LayerName,
        digest: &Digest,
        _: &str,
    ) -> Result<String> {
        let Some(Resource::QemuMachine { pidfile, overlay }) = machine.resources.last() else {
            unreachable!("a qemu build machine is a QemuMachine resource");
        };
        let dir = pidfile.parent().expect("in a VM folder").to_path_buf();
        let boot = &self.qbox.get().expect("resolved for the build").boot;
        let image = package_cache::image_path(&dir);
        let cache = PackageCache::for_build(plan.pf, TargetKind::Qemu).filter(|_| image.is_file());
        if cache.is_some() {
            // Nothing of the cache in the layer: not the mount, not the mount point.
            package_cache::in_guest(
                &*machine.comm,
                package_cache::unmount_command(),
                "unmounting the package cache disk",
            )?;
        }
        seal(&*machine.comm, boot, vm::public_key(&dir).as_deref())?;
        let path = layer_path(&plan.pf.pipeline.name.value, layer, digest);
        let running = vm::read_pid(pidfile).map(|pid| vm::Vm {
            pid,
            dir: dir.clone(),
            ssh_port: 0,
            accel: accel::Accel::Tcg,
        });
        if let Some(v) = running {
            v.shutdown(SHUTDOWN_GRACE).map_err(|e| {
                Error::runtime(format!("stopping {}: {e}", machine.name), None).caused_by(e)
            })?;
        }
        if let Some(cache) = cache {
            // What this build downloaded, for the next one; a cache, so a failure only warns.
            let scratch = cache.run_dir(&runner.run_id(), layer.as_str()).join("back");
            if let Err(e) = package_cache::bring_back(&image, &cache.dir, &scratch) {
                runner.printer().warn(
                    format!(
                        "{}: the package cache keeps nothing of this build: {e}",
                        machine.name
                    ),
                    None,
                );
            }
        }
        std::fs::rename(overlay, &path).map_err(|e| {
            Error::runtime(format!("keeping {}: {e}", path.display()), None).caused_by(e)
        })?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(path.display().to_string())
    }

    fn start_machine(
        &self,
        runner: &mut Runner<'_>,
        plan: &Plan,
        from: &str,
        spec: &MachineSpec<'_>,
        printer: &Printer,
    ) -> Result<Machine> {
        let from = Path::new(from);
        let qbox = self.boot_box(plan, from, printer)?;
        let settings = match spec.role {
            Role::Verify => env_settings(plan.pf, &plan.env),
            Role::Serving { env, .. } => env_settings(plan.pf, env),
        };
        let qenv = QemuEnv {
            qbox: &qbox,
            accel: accel::choose(&settings.accel)?,
            settings,
            ssh_timeout: SSH_TIMEOUT,
        };
        let dir = machine_dir(&plan.pf.root, &spec.name);
        let overlay = dir.join("disk.qcow2");
        let forwards = spec.ports.iter().map(|p| (p.host_port, p.port)).collect();
        let (machine, started, took) = self.boot(
            runner, &qenv, &spec.name, &dir, &overlay, from, forwards, true, None, printer,
        )?;
        if let Role::Serving { env, release } = spec.role {
            let id = Identity {
                name: spec.name.clone(),
                env: env.to_string(),
                ports: spec
                    .ports
                    .iter()
                    .map(|p| Forward {
                        service: p.service.clone(),
                        host: p.host_port,
                        guest: p.port,
                    })
                    .collect(),
                digest: release.app_digest.clone(),
                role: Some(ROLE.to_string()),
                release: Some(release.id.clone()),
            };
            machine::save_record(&dir, &id.record(from, started, &qenv, took))?;
        }
        Ok(machine)
    }

    fn deliver_services(
        &self,
        comm: &dyn Communicator,
        rendered: &[RenderedService],
    ) -> Result<()> {
        deliver_units(comm, rendered)
    }

    fn wait_ready(
        &self,
        comm: &dyn Communicator,
        rendered: &[RenderedService],
        timeout: Duration,
    ) -> Result<()> {
        wait_ready(comm, rendered, timeout)
    }

    fn seal_artifact(
        &self,
        runner: &mut Runner<'_>,
        plan: &Plan,
        _: &str,
        app: &str,
        _: &Printer,
    ) -> Result<Artifacts> {
        let boot = &self.qbox.get().expect("resolved for the build").boot;
        let path = runner.step("flatten and compress the artifact", |r| {
            artifact(r, plan, Path::new(app), boot)
        })?;
        Ok(Artifacts::local(
            TargetKind::Qemu,
            path.display().to_string(),
        ))
    }

    fn release_artifact(&self, release: &Release) -> Result<String> {
        let path = release
            .artifact(TargetKind::Qemu)
            .map(PathBuf::from)
            .ok_or_else(|| {
                Error::runtime(
                    format!("release {} has no qemu artifact", release.alias),
                    None,
                )
            })?;
        if path.is_file() {
            Ok(path.display().to_string())
        } else {
            Err(Error::runtime(
                format!(
                    "release {}'s artifact {} is gone",
                    release.alias,
                    path.display()
                ),
                Some(format!(
                    "bake again: pipe bake --env {} (its file was removed from the artifact cache)",
                    release.env
                )),
            ))
        }
    }

    fn serving(&self, pf: &Pipelinefile, env: &str) -> Result<Vec<Serving>> {
        Ok(find_serving(pf, Some(env))
            .into_iter()
            .map(|(dir, rec)| Serving {
                running: rec.running(),
                release: rec.release.clone(),
                name: rec.name,
                id: dir.display().to_string(),
            })
            .collect())
    }

    fn stop_serving(&self, serving: &Serving, _: &Printer) -> Result<()> {
        let dir = Path::new(&serving.id);
        match machine::load_record(dir) {
            Some(rec) => rec.vm.shutdown(SHUTDOWN_GRACE).map_err(|e| {
                Error::runtime(format!("stopping {}: {e}", serving.name), None).caused_by(e)
            }),
            None => Ok(()),
        }
    }

    fn restore_serving(
        &self,
        runner: &mut Runner<'_>,
        plan: &Plan,
        serving: &Serving,
        rendered: &[RenderedService],
        printer: &Printer,
    ) -> Result<()> {
        let dir = Path::new(&serving.id);
        let Some(rec) = machine::load_record(dir) else {
            return Err(Error::runtime(
                format!("{} has no machine record", dir.display()),
                None,
            ));
        };
        if rec.running() {
            return Ok(());
        }
        let qbox = self.boot_box(plan, &rec.layer, printer)?;
        let settings = env_settings(plan.pf, &rec.env);
        let qenv = QemuEnv {
            qbox: &qbox,
            accel: accel::choose(&settings.accel)?,
            settings,
            ssh_timeout: SSH_TIMEOUT,
        };
        let step = printer.step(format!("boot the old machine {} again", rec.name));
        match machine::start_again_uninterruptibly(runner, &qenv, dir, &rec, rendered, printer) {
            Ok(_) => {
                step.done(None);
                Ok(())
            }
            Err(e) => {
                step.failed(Some(e.to_string().lines().next().unwrap_or("").to_string()));
                Err(e)
            }
        }
    }

    fn remove_serving(&self, serving: &Serving) -> Result<()> {
        machine::destroy(Path::new(&serving.id))
    }

    fn switched(&self, _: &Plan, _: &str, _: &str, _: &Printer) {}

    fn sweep(
        &self,
        _: &Pipelinefile,
        _: &std::collections::BTreeSet<String>,
        _: bool,
    ) -> Result<Vec<Swept>> {
        // A VM, its overlay and its folder are journaled before they exist, so the journals
        // hold every leftover; nothing carries a run label outside them.
        Ok(Vec::new())
    }

    fn after_switch(&self, _: &Pipelinefile, _: &str) -> Option<String> {
        None
    }

    fn switch_details(
        &self,
        _: &Pipelinefile,
        _: &str,
        artifact: &str,
    ) -> (serde_json::Value, String) {
        (serde_json::json!({}), format!("a VM on {artifact}"))
    }
}
