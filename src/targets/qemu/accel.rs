//! Which accelerator a VM runs on. `auto` uses KVM only when it demonstrably works: /dev/kvm
//! can exist and still be unusable (nested virtualisation without support, a broken host),
//! where QEMU then crashes or hangs. So pipe boots a 512-byte guest under KVM, bounded by a
//! short timeout: the guest writes to QEMU's `isa-debug-exit` port, and only that exit code
//! proves that the firmware and the guest both ran on KVM. Anything else means TCG.
//!
//! `PIPE_QEMU_ACCEL=kvm|tcg|auto` overrides the Pipelinefile's `accel` (CI machines whose
//! KVM is known to be broken set `tcg` and skip the probe).
//!
//! A probe that hangs costs its whole timeout, and every `pipe` command that starts a VM would
//! pay it again. So the probe's verdict is kept for the running kernel in
//! `$XDG_CACHE_HOME/pipe/qemu/kvm-probe.json`, keyed by the boot id and the QEMU binary and
//! `/dev/kvm` it was taken with: a reboot, a QEMU upgrade or a reloaded KVM module probes again,
//! and so does deleting the file. The cheap checks (no `/dev/kvm`, no permission) are never
//! cached.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Overrides the Pipelinefile's accel setting.
pub const ACCEL_ENV: &str = "PIPE_QEMU_ACCEL";
/// How long the KVM probe may take before it counts as a hang.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// `isa-debug-exit` turns the byte written into exit code `(v << 1) | 1`.
const PROBE_BYTE: u8 = 0x31;

/// The accelerator a VM uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// QEMU arguments: the accelerator and the matching CPU model.
    pub fn args(self) -> Vec<String> {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => ["-accel", "tcg,thread=multi", "-cpu", "max"],
        }
        .map(String::from)
        .to_vec()
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of probing, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub accel: Accel,
    /// Said to the user: `kvm (probe passed)`, `tcg (KVM probe timed out)`, ...
    pub reason: String,
}

/// Resolves `setting` (`auto`, `kvm`, `tcg`; the environment variable wins).
pub fn choose(setting: &str) -> Result<Choice> {
    let env = std::env::var(ACCEL_ENV).ok().filter(|v| !v.is_empty());
    let (asked, from) = match &env {
        Some(v) => (v.as_str(), format!("{ACCEL_ENV}={v}")),
        None => (setting, format!("accel = \"{setting}\"")),
    };
    match asked {
        "tcg" => Ok(Choice {
            accel: Accel::Tcg,
            reason: from,
        }),
        "kvm" => match probe_once() {
            Ok(()) => Ok(Choice {
                accel: Accel::Kvm,
                reason: from,
            }),
            Err(why) => Err(Error::runtime(
                format!("{from} asks for KVM, but KVM does not work here: {why}"),
                Some("use accel = \"auto\" (falls back to TCG) or \"tcg\"".into()),
            )),
        },
        "auto" => Ok(match probe_once() {
            Ok(()) => Choice {
                accel: Accel::Kvm,
                reason: "auto: the KVM probe passed".into(),
            },
            Err(why) => Choice {
                accel: Accel::Tcg,
                reason: format!("auto: {why}; using TCG (slower)"),
            },
        }),
        other => Err(Error::usage(
            format!("unknown qemu accel `{other}` ({from})"),
            Some("use auto, kvm or tcg".into()),
        )),
    }
}

/// Probes once per process, and once per boot when the verdict can be kept (module docs).
fn probe_once() -> std::result::Result<(), String> {
    static RESULT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    RESULT
        .get_or_init(|| probe_kvm_cached(&crate::boxes::cache_dir().join("qemu/kvm-probe.json")))
        .clone()
}

/// A kept verdict: what it was taken with, and what it said.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Verdict {
    key: String,
    ok: bool,
    why: String,
}

/// What a verdict holds for: this boot, this QEMU binary, this `/dev/kvm`. None when any of
/// them cannot be read (then nothing is kept).
fn probe_key() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let qemu = crate::process::which(super::QEMU)?;
    let q = std::fs::metadata(&qemu).ok()?;
    let k = std::fs::metadata("/dev/kvm").ok()?;
    Some(format!(
        "boot {} qemu {} {}:{} kvm {:x}:{:x}",
        boot.trim(),
        qemu.display(),
        q.len(),
        q.mtime(),
        k.rdev(),
        k.ctime()
    ))
}

/// Whether KVM works: the cheap checks, then the probe guest's verdict, kept in `file` for as
/// long as [`probe_key`] is unchanged.
fn probe_kvm_cached(file: &Path) -> std::result::Result<(), String> {
    precheck()?;
    kept_or(file, probe_key(), boot_probe)
}

