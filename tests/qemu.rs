//! The qemu target against real VMs (TCG when KVM does not work, as on CI): the box, the
//! communicator suite over SSH to a VM, layers and machines through the `pipe` binary, and
//! cleanup after failures and Ctrl-C. One box is built and shared by every test (and every
//! later run: its recipe digest names it in the cache).

mod common;
#[path = "support/communicator_suite.rs"]
mod suite;
#[path = "support/docker_box.rs"]
mod support;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pipe::boxes::qemu::{QemuBox, build_qemu_box};
use pipe::communicators::{Collect, Communicator, ExecRequest};
use pipe::targets::qemu::accel::{self, Accel};
use pipe::targets::qemu::vm::{self, Boot, Vm, VmSpec};

/// The debian-12 qemu box, built once.
fn qemu_box() -> QemuBox {
    static BOX: Mutex<Option<QemuBox>> = Mutex::new(None);
    let mut b = BOX.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = &*b {
        return b.clone();
    }
    let built = build_qemu_box(&support::debian_12(), &support::quiet_printer(), false)
        .unwrap_or_else(|e| panic!("building the qemu box: {e}"));
    *b = Some(built.clone());
    built
}

fn accel() -> Accel {
    accel::choose("auto").unwrap().accel
}

/// A VM on an overlay of the box in a temp folder; stopped and removed on drop.
struct TestVm {
    vm: Vm,
    _dir: tempfile::TempDir,
}

impl Drop for TestVm {
    fn drop(&mut self) {
        let _ = vm::stop(&self.vm.dir, Duration::from_secs(5));
    }
}

fn boot_box_vm() -> TestVm {
    let b = qemu_box();
    let dir = tempfile::tempdir().unwrap();
    let overlay = dir.path().join("disk.qcow2");
    pipe::targets::qemu::disk::create_overlay(&b.disk, &overlay, None).unwrap();
    let spec = VmSpec {
        name: "pipe-test-vm".into(),
        dir: dir.path().join("vm"),
        disk: overlay,
        boot: b.boot.clone(),
        cpus: 2,
        memory: 1024,
        accel: accel(),
        forwards: Vec::new(),
        package_cache: None,
    };
    let vm = vm::start(&spec).unwrap();
    TestVm { vm, _dir: dir }
}

#[test]
fn communicator_suite_over_ssh_to_a_vm() {
    let t = boot_box_vm();
    let started = Instant::now();
    let (comm, took) =
        t.vm.wait_for_ssh(Duration::from_secs(300))
            .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "boot to SSH: {:.1}s ({}), waited {:.1}s",
        took.as_secs_f64(),
        t.vm.accel,
        started.elapsed().as_secs_f64()
    );
    // The login key is only in /run, never on the disk.
    let mut out = Collect::default();
    let code = comm
        .exec(
            &ExecRequest::shell(
                "findmnt -n -o FSTYPE --target /run/pipe-ssh/root; ls /root/.ssh 2>/dev/null | wc -l; ls /etc/ssh/ssh_host_ed25519_key",
            ),
            &mut out,
        )
        .unwrap();
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "tmpfs\n0\n/etc/ssh/ssh_host_ed25519_key\n"
    );
    for (name, test) in suite::ALL {
        eprintln!("suite over ssh to a vm: {name}");
        test(&comm);
    }
    // QMP answers and the console log is kept.
    assert_eq!(vm::status(&t.vm.dir).as_deref(), Some("running"));
    let console = std::fs::read_to_string(t.vm.console()).unwrap();
    assert!(console.contains("Linux version"), "{console}");
    t.vm.shutdown(Duration::from_secs(120)).unwrap();
    assert!(!t.vm.running());
}

