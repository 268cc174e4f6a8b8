//! One QEMU process: started detached (`-daemonize`, pid file), booting a qcow2 overlay, user-mode
//! networking with host forwards on 127.0.0.1 only, a QMP socket, and the serial console
//! appended to `console.log` in the VM's folder.
//!
//! Two ways to boot ([`Boot`]), one per kind of box, and with each its way to hand the VM the
//! per-machine login key:
//!
//! - recipe boxes: direct kernel boot of the box's kernel and initrd; the key travels on the
//!   kernel command line and the box's own unit puts it in `/run` (see [`crate::boxes::qemu`]).
//! - cloud images: SeaBIOS runs the image's own bootloader; the key travels in a NoCloud seed
//!   (a small FAT file system labelled `cidata`, see [`write_seed`]) that pipe writes into the
//!   VM's folder at every start and attaches as a second drive. The `instance-id` is made once
//!   per VM folder: a new machine (or build VM) is a new instance to cloud-init (new SSH host
//!   keys, this VM's key), and a halted machine booted again is the same instance rebooting.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::accel::Accel;
use crate::boxes::qemu::{KEY_PARAM, ROOT_LABEL};
use crate::communicators::ssh::known_hosts::base64;
use crate::communicators::ssh::{HostKeyPolicy, SshComm, SshSettings};
use crate::engine::qemu::{Qmp, wait_gone};
pub use crate::engine::qemu::{pidfile, qemu_alive, qmp_socket, read_pid, status, stop};
use crate::error::{Error, Result};
use crate::process;

pub use super::MACHINE;

pub use crate::boxes::qemu::Boot;
pub use crate::targets::guest::wait_for_cloud_init;

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Shown by `ps` and used as the guest's host name.
    pub name: String,
    /// The VM's folder: console.log, qemu.pid, qmp.sock, the login key, known_hosts, the seed.
    pub dir: PathBuf,
    pub disk: PathBuf,
    pub boot: Boot,
    pub cpus: u32,
    /// MiB.
    pub memory: u32,
    pub accel: Accel,
    /// (host port on 127.0.0.1, guest port), besides SSH.
    pub forwards: Vec<(u16, u16)>,
    /// A build machine's package cache disk (see [`super::package_cache`]).
    pub package_cache: Option<PathBuf>,
}

/// A started VM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Vm {
    pub pid: i32,
    pub dir: PathBuf,
    pub ssh_port: u16,
    pub accel: Accel,
}

/// Files in a VM folder.
pub fn console_log(dir: &Path) -> PathBuf {
    dir.join("console.log")
}

fn key_path(dir: &Path) -> PathBuf {
    dir.join("id_ed25519")
}

/// The NoCloud seed of a VM booted from its disk.
pub fn seed_path(dir: &Path) -> PathBuf {
    dir.join("seed.img")
}

/// The public login key line of a VM folder, once [`start`] made it.
pub fn public_key(dir: &Path) -> Option<String> {
    std::fs::read_to_string(key_path(dir).with_extension("pub"))
        .ok()
        .map(|k| k.trim().to_string())
}

impl Vm {
    pub fn pidfile(&self) -> PathBuf {
        pidfile(&self.dir)
    }

    pub fn console(&self) -> PathBuf {
        console_log(&self.dir)
    }

    pub fn running(&self) -> bool {
        qemu_alive(self.pid)
    }

    /// An SSH communicator for root on the VM (accept-new into the VM's own known_hosts, as
    /// each machine makes its host keys at first boot).
    pub fn ssh(&self, ssh_timeout: Duration) -> SshComm {
        let mut s = SshSettings::new("127.0.0.1", "root", key_path(&self.dir));
        s.port = self.ssh_port;
        s.host_key = HostKeyPolicy::AcceptNew;
        s.known_hosts = self.dir.join("known_hosts");
        s.ssh_timeout = ssh_timeout;
        SshComm::new(s)
    }

    /// Waits until SSH answers (the VM is booted), failing early if QEMU dies; the error
    /// carries the end of the console log. Returns the connected communicator.
    pub fn wait_for_ssh(&self, timeout: Duration) -> Result<(SshComm, Duration)> {
        self.wait_for_ssh_with(timeout, true)
    }

    /// [`Self::wait_for_ssh`]; with `interruptible` false the wait and the communicator go on
    /// after Ctrl-C (only an abandoned cleanup stops them), for a boot that is itself cleanup.
    pub fn wait_for_ssh_with(
        &self,
        timeout: Duration,
        interruptible: bool,
    ) -> Result<(SshComm, Duration)> {
        let started = Instant::now();
        let _ = std::fs::remove_file(self.dir.join("known_hosts"));
        loop {
            // Short attempts, so a dead QEMU is noticed between them.
            let mut comm = self.ssh(Duration::from_secs(10));
            if !interruptible {
                comm = comm.uninterruptible();
            }
            if comm.stopping() {
                return Err(Error::Interrupted);
            }
            if !self.running() {
                return Err(self.boot_error("QEMU exited while the machine was booting"));
            }
            match comm.connect() {
                Ok(()) => {
                    let took = started.elapsed();
                    // Later reconnects get the full patience.
                    comm.set_ssh_timeout(timeout);
                    return Ok((comm, took));
                }
                Err(crate::communicators::ExecError::Interrupted) => {
                    return Err(Error::Interrupted);
                }
                Err(e) if started.elapsed() >= timeout => {
                    return Err(
                        self.boot_error(&format!("no SSH within {}s: {e}", timeout.as_secs()))
                    );
                }
                Err(_) => {}
            }
        }
    }

