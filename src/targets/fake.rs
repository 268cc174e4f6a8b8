//! A recording fake behind [`Target`], for unit tests of what is written once over the
//! interface (building layers, verify, the switch): every operation and every destroy of a
//! journaled resource is logged, and any operation can be made to fail or to be interrupted.
//! No Docker, no QEMU; each case runs in milliseconds.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::communicators::{Communicator, ExecError, ExecRequest, OutputSink, UploadOptions};
use crate::config::{LayerName, Pipelinefile, TargetKind};
use crate::error::{Error, Result};
use crate::layers::digest::Digest;
use crate::ledger::Release;
use crate::plan::Plan;
use crate::runner::{Resource, Runner};
use crate::services::RenderedService;
use crate::ui::Printer;

use super::{Artifacts, FoundLayer, Machine, MachineSpec, Role, Serving, Target};

/// How a chosen operation goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Fail,
    Interrupt,
}

/// The fake target; `log` is what happened, in order.
pub struct FakeTarget {
    pub log: Arc<Mutex<Vec<String>>>,
    /// Operation (a log line's prefix) and how it goes wrong.
    pub fault: Option<(String, Fault)>,
    pub layers: RefCell<BTreeSet<String>>,
    /// (layer, parent) of every commit, in order.
    pub parents: RefCell<Vec<(String, String)>>,
    /// What [`Target::checkpoints_base`] answers (true unless a test says otherwise).
    pub checkpoints: bool,
    pub serving: RefCell<Vec<Serving>>,
}

impl FakeTarget {
    pub fn new(fault: Option<(&str, Fault)>) -> Self {
        Self {
            log: Arc::default(),
            fault: fault.map(|(op, f)| (op.to_string(), f)),
            layers: RefCell::default(),
            parents: RefCell::default(),
            checkpoints: true,
            serving: RefCell::default(),
        }
    }