/// The verdict kept in `file` under `key`, else `probe`'s, kept there when there is a key.
fn kept_or(
    file: &Path,
    key: Option<String>,
    probe: impl FnOnce() -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    let kept = key.as_ref().and_then(|key| {
        let v: Verdict = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
        (&v.key == key).then_some(v)
    });
    if let Some(v) = kept {
        return if v.ok {
            Ok(())
        } else {
            Err(format!(
                "{} (kept for this boot in {}; delete it to probe again)",
                v.why,
                file.display()
            ))
        };
    }
    let res = probe();
    if let Some(key) = key {
        let v = Verdict {
            key,
            ok: res.is_ok(),
            why: res.clone().err().unwrap_or_default(),
        };
        // Best effort: a verdict that cannot be kept only costs the next command a probe.
        if let Ok(bytes) = serde_json::to_vec(&v) {
            let _ = crate::state::write_atomic(file, &bytes);
        }
    }
    res
}

/// What needs no guest: `/dev/kvm` exists and this user may open it.
fn precheck() -> std::result::Result<(), String> {
    let kvm = Path::new("/dev/kvm");
    if !kvm.exists() {
        return Err("no /dev/kvm".into());
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(kvm) {
        return Err(format!("/dev/kvm: {e}"));
    }
    Ok(())
}

/// Boots the probe guest under KVM; Ok only if it reached its `out` instruction.
fn boot_probe() -> std::result::Result<(), String> {
    let dir = tempfile_dir().map_err(|e| format!("probe folder: {e}"))?;
    let image = dir.join("probe.img");
    std::fs::write(&image, boot_sector()).map_err(|e| format!("probe image: {e}"))?;
    let res = run_probe(&image);
    let _ = std::fs::remove_dir_all(&dir);
    res
}

fn run_probe(image: &Path) -> std::result::Result<(), String> {
    let mut cmd = Command::new(super::QEMU);
    // The same accelerator, CPU model and machine type as real VMs: KVM can run one CPU
    // model and crash on another (a nested host refusing `-cpu host`'s MSRs).
    cmd.args(Accel::Kvm.args())
        .args([
            "-machine",
            super::MACHINE,
            "-m",
            "32",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-drive",
        ])
        .arg(format!("file={},format=raw,if=ide", image.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = crate::process::spawn(&mut cmd).map_err(|e| e.to_string())?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let expected = i32::from(PROBE_BYTE) << 1 | 1;
                if status.code() == Some(expected) {
                    return Ok(());
                }
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                let first = err.lines().next().unwrap_or("").trim().to_string();
                return Err(format!("the KVM probe failed ({status}) {first}"));
            }
            Ok(None) if started.elapsed() > PROBE_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the KVM probe hung for {}s",
                    PROBE_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("waiting for the KVM probe: {e}")),
        }
    }
}

/// A boot sector: `mov al, PROBE_BYTE; out 0xf4, al; hlt; jmp $-1`.
fn boot_sector() -> Vec<u8> {
    let mut s = vec![0u8; 512];
    let code = [0xB0, PROBE_BYTE, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD];
    s[..code.len()].copy_from_slice(&code);
    s[510] = 0x55;
    s[511] = 0xAA;
    s
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("pipe-kvm-probe-{}-{nanos:x}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_sector_is_bootable() {
        let s = boot_sector();
        assert_eq!(s.len(), 512);
        assert_eq!(&s[510..], &[0x55, 0xAA]);
    }

    #[test]
    fn a_verdict_is_kept_under_its_key_and_probed_again_when_the_key_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("qemu/kvm-probe.json");
        let probes = std::cell::Cell::new(0);
        let hang = || {
            probes.set(probes.get() + 1);
            Err("the KVM probe hung for 10s".to_string())
        };
        let first = kept_or(&file, Some("boot a".into()), hang).unwrap_err();
        assert_eq!(first, "the KVM probe hung for 10s");
        let again = kept_or(&file, Some("boot a".into()), hang).unwrap_err();
        assert_eq!(probes.get(), 1, "the kept verdict is used");
        assert!(
            again.starts_with("the KVM probe hung for 10s (kept for this boot in "),
            "{again}"
        );
        assert!(
            again.contains("kvm-probe.json; delete it to probe again"),
            "{again}"
        );

        // Another boot (or QEMU, or /dev/kvm) probes again, and keeps what it finds.
        let works = || {
            probes.set(probes.get() + 1);
            Ok(())
        };
        assert_eq!(kept_or(&file, Some("boot b".into()), works), Ok(()));
        assert_eq!(kept_or(&file, Some("boot b".into()), hang), Ok(()));
        assert_eq!(probes.get(), 2);

        // Without a key nothing is read or kept.
        assert!(kept_or(&file, None, hang).is_err());
        assert!(kept_or(&file, None, hang).is_err());
        assert_eq!(probes.get(), 4);
        let v: Verdict = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!((v.key.as_str(), v.ok), ("boot b", true));

        // A file that is not a verdict is probed over.
        std::fs::write(&file, "garbage").unwrap();
        assert_eq!(kept_or(&file, Some("boot b".into()), works), Ok(()));
        assert_eq!(probes.get(), 5);
    }

    #[test]
    fn tcg_needs_no_probe() {
        if std::env::var_os(ACCEL_ENV).is_none() {
            assert_eq!(choose("tcg").unwrap().accel, Accel::Tcg);
            assert!(choose("fast").is_err());
        }
    }
}