    /// An error naming the VM with the last lines of its console.
    pub fn boot_error(&self, what: &str) -> Error {
        Error::runtime(
            format!(
                "{what}\n---- last lines of the serial console ({}) ----\n{}\n----",
                self.console().display(),
                console_tail(&self.console(), 30)
            ),
            Some(format!(
                "the whole boot log is in {}",
                self.console().display()
            )),
        )
    }

    /// Shuts the guest down cleanly (ACPI power button), then makes sure QEMU is gone.
    pub fn shutdown(
        &self,
        grace: Duration,
    ) -> std::result::Result<(), crate::engine::qemu::StuckError> {
        if self.running() {
            if let Ok(mut q) = Qmp::connect(&qmp_socket(&self.dir), Duration::from_secs(5)) {
                let _ = q.powerdown();
            }
            wait_gone(self.pid, grace);
        }
        stop(&self.dir, Duration::from_secs(5))
    }
}

/// Starts QEMU for `spec` (retrying with another SSH port if the one picked was taken).
pub fn start(spec: &VmSpec) -> Result<Vm> {
    std::fs::create_dir_all(&spec.dir).map_err(|e| {
        Error::runtime(format!("creating {}: {e}", spec.dir.display()), None).caused_by(e)
    })?;
    let pubkey = ensure_key(&spec.dir)?;
    if spec.boot == Boot::Disk {
        write_seed(&spec.dir, &hostname(&spec.name), &pubkey)?;
    }
    let mut last = String::new();
    for _ in 0..3 {
        let ssh_port = free_port()?;
        match launch(spec, ssh_port, &pubkey) {
            Ok(pid) => {
                return Ok(Vm {
                    pid,
                    dir: spec.dir.clone(),
                    ssh_port,
                    accel: spec.accel,
                });
            }
            Err(e) if e.contains("host forwarding") => last = e,
            Err(e) => {
                return Err(Error::runtime(
                    format!("starting QEMU for {}: {e}", spec.name),
                    Some(
                        "check the qemu-system-x86 installation and the disk and kernel paths"
                            .into(),
                    ),
                ));
            }
        }
    }
    Err(Error::runtime(
        format!("starting QEMU for {}: {last}", spec.name),
        Some("a service port may already be in use on 127.0.0.1".into()),
    ))
}