#[test]
fn a_boot_failure_shows_the_serial_console_and_its_path() {
    // The box's kernel and initrd on a blank disk: the initramfs finds no root file system.
    let b = qemu_box();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("blank.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("1G")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let spec = VmSpec {
        name: "pipe-test-noroot".into(),
        dir: dir.path().join("vm"),
        disk,
        boot: b.boot.clone(),
        cpus: 1,
        memory: 512,
        accel: accel(),
        forwards: Vec::new(),
        package_cache: None,
    };
    let t = TestVm {
        vm: vm::start(&spec).unwrap(),
        _dir: dir,
    };
    // Debian's initramfs gives up on the root device after 30 s; TCG under load is slow.
    let err = match t.vm.wait_for_ssh(Duration::from_secs(120)) {
        Ok(_) => panic!("a VM without a root file system answered SSH"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("no SSH within 120s"), "{err}");
    assert!(err.contains("serial console"), "{err}");
    assert!(err.contains(&t.vm.console().display().to_string()), "{err}");
    // The console tail shows why: the kernel ran and the root device never appeared.
    assert!(
        err.contains("LABEL=pipe-root does not exist"),
        "the console tail explains the failure:\n{err}"
    );
}

#[test]
fn box_list_shows_docker_and_qemu_boxes() {
    let q = qemu_box();
    common::ensure_box();
    let dir = tempfile::tempdir().unwrap();
    let list = common::run_pipe(dir.path(), &["--json", "box", "list"], &[]);
    list.ok();
    let data = json_result(&list);
    let rows = data.as_array().expect("an array of boxes");
    let qemu = rows
        .iter()
        .find(|r| r["target"] == "qemu" && r["digest"] == q.digest.as_str())
        .unwrap_or_else(|| panic!("the qemu box is not listed: {data}"));
    assert_eq!(
        qemu["disk"],
        q.disk.display().to_string().as_str(),
        "{qemu}"
    );
    assert!(
        rows.iter()
            .any(|r| r["target"] == "docker" && r["name"] == "debian-12"),
        "the docker box is not listed: {data}"
    );
    let human = common::run_pipe(dir.path(), &["box", "list"], &[]);
    human.ok();
    let line = human
        .stdout
        .lines()
        .find(|l| l.contains(&q.disk.display().to_string()))
        .unwrap_or_else(|| panic!("{}", human.all()));
    assert!(
        line.starts_with("debian-12") && line.contains(" qemu "),
        "{line}"
    );
}

#[test]
fn the_accelerator_is_chosen_and_explained() {
    let c = accel::choose("auto").unwrap();
    assert!(!c.reason.is_empty());
    eprintln!("accel: {} ({})", c.accel, c.reason);
    assert_eq!(accel::choose("tcg").unwrap().accel, Accel::Tcg);
}

// ---- layers and machines through the `pipe` binary ----------------------------------------

/// Every test project uses this pipeline name and the same [base], so the base layer is built
/// once and shared (the layer lock makes concurrent tests wait for it, then reuse it).
const PIPELINE: &str = "pipe-qemu-test";

/// A tiny HTTP server in perl (perl-base is in every Debian): serves /srv/www/index.html. It
/// reads the whole request first: closing a socket with unread data resets the connection,
/// and QEMU's user-mode network then drops the reply.
const SERVER: &str = r#"perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalAddr=>"0.0.0.0",LocalPort=>$ARGV[0],Listen=>5,ReuseAddr=>1) or die "listen: $!"; while($c=$s->accept){ while(<$c>){ last if /^\r?$/ } open(F,"<","/srv/www/index.html"); local $/; $b=<F>; close F; print $c "HTTP/1.0 200 OK\r\nContent-Length: ".length($b)."\r\n\r\n".$b; close $c }' 8000"#;

fn pipelinefile(port: u16, app_extra: &str) -> String {
    format!(
        r#"[pipeline]
name = "{PIPELINE}"

[vars]
greeting = "hello"

[box]
docker = {{ box = "debian-12" }}
qemu = {{ box = "debian-12" }}

[base]
provision = [ {{ shell = "base.sh" }} ]

[app]
provision = [
  {{ file = "www/", to = "/srv/www" }},
  {{ inline = ["echo '{{{{ vars.greeting }}}} from {{{{ environment }}}}' >> /srv/www/index.html"{app_extra}] }},
]

[[service]]
name = "web"
command = '''{SERVER}'''
port = 8000
host_port = {port}
env = {{ GREETING = "it's \"quoted\" $HOME" }}

[env.dev]
target = "qemu"
cpus = 2
memory = 1024
"#
    )
}

/// A project whose VMs are stopped and whose machine overlays are removed on drop.
struct QemuProject {
    p: common::Project,
    port: u16,
}

impl Drop for QemuProject {
    fn drop(&mut self) {
        let dir = self.p.path().join(".pipe/qemu");
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let _ = pipe::targets::qemu::machine::destroy(&e.path());
            }
        }
    }
}

