//! The qemu target against real VMs (TCG when KVM does not work, as on CI): the box, the
//! communicator suite over SSH to a VM, layers and machines through the `pipe` binary, and
//! cleanup after failures and Ctrl-C. One box is built and shared by every test (and every
//! later run: its recipe digest names it in the cache).

#[path = "support/communicator_suite.rs"]
mod suite;
#[path = "support/docker_box.rs"]
mod support;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use pipe::boxes::qemu::{QemuBox, build_qemu_box};
use pipe::communicators::{Collect, Communicator, ExecRequest};
use pipe::targets::qemu::accel::{self, Accel};
use pipe::targets::qemu::vm::{self, Vm, VmSpec};

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
        kernel: b.kernel.clone(),
        initrd: b.initrd.clone(),
        cpus: 2,
        memory: 1024,
        accel: accel(),
        forwards: Vec::new(),
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
fn the_accelerator_is_chosen_and_explained() {
    let c = accel::choose("auto").unwrap();
    assert!(!c.reason.is_empty());
    eprintln!("accel: {} ({})", c.accel, c.reason);
    assert_eq!(accel::choose("tcg").unwrap().accel, Accel::Tcg);
}