    /// Logs `op`, then fails it if it is the chosen one.
    fn op(&self, op: String) -> Result<()> {
        self.log.lock().unwrap().push(op.clone());
        match &self.fault {
            Some((want, fault)) if op.starts_with(want.as_str()) => Err(match fault {
                Fault::Fail => Error::runtime(format!("{op}: injected failure"), None),
                Fault::Interrupt => Error::Interrupted,
            }),
            _ => Ok(()),
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Journals a resource named `name` whose destroy is logged.
    fn resource(&self, runner: &mut Runner<'_>, name: &str) -> Result<Resource> {
        let res = Resource::Path {
            path: PathBuf::from(format!("/fake/{name}")),
        };
        let log = self.log.clone();
        let n = name.to_string();
        runner.create(
            res.clone(),
            || Ok(()),
            move || {
                log.lock().unwrap().push(format!("destroy {n}"));
                Ok(())
            },
        )?;
        Ok(res)
    }

    fn machine(&self, name: &str, res: Resource) -> Machine {
        let fault = self.fault.clone();
        Machine {
            name: name.to_string(),
            comm: Box::new(FakeComm {
                name: name.to_string(),
                fault,
                log: self.log.clone(),
            }),
            resources: vec![res],
            login: format!("fake login {name}"),
            build_env: BTreeMap::new(),
        }
    }
}

/// A communicator on which every command succeeds, except on the operation `exec <machine>`
/// when that is the chosen fault.
struct FakeComm {
    name: String,
    fault: Option<(String, Fault)>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Communicator for FakeComm {
    fn describe(&self) -> String {
        format!("fake {}", self.name)
    }

    fn exec(&self, req: &ExecRequest, _: &mut dyn OutputSink) -> Result<i32, ExecError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("exec {} {}", self.name, req.argv.join(" ")));
        match &self.fault {
            Some((want, f)) if format!("exec {}", self.name).starts_with(want.as_str()) => {
                match f {
                    Fault::Fail => Ok(1),
                    Fault::Interrupt => Err(ExecError::Interrupted),
                }
            }
            _ => Ok(0),
        }
    }

    fn upload(&self, _: &Path, _: &str, _: &UploadOptions) -> Result<(), ExecError> {
        Ok(())
    }

    fn upload_bytes(&self, _: &[u8], _: &str, _: u32) -> Result<(), ExecError> {
        Ok(())
    }

    fn download(&self, _: &str, _: &Path) -> Result<(), ExecError> {
        Ok(())
    }
}

/// `checkpoint` for the base's checkpoint digest, else the layer's name.
fn part(plan: &Plan, layer: LayerName, digest: &Digest) -> String {
    if plan.digests.checkpoint == Some(*digest) {
        "checkpoint".into()
    } else {
        layer.to_string()
    }
}

impl Target for FakeTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::Docker
    }

    fn noun(&self) -> &'static str {
        "machine"
    }

    fn artifact_noun(&self) -> &'static str {
        "artifact"
    }

    fn prepare_box(&self, _: &Plan, _: &Printer) -> Result<String> {
        self.op("prepare box".into())?;
        Ok("box".into())
    }

    fn checkpoints_base(&self) -> bool {
        self.checkpoints
    }

    fn lock_layer(&self, _: &Plan, _: LayerName, _: &Digest) -> Result<Option<std::fs::File>> {
        Ok(None)
    }

    fn find_layer(
        &self,
        plan: &Plan,
        layer: LayerName,
        digest: &Digest,
    ) -> Result<Option<FoundLayer>> {
        let name = format!("{}-layer", part(plan, layer, digest));
        Ok(self.layers.borrow().contains(&name).then(|| FoundLayer {
            reference: name.clone(),
            shown: name,
        }))
    }

    fn start_build_machine(
        &self,
        runner: &mut Runner<'_>,
        plan: &Plan,
        layer: LayerName,
        digest: &Digest,
        _: &str,
        _: &Printer,
    ) -> Result<Machine> {
        let name = format!("build-{}", part(plan, layer, digest));
        let res = self.resource(runner, &name)?;
        self.op(format!("start {name}"))?;
        Ok(self.machine(&name, res))
    }

    fn kept_build_machine(&self, machine: &Machine) -> (String, String) {
        (format!("kept {}", machine.name), machine.login.clone())
    }

    fn commit_layer(
        &self,
        runner: &mut Runner<'_>,
        plan: &Plan,
        _: &Machine,
        layer: LayerName,
        digest: &Digest,
        parent: &str,
    ) -> Result<String> {
        let name = format!("{}-layer", part(plan, layer, digest));
        self.parents
            .borrow_mut()
            .push((name.clone(), parent.to_string()));
        let res = self.resource(runner, &name)?;
        self.op(format!("commit {name}"))?;
        runner.keep(&res)?;
        self.layers.borrow_mut().insert(name.clone());
        Ok(name)
    }

    fn start_machine(
        &self,
        runner: &mut Runner<'_>,
        _: &Plan,
        from: &str,
        spec: &MachineSpec<'_>,
        _: &Printer,
    ) -> Result<Machine> {
        let res = self.resource(runner, &spec.name)?;
        let role = match spec.role {
            Role::Verify => "verify",
            Role::Serving { .. } => "serving",
        };
        self.op(format!("start {} ({role}) from {from}", spec.name))?;
        Ok(self.machine(&spec.name, res))
    }

    fn deliver_services(&self, comm: &dyn Communicator, _: &[RenderedService]) -> Result<()> {
        self.op(format!("deliver services to {}", comm.describe()))
    }

    fn wait_ready(
        &self,
        comm: &dyn Communicator,
        _: &[RenderedService],
        _: Duration,
    ) -> Result<()> {
        self.op(format!("wait ready on {}", comm.describe()))
    }

    fn seal_artifact(
        &self,
        _: &mut Runner<'_>,
        _: &Plan,
        _: &str,
        app: &str,
        _: &Printer,
    ) -> Result<Artifacts> {
        self.op(format!("seal {app}"))?;
        Ok(Artifacts::local(self.kind(), format!("artifact-of-{app}")))
    }

    fn release_artifact(&self, release: &Release) -> Result<String> {
        Ok(format!("artifact-{}", release.alias))
    }

    fn serving(&self, _: &Pipelinefile, _: &str) -> Result<Vec<Serving>> {
        Ok(self.serving.borrow().clone())
    }

    fn stop_serving(&self, serving: &Serving, _: &Printer) -> Result<()> {
        // Stopped even when the stop was interrupted, as a real power-down would be.
        self.set_running(&serving.name, false);
        self.op(format!("stop {}", serving.name))
    }

    fn restore_serving(
        &self,
        _: &mut Runner<'_>,
        _: &Plan,
        serving: &Serving,
        _: &[RenderedService],
        _: &Printer,
    ) -> Result<()> {
        self.set_running(&serving.name, true);
        self.op(format!("restore {}", serving.name))
    }

    fn remove_serving(&self, serving: &Serving) -> Result<()> {
        self.serving.borrow_mut().retain(|s| s.name != serving.name);
        self.op(format!("remove {}", serving.name))
    }

    fn switched(&self, _: &Plan, env: &str, artifact: &str, _: &Printer) {
        self.log
            .lock()
            .unwrap()
            .push(format!("switched {env} to {artifact}"));
    }

    fn sweep(
        &self,
        _: &Pipelinefile,
        _: &std::collections::BTreeSet<String>,
        _: bool,
    ) -> Result<Vec<super::Swept>> {
        Ok(Vec::new())
    }

    fn after_switch(&self, _: &Pipelinefile, _: &str) -> Option<String> {
        None
    }

    fn switch_details(&self, _: &Pipelinefile, _: &str, _: &str) -> (serde_json::Value, String) {
        (serde_json::json!({}), String::new())
    }
}