impl QemuProject {
    fn new(app_extra: &str) -> Self {
        Self::with_pipelinefile(|port| pipelinefile(port, app_extra))
    }

    fn with_pipelinefile(text: impl FnOnce(u16) -> String) -> Self {
        qemu_box();
        let port = common::free_port();
        let p = common::Project::new(
            "qemu",
            &text(port),
            &[
                (
                    "base.sh",
                    "#!/bin/sh\nset -e\necho base-layer > /base.txt\n",
                ),
                ("www/index.html", "<h1>page</h1>\n"),
            ],
        );
        Self { p, port }
    }

    fn up(&self) -> common::Run {
        self.p.pipe(&["up", "--no-progress"])
    }

    /// QEMU processes started for this project.
    fn qemu_processes(&self) -> Vec<String> {
        self.p.qemu_processes()
    }

    /// Overlays of builds in progress (`*.tmp-*`) of the layers a run's output says it built
    /// (other tests build their own layers in the same folder at the same time).
    fn tmp_overlays(&self, output: &str) -> Vec<PathBuf> {
        let prefixes: Vec<String> = output
            .lines()
            .filter_map(|l| {
                let rest = l.split("build ").nth(1)?;
                let mut w = rest.split_whitespace();
                let layer = w.next()?;
                (w.next()? == "layer").then_some(())?;
                Some(format!("{layer}-{}", w.next()?))
            })
            .collect();
        assert!(!prefixes.is_empty(), "no layer build in:\n{output}");
        std::fs::read_dir(pipe::targets::qemu::disk::layers_dir(PIPELINE))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        let n = p.file_name().unwrap().to_string_lossy().into_owned();
                        n.contains(".qcow2.tmp-") && prefixes.iter().any(|x| n.starts_with(x))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Package cache disks left in the project's VM folders.
    fn cache_disks(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.p.path().join(".pipe/qemu"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| pipe::targets::qemu::package_cache::image_path(&e.path()))
                    .filter(|p| p.exists())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn journals(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.p.path().join(".pipe/journal"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

/// The qemu box's package cache on the host (shared with every other qemu build of the box).
fn package_store() -> PathBuf {
    pipe::boxes::package_cache::root().join("qemu-debian-12/apt/debs")
}

/// apt's own download lines in the app layer's provisioning output (lint's warnings quote
/// the Pipelinefile, which says Get: too).
fn apt_downloads(run: &common::Run) -> Vec<String> {
    run.all()
        .lines()
        .filter(|l| l.contains("[app/inline") && l.contains("Get:"))
        .map(str::to_string)
        .collect()
}

/// Also the package cache: the app layer installs `hello` with apt (a token makes its digest
/// new on every run of this test, so both app builds below really build); the first build
/// downloads it and brings it back to the host's cache, the second (after a change) downloads
/// nothing, and the layer serving the machine holds nothing of the cache.
#[test]
fn up_builds_layers_serves_through_systemd_and_reuses_them() {
    let token = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let t = QemuProject::new(&format!(
        r#", "apt-get update -qq -o Acquire::Languages=none", "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends hello >/tmp/apt.log", "grep -E '^(Get:|Need to get)' /tmp/apt.log || true", "hello", "apt-get clean", "echo {token} > /etc/pipe-test-token""#
    ));
    // So that the first build has to download it (no other test installs hello on qemu).
    let hello_debs = || -> Vec<PathBuf> {
        std::fs::read_dir(package_store())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .unwrap()
                            .to_string_lossy()
                            .starts_with("hello_")
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    for deb in hello_debs() {
        let _ = std::fs::remove_file(deb);
    }
    let first = t.up();
    first.ok();
    let out = first.all();
    assert!(out.contains("SSH up"), "{out}");
    assert!(
        apt_downloads(&first).iter().any(|l| l.contains("hello")),
        "the first build downloads hello: {out}"
    );
    assert!(out.contains("Hello, world!"), "{out}");
    let cached = hello_debs();
    assert_eq!(
        cached.len(),
        1,
        "the build brought hello back to the cache: {out}"
    );
    let cached_at = std::fs::metadata(&cached[0]).unwrap().modified().unwrap();
    let (status, body) = common::http_get_retry(t.port, "/", 60);
    assert_eq!(status, 200);
    assert!(
        body.contains("<h1>page</h1>\nhello from dev"),
        "{status} {body:?}"
    );
    let again = t.up();
    again.ok();
    assert!(again.all().contains("up to date"), "{}", again.all());

    // The service is a systemd unit with its environment from /run/pipe/env, values intact.
    let rec = pipe::targets::qemu::machine::load_record(
        &t.p.path()
            .join(".pipe/qemu")
            .join(format!("pipe-{PIPELINE}-dev")),
    )
    .expect("machine.json");
    let comm = rec.vm.ssh(Duration::from_secs(60));
    let mut out = Collect::default();
    let code = comm
        .exec(
            &ExecRequest::shell(
                "systemctl is-active pipe-web.service; tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value pipe-web.service)/environ | grep ^GREETING=",
            ),
            &mut out,
        )
        .unwrap();
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "active\nGREETING=it's \"quoted\" $HOME\n"
    );
    // Its disk is the app layer: hello is installed, and nothing of the cache is there (no
    // mount point, so no apt.conf; no archive; no cache disk on a serving machine).
    let mut out = Collect::default();
    let script = format!(
        "test -x /usr/bin/hello; test ! -e {m}; ! grep -qs {m} /proc/mounts; ! grep -rqs {m} /etc; ! ls /var/cache/apt/archives/*.deb 2>/dev/null; ! grep -qs pipecache /sys/block/*/serial",
        m = pipe::boxes::package_cache::MOUNT
    );
    let code = comm
        .exec(&ExecRequest::shell(script.replace("; ", " && ")), &mut out)
        .unwrap();
    assert_eq!(
        code,
        0,
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(comm);

    // Layers are qcow2 files named by digest; a changed app rebuilds only the app layer.
    let layers = pipe::targets::qemu::disk::layers_dir(PIPELINE);
    let count = |prefix: &str| {
        std::fs::read_dir(&layers)
            .unwrap()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(prefix) && n.ends_with(".qcow2")
            })
            .count()
    };
    assert!(count("base-") >= 1 && count("app-") >= 1);
    t.p.write("www/index.html", "<h1>changed</h1>\n");
    let changed = t.up();
    changed.ok();
    let out = changed.all();
    assert!(out.contains("reusing base-"), "{out}");
    // A new app digest: built now, or reused from an earlier run (layers are cached by digest
    // across runs, and this edit is the same every run).
    let app = |run: &common::Run| {
        run.stdout
            .split(": app ")
            .nth(1)
            .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("no app digest in {}", run.stdout))
    };
    assert_ne!(app(&changed), app(&first), "{out}");
    assert!(
        out.contains("build app layer") || out.contains("reusing app-"),
        "{out}"
    );
    assert!(out.contains("replaced"), "{out}");
    // The app layer was built again, from the cache.
    assert!(out.contains("build app layer"), "{out}");
    assert!(out.contains("Hello, world!"), "{out}");
    assert!(
        apt_downloads(&changed).is_empty(),
        "the second build downloaded: {:?}",
        apt_downloads(&changed)
    );
    assert_eq!(hello_debs(), cached);
    assert_eq!(
        std::fs::metadata(&cached[0]).unwrap().modified().unwrap(),
        cached_at,
        "nothing rewritten"
    );
    let (_, body) = common::http_get_retry(t.port, "/", 60);
    assert!(body.contains("<h1>changed</h1>"), "{body}");
    assert!(t.journals().is_empty(), "{:?}", t.journals());
    assert!(t.cache_disks().is_empty(), "{:?}", t.cache_disks());
}

#[test]
fn a_provisioning_failure_leaves_no_qemu_process_or_overlay() {
    let t = QemuProject::new(r#", "echo failing on purpose >&2; exit 3""#);
    let run = t.up();
    assert_ne!(run.code, 0, "{}", run.all());
    let out = run.all();
    assert!(out.contains("exit code 3"), "{out}");
    assert!(out.contains("failing on purpose"), "{out}");
    assert!(t.qemu_processes().is_empty(), "{:?}", t.qemu_processes());
    assert!(
        t.tmp_overlays(&out).is_empty(),
        "{:?}",
        t.tmp_overlays(&out)
    );
    assert!(t.journals().is_empty(), "{:?}", t.journals());
    assert!(t.cache_disks().is_empty(), "{:?}", t.cache_disks());
}

#[test]
fn sigint_during_a_qemu_build_cleans_up() {
    let t = QemuProject::new(r#", "echo provisioning-started; sleep 600""#);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pipe"))
        .current_dir(t.p.path())
        .args(["up", "--no-progress"])
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(child);
    // Wait until the app layer's build VM runs its provisioner (output on either stream).
    let (tx, rx) = std::sync::mpsc::channel();
    for pipe in [
        Box::new(child.0.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.0.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut seen = String::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) => {
                seen.push_str(&l);
                seen.push('\n');
                if l.contains("provisioning-started") {
                    break;
                }
            }
            Err(_) => assert!(Instant::now() < deadline, "never started:\n{seen}"),
        }
    }
    assert_eq!(t.qemu_processes().len(), 1, "the build VM runs");
    // SAFETY: signalling the child we started.
    unsafe {
        libc::kill(child.0.id() as i32, libc::SIGINT);
    }
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "pipe did not stop"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!status.success());
    assert!(t.qemu_processes().is_empty(), "{:?}", t.qemu_processes());
    assert!(
        t.tmp_overlays(&seen).is_empty(),
        "{:?}",
        t.tmp_overlays(&seen)
    );
    assert!(t.journals().is_empty(), "{:?}", t.journals());
    assert!(t.cache_disks().is_empty(), "{:?}", t.cache_disks());
}

#[test]
fn bake_makes_a_standalone_compressed_bootable_artifact() {
    let t = QemuProject::new("");
    let pf = pipe::config::load(&t.p.path().join("Pipelinefile.toml"), t.p.path()).unwrap();
    let sel = pipe::plan::Selection {
        env: Some("dev".into()),
        ..Default::default()
    };
    let printer = support::quiet_printer();
    let plan = pipe::plan::make(&pf, &sel, &printer).unwrap();
    // Baked through the target interface, as `pipe bake` does.
    let target = pipe::targets::open(pipe::config::TargetKind::Qemu, &pf).unwrap();
    let journal =
        pipe::runner::Journal::start(&t.p.path().join(".pipe"), "bake", &t.p.name).unwrap();
    let mut runner = pipe::runner::Runner::new(journal, &printer);
    let result =
        pipe::targets::layers::bake(&mut runner, &*target, &plan, false, false, None, &printer);
    let baked = runner.finish(result).unwrap_or_else(|e| panic!("{e}"));
    let artifact_path = PathBuf::from(&baked.artifacts.ids["qemu"]);
    let boot = pipe::targets::qemu::bake::artifact_boot(&artifact_path)
        .expect("the artifact says how it boots");
    let accel = pipe::targets::qemu::accel::choose("auto").unwrap().accel;
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            for ext in ["qcow2", "vmlinuz", "initrd.img", "json"] {
                let _ = std::fs::remove_file(self.0.with_extension(ext));
            }
        }
    }
    let _artifact = Remove(artifact_path.clone());
    assert!(
        baked.verify.as_ref().is_some_and(|v| v.ok),
        "{:?}",
        baked.verify
    );
    assert_eq!(
        pipe::targets::qemu::disk::backing_file(&artifact_path).unwrap(),
        None,
        "the backing chain is flattened"
    );
    assert!(t.journals().is_empty(), "{:?}", t.journals());
    assert!(t.qemu_processes().is_empty(), "{:?}", t.qemu_processes());

    // The kernel and initrd it was verified with are kept next to it, not taken from the box
    // (which may be rebuilt or removed before the release is promoted).
    let Boot::Kernel { kernel, initrd } = &boot else {
        panic!("a recipe box's artifact boots its kernel: {boot:?}")
    };
    assert_eq!(kernel, &artifact_path.with_extension("vmlinuz"));
    assert_eq!(initrd, &artifact_path.with_extension("initrd.img"));

    // It boots on its own (copies elsewhere, so nothing can lean on the layer or box files).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("artifact.qcow2");
    std::fs::copy(&artifact_path, &copy).unwrap();
    let boot = Boot::Kernel {
        kernel: dir.path().join("vmlinuz"),
        initrd: dir.path().join("initrd.img"),
    };
    std::fs::copy(kernel, dir.path().join("vmlinuz")).unwrap();
    std::fs::copy(initrd, dir.path().join("initrd.img")).unwrap();
    let spec = VmSpec {
        name: "pipe-test-artifact".into(),
        dir: dir.path().join("vm"),
        disk: copy,
        boot,
        cpus: 2,
        memory: 1024,
        accel,
        forwards: Vec::new(),
        package_cache: None,
    };
    let booted = TestVm {
        vm: vm::start(&spec).unwrap(),
        _dir: dir,
    };
    let (comm, _) = booted.vm.wait_for_ssh(Duration::from_secs(300)).unwrap();
    let mut out = Collect::default();
    assert_eq!(
        comm.exec(
            &ExecRequest::shell("cat /srv/www/index.html /base.txt"),
            &mut out
        )
        .unwrap(),
        0
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "<h1>page</h1>\nhello from dev\nbase-layer\n"
    );
}

/// The `data` of the `--json` result line of a run.
fn json_result(run: &common::Run) -> serde_json::Value {
    run.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("data").cloned())
        .unwrap_or_else(|| panic!("no result in:\n{}", run.all()))
}