fn launch(spec: &VmSpec, ssh_port: u16, pubkey: &str) -> std::result::Result<i32, String> {
    let pidfile = pidfile(&spec.dir);
    let qmp = qmp_socket(&spec.dir);
    let _ = std::fs::remove_file(&pidfile);
    let _ = std::fs::remove_file(&qmp);
    let mut net = format!("user,id=n0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22");
    for (host, guest) in &spec.forwards {
        net.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
    }
    let errfile = spec.dir.join("qemu.err");
    let err = std::fs::File::create(&errfile).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(super::QEMU);
    cmd.arg("-name")
        .arg(format!("{},process={}", spec.name, spec.name))
        .args(spec.accel.args())
        .args([
            "-machine",
            MACHINE,
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
        ])
        .args([
            "-smp",
            &spec.cpus.to_string(),
            "-m",
            &spec.memory.to_string(),
        ])
        .args(boot_args(spec, pubkey))
        .args(
            spec.package_cache
                .iter()
                .flat_map(|image| super::package_cache::drive_args(image)),
        )
        .args(["-netdev", &net, "-device", "virtio-net-pci,netdev=n0"])
        .args(["-device", "virtio-rng-pci"])
        .arg("-chardev")
        .arg(format!(
            "file,id=console,path={},append=on",
            console_log(&spec.dir).display()
        ))
        .args(["-serial", "chardev:console"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .arg("-pidfile")
        .arg(&pidfile)
        .arg("-daemonize")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    let status = process::status_of(&mut cmd).map_err(|e| e.to_string())?;
    let stderr = std::fs::read_to_string(&errfile).unwrap_or_default();
    if !status.success() {
        return Err(format!("{status}: {}", stderr.trim()));
    }
    read_pid(&pidfile).ok_or_else(|| format!("QEMU wrote no pid file: {}", stderr.trim()))
}

/// The guest's host name: the VM name with anything but letters and digits as `-`.
fn hostname(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect()
}

/// The disk(s) and how to boot them.
fn boot_args(spec: &VmSpec, pubkey: &str) -> Vec<OsString> {
    match &spec.boot {
        Boot::Kernel { kernel, initrd } => vec![
            "-kernel".into(),
            kernel.into(),
            "-initrd".into(),
            initrd.into(),
            "-append".into(),
            format!(
                "console=ttyS0,115200 root=LABEL={ROOT_LABEL} rw systemd.hostname={} {KEY_PARAM}={}",
                hostname(&spec.name),
                base64(pubkey.trim().as_bytes())
            )
            .into(),
            "-drive".into(),
            format!(
                "file={},if=virtio,format=qcow2,discard=unmap",
                spec.disk.display()
            )
            .into(),
        ],
        // The image's disk boots first; the seed is only read by cloud-init.
        Boot::Disk => vec![
            "-drive".into(),
            format!(
                "file={},if=none,id=disk0,format=qcow2,discard=unmap",
                spec.disk.display()
            )
            .into(),
            "-device".into(),
            "virtio-blk-pci,drive=disk0,bootindex=0".into(),
            "-drive".into(),
            format!(
                "file={},if=none,id=seed,format=raw,readonly=on",
                seed_path(&spec.dir).display()
            )
            .into(),
            "-device".into(),
            "virtio-blk-pci,drive=seed".into(),
        ],
    }
}

/// The cloud-init instance id of a VM folder, made on first use.
fn instance_id(dir: &Path) -> Result<String> {
    let path = dir.join("instance-id");
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_string());
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let id = format!("pipe-{nanos:x}");
    std::fs::write(&path, format!("{id}\n")).map_err(|e| {
        Error::runtime(format!("writing {}: {e}", path.display()), None).caused_by(e)
    })?;
    Ok(id)
}

/// Writes the NoCloud seed cloud-init reads at boot: a FAT file system labelled `cidata` with
/// `meta-data` (the folder's `instance-id`, so that per-instance modules such as SSH host key
/// generation run once per machine, and the host name) and `user-data` (root may log in with
/// this VM's key only; no passwords). Made with `mkfs.vfat` and `mcopy`, nothing mounted.
pub fn write_seed(dir: &Path, hostname: &str, pubkey: &str) -> Result<()> {
    for (tool, package) in [("mkfs.vfat", "dosfstools"), ("mcopy", "mtools")] {
        if !crate::boxes::rootfs::in_path(tool) {
            return Err(Error::runtime(
                format!(
                    "{tool} is not installed; it writes the cloud-init seed of cloud image machines"
                ),
                Some(format!("install it: apt-get install {package}")),
            ));
        }
    }
    let instance_id = instance_id(dir)?;
    let meta = format!("instance-id: {instance_id}\nlocal-hostname: {hostname}\n");
    let user = format!(
        "#cloud-config\n# Written by pipe for this machine.\ndisable_root: false\nssh_pwauth: false\nssh_authorized_keys:\n  - {}\n",
        pubkey.trim()
    );
    let staging = dir.join("seed.tmp");
    let _ = std::fs::remove_dir_all(&staging);
    let made = (|| -> std::result::Result<(), String> {
        std::fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
        std::fs::write(staging.join("meta-data"), meta).map_err(|e| e.to_string())?;
        std::fs::write(staging.join("user-data"), user).map_err(|e| e.to_string())?;
        let image = staging.join("seed.img");
        let tool = |cmd: &mut Command| -> std::result::Result<(), String> {
            process::run(cmd).map(|_| ()).map_err(|e| e.to_string())
        };
        tool(
            Command::new(sbin("mkfs.vfat"))
                .args(["-n", "CIDATA", "-C"])
                .arg(&image)
                .arg("1024"),
        )?;
        tool(
            Command::new("mcopy")
                .arg("-i")
                .arg(&image)
                .arg(staging.join("meta-data"))
                .arg(staging.join("user-data"))
                .arg("::"),
        )?;
        std::fs::rename(&image, seed_path(dir)).map_err(|e| e.to_string())
    })();
    let _ = std::fs::remove_dir_all(&staging);
    made.map_err(|e| {
        Error::runtime(
            format!("writing the cloud-init seed in {}: {e}", dir.display()),
            None,
        )
    })
}

/// A tool from /usr/sbin or /sbin when PATH lacks them (as for non-root users).
fn sbin(tool: &str) -> PathBuf {
    ["/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(tool))
}

/// A per-VM-folder ed25519 login key (made once); returns the public key line.
fn ensure_key(dir: &Path) -> Result<String> {
    let key = key_path(dir);
    let public = key.with_extension("pub");
    if !key.is_file() || !public.is_file() {
        crate::targets::guest::new_login_key(&key)?;
    }
    std::fs::read_to_string(&public).map_err(|e| {
        Error::runtime(format!("reading {}: {e}", public.display()), None).caused_by(e)
    })
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::runtime(format!("finding a free port: {e}"), None).caused_by(e))?;
    Ok(l.local_addr().map(|a| a.port()).unwrap_or(0))
}

/// The last `n` lines of a console log.
pub fn console_tail(path: &Path, n: usize) -> String {
    let data = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&data);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.trim_end_matches('\r'))
        .collect::<Vec<_>>()
        .join("\n")
}