impl FakeTarget {
    fn set_running(&self, name: &str, running: bool) {
        for s in self.serving.borrow_mut().iter_mut() {
            if s.name == name {
                s.running = running;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Selection, make};
    use crate::runner::{Journal, journal};
    use crate::targets::layers::build_layers;
    use crate::targets::switch::{Switch, switch};
    use crate::targets::verify::verify;
    use crate::ui::{OutputMode, Verbosity};

    const PIPELINEFILE: &str = r#"
[pipeline]
name = "fake"

[box]
docker = { image = "debian:bookworm" }

[base]
provision = [ { inline = ["echo base"] } ]

[app]
provision = [ { inline = ["echo app"] } ]

[[service]]
name = "web"
command = "sleep 100"
port = 8080
host_port = 18080

[verify]
commands = ["true"]
timeout = 1

[env.dev]
target = "docker"

[env.production]
target = "docker"
promote_from = "dev"
"#;

    fn printer() -> Printer {
        Printer::with_mode(
            OutputMode::Human {
                color: false,
                progress: false,
            },
            Verbosity::Quiet,
        )
    }

    struct Setup {
        dir: tempfile::TempDir,
        pf: Pipelinefile,
    }

    fn setup() -> Setup {
        setup_with(PIPELINEFILE)
    }

    /// The fake pipeline with a precache step in its base.
    fn setup_precache() -> Setup {
        let text = PIPELINEFILE.replace(
            "[app]\n",
            "[base.precache]\nfiles = [\"deps.txt\"]\nto = \"/opt/deps\"\nrun = \"cat deps.txt\"\n\n[app]\n",
        );
        assert_ne!(text, PIPELINEFILE);
        setup_with(&text)
    }

    fn setup_with(pipelinefile: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("deps.txt"), "left-pad\n").unwrap();
        std::fs::write(dir.path().join("Pipelinefile.toml"), pipelinefile).unwrap();
        let pf = crate::config::load(&dir.path().join("Pipelinefile.toml"), dir.path())
            .unwrap_or_else(|e| panic!("{e}"));
        Setup { dir, pf }
    }

    fn plan<'a>(s: &'a Setup, p: &Printer) -> Plan<'a> {
        make(
            &s.pf,
            &Selection {
                env: Some("dev".into()),
                ..Selection::default()
            },
            p,
        )
        .unwrap()
    }

    fn journal_left(s: &Setup) -> Vec<Resource> {
        journal::list(&s.dir.path().join(".pipe"))
            .unwrap()
            .into_iter()
            .flat_map(|(_, f)| f.resources)
            .collect()
    }

    fn runner<'a>(s: &Setup, p: &Printer) -> Runner<'a> {
        Runner::new(
            Journal::start(&s.dir.path().join(".pipe"), "test", "fake").unwrap(),
            p,
        )
    }

    /// Every operation a build goes through, in order.
    const BUILD_OPS: [&str; 8] = [
        "start build-base",
        "exec build-base",
        "commit base-layer",
        "destroy build-base",
        "start build-app",
        "exec build-app",
        "commit app-layer",
        "destroy build-app",
    ];

    #[test]
    fn a_build_runs_its_steps_in_order_and_keeps_only_the_layers() {
        let s = setup();
        let p = printer();
        let t = FakeTarget::new(None);
        let plan = plan(&s, &p);
        let mut r = runner(&s, &p);
        let res = build_layers(&mut r, &t, &plan, "box", false, &p);
        let (base, app) = r.finish(res).unwrap();
        assert_eq!((base.as_str(), app.as_str()), ("base-layer", "app-layer"));
        let ops: Vec<String> = t
            .lines()
            .into_iter()
            .filter(|l| !l.starts_with("exec"))
            .collect();
        assert_eq!(
            ops,
            BUILD_OPS
                .iter()
                .filter(|o| !o.starts_with("exec"))
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
        );
        assert!(journal_left(&s).is_empty());
        // Nothing changed: both layers are reused, no machine starts.
        let t2 = FakeTarget {
            layers: t.layers,
            ..FakeTarget::new(None)
        };
        let mut r = runner(&s, &p);
        let res = build_layers(&mut r, &t2, &plan, "box", false, &p);
        r.finish(res).unwrap();
        assert!(t2.lines().is_empty(), "{:?}", t2.lines());
    }

    /// A base with a precache step builds its provisioners as a checkpoint, then the precache
    /// step on it; when only the precache inputs changed the checkpoint is reused and only the
    /// precache step runs; a failure on the checkpoint keeps it for the next build.
    #[test]
    fn a_precache_base_builds_on_a_checkpoint_of_its_provisioners() {
        let s = setup_precache();
        let p = printer();
        let plan = plan(&s, &p);
        assert!(plan.digests.checkpoint.is_some());
        let machines = |t: &FakeTarget| -> Vec<String> {
            t.lines()
                .into_iter()
                .filter(|l| !l.starts_with("exec"))
                .collect()
        };
        let execs = |t: &FakeTarget, machine: &str| -> String {
            t.lines()
                .into_iter()
                .filter(|l| l.starts_with(&format!("exec {machine} ")))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let build = |t: &FakeTarget| {
            let mut r = runner(&s, &p);
            let res = build_layers(&mut r, t, &plan, "box", false, &p);
            r.finish(res)
        };
        let t = FakeTarget::new(None);
        build(&t).unwrap();
        assert_eq!(
            machines(&t),
            [
                "start build-checkpoint",
                "commit checkpoint-layer",
                "destroy build-checkpoint",
                "start build-base",
                "commit base-layer",
                "destroy build-base",
                "start build-app",
                "commit app-layer",
                "destroy build-app",
            ]
        );
        let parents: Vec<(String, String)> = t.parents.borrow().clone();
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            parents,
            [
                pair("checkpoint-layer", "box"),
                pair("base-layer", "checkpoint-layer"),
                pair("app-layer", "base-layer"),
            ]
        );
        assert!(!execs(&t, "build-checkpoint").contains("cat deps.txt"));
        assert!(execs(&t, "build-base").contains("cat deps.txt"));
        assert!(journal_left(&s).is_empty());

        // A dependency bump: the base and app digests moved, the checkpoint's did not.
        let t2 = FakeTarget::new(None);
        t2.layers.borrow_mut().insert("checkpoint-layer".into());
        build(&t2).unwrap();
        assert_eq!(
            machines(&t2),
            [
                "start build-base",
                "commit base-layer",
                "destroy build-base",
                "start build-app",
                "commit app-layer",
                "destroy build-app",
            ]
        );
        assert_eq!(
            t2.parents.borrow()[0],
            pair("base-layer", "checkpoint-layer")
        );

        // The precache step fails: the checkpoint stays (a layer), the rest is cleaned up.
        for fault in [Fault::Fail, Fault::Interrupt] {
            let t3 = FakeTarget::new(Some(("commit base-layer", fault)));
            assert!(build(&t3).is_err());
            let log = t3.lines();
            assert!(
                !log.contains(&"destroy checkpoint-layer".to_string()),
                "{log:?}"
            );
            assert!(log.contains(&"destroy base-layer".to_string()), "{log:?}");
            assert!(log.contains(&"destroy build-base".to_string()), "{log:?}");
            assert_eq!(
                t3.layers.borrow().iter().collect::<Vec<_>>(),
                ["checkpoint-layer"]
            );
            assert!(journal_left(&s).is_empty());
        }

        // A target that does not keep checkpoints builds the base in one machine.
        let one = FakeTarget {
            checkpoints: false,
            ..FakeTarget::new(None)
        };
        build(&one).unwrap();
        assert_eq!(
            &machines(&one)[..3],
            [
                "start build-base",
                "commit base-layer",
                "destroy build-base"
            ]
        );
        assert!(execs(&one, "build-base").contains("cat deps.txt"));
    }

    /// A failure or an interrupt at each step of a build: the build machine of the failing
    /// layer is destroyed, nothing is committed after it, and the journal is empty.
    #[test]
    fn a_failure_or_interrupt_at_every_build_step_cleans_up_in_reverse() {
        let s = setup();
        let p = printer();
        let plan = plan(&s, &p);
        for op in ["start build-base", "exec build-base", "commit base-layer"]
            .into_iter()
            .chain(["start build-app", "exec build-app", "commit app-layer"])
        {
            for fault in [Fault::Fail, Fault::Interrupt] {
                let t = FakeTarget::new(Some((op, fault)));
                let mut r = runner(&s, &p);
                let res = build_layers(&mut r, &t, &plan, "box", false, &p);
                let err = r.finish(res).unwrap_err();
                match fault {
                    Fault::Interrupt => assert!(
                        matches!(err, Error::Interrupted) || err.exit_code() == 130,
                        "{op}: {err}"
                    ),
                    Fault::Fail => assert_ne!(err.exit_code(), 130, "{op}: {err}"),
                }
                let log = t.lines();
                let layer = if op.contains("base") { "base" } else { "app" };
                let failed_at = log.iter().position(|l| l.starts_with(op)).unwrap();
                let after: Vec<&String> = log[failed_at + 1..]
                    .iter()
                    .filter(|l| !l.starts_with("exec"))
                    .collect();
                // The failing layer's build machine is destroyed after the failure, its
                // half-made layer first when the commit itself failed; nothing else happens.
                let mut want = Vec::new();
                if op.starts_with("commit") {
                    want.push(format!("destroy {layer}-layer"));
                }
                want.push(format!("destroy build-{layer}"));
                assert_eq!(
                    after.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                    want,
                    "{op} {fault:?}: {log:?}"
                );
                assert!(
                    journal_left(&s).is_empty(),
                    "{op} {fault:?}: {:?}",
                    journal_left(&s)
                );
                if layer == "base" {
                    assert!(!log.iter().any(|l| l.contains("build-app")), "{log:?}");
                }
            }
        }
    }

    #[test]
    fn keep_on_error_keeps_the_failed_build_machine_but_not_on_an_interrupt() {
        let s = setup();
        let p = printer();
        let plan = plan(&s, &p);
        for (fault, kept) in [(Fault::Fail, true), (Fault::Interrupt, false)] {
            let t = FakeTarget::new(Some(("exec build-base", fault)));
            let mut r = runner(&s, &p);
            let res = build_layers(&mut r, &t, &plan, "box", true, &p);
            assert!(r.finish(res).is_err());
            assert_eq!(
                !t.lines().contains(&"destroy build-base".to_string()),
                kept,
                "{fault:?}: {:?}",
                t.lines()
            );
        }
    }

    #[test]
    fn verify_destroys_its_machine_after_a_failure_or_interrupt_at_every_step() {
        let s = setup();
        let p = printer();
        let plan = plan(&s, &p);
        let ok = FakeTarget::new(None);
        let mut r = runner(&s, &p);
        let res = verify(&mut r, &ok, &plan, "app-layer", &p);
        assert!(r.finish(res).unwrap().ok);
        let name = ok.lines()[0].split_whitespace().nth(1).unwrap().to_string();
        assert_eq!(
            ok.lines(),
            vec![
                format!("start {name} (verify) from app-layer"),
                format!("deliver services to fake {name}"),
                format!("wait ready on fake {name}"),
                format!("exec {name} sh -c true"),
                format!("destroy {name}"),
            ]
        );
        for op in [
            "start pipe-fake-verify",
            "deliver",
            "wait ready",
            "exec pipe-fake-verify",
        ] {
            for fault in [Fault::Fail, Fault::Interrupt] {
                let t = FakeTarget::new(Some((op, fault)));
                let mut r = runner(&s, &p);
                let res = verify(&mut r, &t, &plan, "app-layer", &p);
                let res = r.finish(res);
                match (op, fault) {
                    // Services that never listen and checks that fail are a failed
                    // verification, not an error.
                    ("wait ready" | "exec pipe-fake-verify", Fault::Fail) => {
                        assert!(!res.unwrap().ok, "{op}")
                    }
                    (_, Fault::Interrupt) => {
                        assert_eq!(res.unwrap_err().exit_code(), 130, "{op}")
                    }
                    _ => assert!(res.is_err(), "{op}"),
                }
                let log = t.lines();
                assert_eq!(
                    log.iter().filter(|l| l.starts_with("destroy")).count(),
                    1,
                    "{op} {fault:?}: {log:?}"
                );
                assert!(log.last().unwrap().starts_with("destroy"), "{log:?}");
                assert!(journal_left(&s).is_empty(), "{op} {fault:?}");
            }
        }
    }

    fn release() -> Release {
        Release {
            id: "abcdef0123456789".into(),
            alias: "abcdef0123".into(),
            pipeline: "fake".into(),
            env: "dev".into(),
            target: TargetKind::Docker,
            artifacts: Default::default(),
            base_digest: String::new(),
            base_artifact: None,
            snapshots: Default::default(),
            app_digest: String::new(),
            git_commit: String::new(),
            git_dirty: false,
            pipelinefile_digest: String::new(),
            who: String::new(),
            when: String::new(),
            verify: None,
        }
    }

    fn old() -> Serving {
        Serving {
            name: "pipe-fake-production-old".into(),
            running: true,
            release: Some("old".into()),
            id: "old".into(),
        }
    }

    fn run_switch(s: &Setup, t: &FakeTarget, p: &Printer) -> Result<String> {
        let plan = plan(s, p);
        let release = release();
        let sw = Switch {
            plan: &plan,
            env: "production",
            release: &release,
            artifact: "artifact-abcdef0123",
            old: t.serving.borrow().clone(),
            old_services: Default::default(),
            ports: Vec::new(),
        };
        let mut r = runner(s, p);
        let res = switch(&mut r, t, &sw, p);
        r.finish(res)
    }

    #[test]
    fn a_switch_verifies_stops_starts_and_removes_in_order() {
        let s = setup();
        let p = printer();
        let t = FakeTarget::new(None);
        t.serving.borrow_mut().push(old());
        let new = run_switch(&s, &t, &p).unwrap();
        assert_eq!(new, "pipe-fake-production-abcdef0123");
        let log: Vec<String> = t
            .lines()
            .into_iter()
            .map(|l| {
                l.split_whitespace()
                    .map(|w| {
                        if w.starts_with("pipe-fake-verify") {
                            "V"
                        } else {
                            w
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        assert_eq!(
            log,
            vec![
                "start V (verify) from artifact-abcdef0123",
                "deliver services to fake V",
                "wait ready on fake V",
                "exec V sh -c true",
                "destroy V",
                "stop pipe-fake-production-old",
                "start pipe-fake-production-abcdef0123 (serving) from artifact-abcdef0123",
                "deliver services to fake pipe-fake-production-abcdef0123",
                "wait ready on fake pipe-fake-production-abcdef0123",
                "exec pipe-fake-production-abcdef0123 sh -c true",
                "remove pipe-fake-production-old",
                "switched production to artifact-abcdef0123",
            ]
        );
        assert!(journal_left(&s).is_empty(), "the new machine was kept");
    }

    /// A failure or an interrupt at each step of a switch: before the old machine stops,
    /// nothing else happens; after, the new machine is destroyed first (freeing the ports),
    /// then the old one is restored; the old one is never removed.
    #[test]
    fn a_failure_or_interrupt_at_every_switch_step_keeps_the_old_machine_serving() {
        let s = setup();
        let p = printer();
        let new = "pipe-fake-production-abcdef0123";
        for op in [
            "start pipe-fake-verify",
            "exec pipe-fake-verify",
            "stop pipe-fake-production-old",
            &format!("start {new}"),
            &format!("deliver services to fake {new}"),
            &format!("wait ready on fake {new}"),
            &format!("exec {new}"),
        ] {
            for fault in [Fault::Fail, Fault::Interrupt] {
                let t = FakeTarget::new(Some((op, fault)));
                t.serving.borrow_mut().push(old());
                let err = run_switch(&s, &t, &p).unwrap_err();
                if fault == Fault::Interrupt {
                    assert_eq!(err.exit_code(), 130, "{op}: {err}");
                }
                let log = t.lines();
                assert!(
                    !log.iter().any(|l| l.starts_with("remove")),
                    "{op} {fault:?}: {log:?}"
                );
                assert!(!log.iter().any(|l| l.starts_with("switched")), "{log:?}");
                let stopped = log.iter().position(|l| l.starts_with("stop"));
                let restored = log.iter().position(|l| l.starts_with("restore"));
                let destroyed_new = log.iter().position(|l| *l == format!("destroy {new}"));
                match stopped {
                    None => assert_eq!(restored, None, "{op}: {log:?}"),
                    Some(_) => {
                        let restored = restored.unwrap_or_else(|| panic!("{op}: {log:?}"));
                        if let Some(d) = destroyed_new {
                            assert!(d < restored, "ports freed first: {op} {log:?}");
                        }
                    }
                }
                assert!(
                    t.serving.borrow().iter().all(|s| s.running),
                    "the old machine serves again: {op} {fault:?}: {log:?}"
                );
                assert!(journal_left(&s).is_empty(), "{op} {fault:?}");
            }
        }
    }

    /// A bake whose checks fail shows its verify step as failed, not `ok`, both to a person
    /// and in the `--json` step event (issue 13).
    #[test]
    fn a_bake_whose_checks_fail_shows_the_verify_step_as_failed() {
        use crate::targets::layers::bake;
        let s = setup();
        let human = Printer::capturing(
            OutputMode::Human {
                color: false,
                progress: false,
            },
            Verbosity::Normal,
        );
        let json = Printer::capturing(OutputMode::Json, Verbosity::Normal);
        for p in [&human, &json] {
            let plan = plan(&s, p);
            let t = FakeTarget::new(Some(("exec pipe-fake-verify", Fault::Fail)));
            let mut r = runner(&s, p);
            let res = bake(&mut r, &t, &plan, false, false, None, p);
            let baked = r.finish(res).unwrap();
            assert!(!baked.verify.unwrap().ok);
        }
        let lines = human.captured();
        let verify: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("verify app layer") && !l.starts_with("==>"))
            .collect();
        assert_eq!(verify.len(), 1, "{lines:?}");
        assert!(
            verify[0].starts_with("!! ") && verify[0].contains("the checks failed"),
            "{lines:?}"
        );
        let events: Vec<serde_json::Value> = json
            .captured()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|e: &serde_json::Value| {
                e["step"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("verify app layer"))
                    && e["status"] != "started"
            })
            .collect();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["status"], "failed", "{events:?}");
    }
}