#[test]
fn pipe_bake_records_a_verified_qemu_release() {
    // Its own app layer, so its artifact is not another test's.
    let t = QemuProject::new(r#", "echo baked-by-the-cli > /srv/www/cli.txt""#);
    struct Remove(Option<PathBuf>);
    impl Drop for Remove {
        fn drop(&mut self) {
            if let Some(p) = &self.0 {
                for ext in ["qcow2", "vmlinuz", "initrd.img", "json"] {
                    let _ = std::fs::remove_file(p.with_extension(ext));
                }
            }
        }
    }
    let mut artifact = Remove(None);

    // Ctrl-C while the verify VM runs: exit 130, no VM, overlay, artifact, journal or release.
    let mut child = common::spawn_pipe(
        t.p.path(),
        &["bake", "--env", "dev", "--no-progress"],
        &[("PIPE_TEST_PAUSE_AT", "verify machine started")],
    );
    child.wait_for("test hook: paused at", 1200);
    assert_eq!(t.qemu_processes().len(), 1, "the verify VM runs");
    child.signal(libc::SIGINT);
    let (code, stderr) = child.finish();
    assert_eq!(code, 130, "{stderr}");
    assert!(t.qemu_processes().is_empty(), "{:?}", t.qemu_processes());
    assert!(t.journals().is_empty(), "{:?}", t.journals());
    let left: Vec<_> = std::fs::read_dir(t.p.path().join(".pipe/qemu"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let releases = t.p.pipe(&["--json", "releases"]);
    releases.ok();
    assert_eq!(json_result(&releases), serde_json::json!([]), "no release");

    let bake = t.p.pipe(&["bake", "--env", "dev", "--no-progress"]);
    bake.ok();
    assert!(
        bake.stdout.contains("(env dev, qemu): verified"),
        "{}",
        bake.all()
    );
    let releases = t.p.pipe(&["--json", "releases"]);
    releases.ok();
    let data = json_result(&releases);
    let r = &data[0];
    assert_eq!(r["target"], "qemu", "{data}");
    assert_eq!(r["status"], "verified", "{data}");
    let path = PathBuf::from(r["artifacts"]["qemu"].as_str().expect("a qemu artifact"));
    artifact.0 = Some(path.clone());
    assert!(path.is_file(), "{}", path.display());
    assert!(
        t.p.pipe(&["releases"]).stdout.contains("qemu    verified"),
        "human listing"
    );
    // The release can be promoted (tests/qemu_promote.rs does it); its plan changes nothing.
    let promote = t.p.pipe(&["promote", "dev", "--plan"]);
    promote.ok();
    assert!(
        promote.stdout.contains("nothing was changed"),
        "{}",
        promote.all()
    );
    // `pipe verify` runs the checks again on a fresh VM booted from the artifact, and records it.
    let verify = t.p.pipe(&["verify", "--no-progress"]);
    verify.ok();
    assert!(
        verify.stdout.contains("verification passed"),
        "{}",
        verify.all()
    );
    let history = t.p.pipe(&["--json", "history"]);
    history.ok();
    assert!(
        history.stdout.contains("\"verify\""),
        "no verify event: {}",
        history.stdout
    );
    assert!(t.journals().is_empty(), "{:?}", t.journals());
    assert!(t.qemu_processes().is_empty(), "{:?}", t.qemu_processes());
}

/// A pipeline of its own (its layers are removed by `destroy --layers` while other tests
/// use theirs), with a machine disk bigger than the box's 4 GiB.
const LIFECYCLE: &str = "pipe-qemu-lifecycle";

fn exec_df_root(p: &common::Project) -> u64 {
    let df = p.pipe(&["exec", "--", "df", "-B1", "--output=size", "/"]);
    df.ok();
    df.stdout
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("df: {}", df.all()))
}

#[test]
fn exec_logs_ssh_provision_status_halt_up_and_destroy_a_qemu_machine() {
    let t = QemuProject::with_pipelinefile(|port| {
        pipelinefile(port, "")
            .replace(
                &format!("name = \"{PIPELINE}\""),
                &format!("name = \"{LIFECYCLE}\""),
            )
            .replace("memory = 1024\n", "memory = 1024\ndisk_size = \"6G\"\n")
    });
    t.up().ok();
    let name = format!("pipe-{LIFECYCLE}-dev");
    let dir = t.p.path().join(".pipe/qemu").join(&name);

    // disk_size: the root file system was grown at boot to (nearly) the whole 6 GiB disk.
    let size = exec_df_root(&t.p);
    assert!(
        size > 5 << 30,
        "root file system of {size} bytes on a 6G disk"
    );

    // The box leaves /etc/hostname empty (the name comes from the kernel command line).
    let exec = t.p.pipe(&["exec", "--", "cat", "/etc/hostname"]);
    exec.ok();
    let exec =
        t.p.pipe(&["exec", "--", "cat", "/proc/sys/kernel/hostname"]);
    exec.ok();
    assert_eq!(exec.stdout.trim(), name, "{}", exec.all());
    let code =
        t.p.pipe(&["exec", "--", "sh", "-c", "echo to-stderr >&2; exit 7"]);
    assert_eq!(code.code, 7, "{}", code.all());
    assert!(code.stderr.contains("to-stderr"), "{}", code.all());

    let logs = t.p.pipe(&["logs", "web", "-n", "20"]);
    logs.ok();
    assert!(logs.stdout.contains("pipe-web.service"), "{}", logs.all());

    // The system ssh client gets in with the machine's key, port and known_hosts (no TTY
    // here, so the login shell reads the closed stdin and ends).
    let ssh = t.p.pipe(&["ssh"]);
    assert_eq!(ssh.code, 0, "{}", ssh.all());

    let status = t.p.pipe(&["--json", "status"]);
    status.ok();
    let rows = json_result(&status)["machines"].clone();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["target"] == "qemu")
        .unwrap_or_else(|| panic!("no qemu machine in {rows}"));
    assert_eq!(row["machine"], name.as_str(), "{rows}");
    assert_eq!(row["state"], "running", "{rows}");
    assert_eq!(row["up_to_date"], true, "{rows}");
    let human = t.p.pipe(&["status"]);
    assert!(
        human.stdout.contains(&name) && human.stdout.contains("running"),
        "{}",
        human.all()
    );

    t.p.pipe(&["exec", "--", "touch", "/root/kept"]).ok();
    t.p.pipe(&["halt"]).ok();
    assert!(t.qemu_processes().is_empty(), "{:?}", t.qemu_processes());
    assert!(dir.join("disk.qcow2").is_file(), "halt keeps the disk");
    let stopped = t.p.pipe(&["status"]);
    assert!(stopped.stdout.contains("stopped"), "{}", stopped.all());
    let refused = t.p.pipe(&["exec", "--", "true"]);
    assert_ne!(refused.code, 0);
    assert!(refused.all().contains("is stopped"), "{}", refused.all());
    let refused = t.p.pipe(&["provision"]);
    assert_ne!(refused.code, 0);
    assert!(refused.all().contains("is stopped"), "{}", refused.all());

    // up after halt boots the same disk again: what was written there is still there.
    let again = t.up();
    again.ok();
    assert!(again.all().contains("started"), "{}", again.all());
    t.p.pipe(&["exec", "--", "test", "-f", "/root/kept"]).ok();
    let (status, body) = common::http_get_retry(t.port, "/", 60);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<h1>page</h1>"), "{body}");
    // up --watch over SSH (the machine is up to date, so up does nothing): the edit reaches
    // the VM, the inline provisioner after it runs again, its units restart, status says so,
    // and Ctrl-C leaves it running.
    let mut w = common::spawn_pipe(t.p.path(), &["up", "--watch", "--no-progress"], &[]);
    w.wait_for("watching", 300);
    t.p.write("www/index.html", "<h1>watched page</h1>\n");
    w.wait_for("synced", 120);
    let (_, body) = common::http_get_retry(t.port, "/", 60);
    assert!(
        body.contains("watched page") && body.contains("hello from dev"),
        "{body}"
    );
    let watched = t.p.pipe(&["status"]);
    assert!(
        watched.stdout.contains("changed by watch"),
        "{}",
        watched.all()
    );
    w.signal(libc::SIGINT);
    let (code, stderr) = w.finish();
    assert_eq!(code, 0, "{stderr}");
    t.p.pipe(&["exec", "--", "true"]).ok();

    // provision: the app provisioners run again in the running VM, services restart.
    let pid = std::fs::read_to_string(dir.join("qemu.pid")).unwrap();
    t.p.write("www/index.html", "<h1>edited page</h1>\n");
    let provision = t.p.pipe(&["provision", "--no-progress"]);
    provision.ok();
    assert!(
        provision.all().contains("re-provisioned"),
        "{}",
        provision.all()
    );
    let (_, body) = common::http_get_retry(t.port, "/", 60);
    assert!(body.contains("edited page"), "{body}");
    assert_eq!(
        std::fs::read_to_string(dir.join("qemu.pid")).unwrap(),
        pid,
        "provision keeps the VM"
    );
    t.p.pipe(&["exec", "--", "test", "-f", "/root/kept"]).ok();

    assert!(t.journals().is_empty(), "{:?}", t.journals());

    let layers_dir = pipe::targets::qemu::disk::layers_dir(LIFECYCLE);
    let layers = || -> Vec<String> {
        std::fs::read_dir(&layers_dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".qcow2"))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(layers().len() >= 2, "{:?}", layers());
    let destroy = t.p.pipe(&["destroy", "--layers"]);
    destroy.ok();
    assert!(destroy.stdout.contains(&name), "{}", destroy.all());
    assert!(destroy.stdout.contains(" layer(s)"), "{}", destroy.all());
    assert!(layers().is_empty(), "{:?}", layers());
    assert!(!dir.exists(), "the machine's folder and overlay are gone");
    assert!(t.qemu_processes().is_empty(), "{:?}", t.qemu_processes());
    let none = t.p.pipe(&["status"]);
    assert!(none.stdout.contains("no machines"), "{}", none.all());
    assert!(t.journals().is_empty(), "{:?}", t.journals());
}
