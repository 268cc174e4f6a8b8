//! The step every box kind shares: debootstrap a root filesystem from a recipe into a temporary
//! folder under the cache, and make it a clean, reproducible base (apt sources, no host files,
//! no caches). The docker box imports it as an image; the qemu box will make a disk of it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::mirror::{self, Mirrors};
use super::{BoxError, BoxTarget, Recipe, cache_dir, lock_file};
use crate::process::{self, ProcessError};
use crate::ui::{Printer, Verbosity};

/// Where the keyring apt uses for Debian lives, in the rootfs as on the host.
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Lines of a failed command shown in the error.
const TAIL_LINES: usize = 25;

/// A root filesystem in a temporary folder; dropping it unmounts anything left mounted inside
/// and removes it (also on errors and interrupts).
#[derive(Debug)]
pub struct Rootfs {
    path: PathBuf,
    name: String,
}

impl Rootfs {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the folder now, reporting failures (drop only ignores them).
    pub fn remove(self) -> Result<(), BoxError> {
        let res = remove_tree(&self.path).map_err(|source| BoxError::Io {
            name: self.name.clone(),
            step: format!("remove {}", self.path.display()),
            source,
        });
        std::mem::forget(self);
        res
    }
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        let _ = remove_tree(&self.path);
    }
}

/// Debootstraps `recipe` with the packages for `target` and applies the shared clean-up. The
/// caller adds what its kind needs and turns the folder into an artifact.
pub fn build_rootfs(
    recipe: &Recipe,
    target: BoxTarget,
    printer: &Printer,
) -> Result<Rootfs, BoxError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(BoxError::NotRoot);
    }
    if !in_path("debootstrap") {
        return Err(BoxError::MissingTool {
            tool: "debootstrap",
            package: "debootstrap",
        });
    }
    let mirrors = mirror::resolve(recipe)?;
    let io = |step: &str| {
        let name = recipe.name.clone();
        let step = step.to_string();
        move |source| BoxError::Io { name, step, source }
    };
    let tmp = cache_dir().join("tmp");
    std::fs::create_dir_all(&tmp).map_err(io("create the cache folder"))?;
    sweep_stale(&tmp);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let path = tmp.join(format!("rootfs-{}-{nanos:x}", std::process::id()));
    std::fs::create_dir(&path).map_err(io("create the rootfs folder"))?;
    let rootfs = Rootfs {
        path,
        name: recipe.name.clone(),
    };

    let packages = recipe.packages_for(target);
    let step = printer.step(format!(
        "box {}: debootstrap {} ({}, {} packages)",
        recipe.name,
        recipe.suite,
        recipe.variant,
        packages.len()
    ));
    // debootstrap's package cache is shared by builds of the same suite; one at a time.
    let debs = cache_dir().join("debootstrap").join(format!(
        "{}-{}",
        recipe.suite,
        super::recipe::debian_arch()
    ));
    std::fs::create_dir_all(&debs).map_err(io("create the package cache"))?;
    let _cache_lock =
        lock_file(&debs.with_extension("lock")).map_err(io("lock the package cache"))?;
    let mut cmd = Command::new("debootstrap");
    cmd.arg(format!("--variant={}", recipe.variant))
        .arg(format!("--components={}", recipe.components.join(",")))
        .arg(format!("--cache-dir={}", debs.display()));
    if !packages.is_empty() {
        cmd.arg(format!("--include={}", packages.join(",")));
    }
    cmd.arg(&recipe.suite).arg(rootfs.path()).arg(&mirrors.main);
    let res = run_streamed(cmd, recipe, "debootstrap", printer, &|l| step.set_detail(l));
    if let Err(BoxError::Command {
        name,
        step: s,
        source:
            ProcessError::Exited {
                command,
                status,
                label,
                mut text,
            },
    }) = res
    {
        // debootstrap's own log says which package failed; the terminal output often not.
        let log = rootfs.path().join("debootstrap/debootstrap.log");
        if let Ok(log) = std::fs::read_to_string(log) {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str("-- debootstrap.log --\n");
            text.push_str(&last_lines(&log, TAIL_LINES));
        }
        step.failed(None);
        return Err(BoxError::Command {
            name,
            step: s,
            source: ProcessError::Exited {
                command,
                status,
                label,
                text,
            },
        });
    }
    if let Err(e) = res {
        step.failed(None);
        return Err(e);
    }
    step.done(Some(format!("from {}", mirrors.main)));

    configure_common(rootfs.path(), recipe, &mirrors).map_err(io("configure the rootfs"))?;
    Ok(rootfs)
}

/// What every box gets, whatever its kind (see boxes/debian-12.toml).
fn configure_common(root: &Path, recipe: &Recipe, mirrors: &Mirrors) -> std::io::Result<()> {
    let signed_by = if root.join(KEYRING.trim_start_matches('/')).is_file() {
        format!("Signed-By: {KEYRING}\n")
    } else {
        String::new()
    };
    let components = recipe.components.join(" ");
    let suite = &recipe.suite;
    let mut sources = format!(
        "Types: deb\nURIs: {}\nSuites: {suite} {suite}-updates\nComponents: {components}\n{signed_by}",
        mirrors.main
    );
    if let Some(security) = &mirrors.security {
        sources.push_str(&format!(
            "\nTypes: deb\nURIs: {security}\nSuites: {suite}-security\nComponents: {components}\n{signed_by}"
        ));
    }
    std::fs::create_dir_all(root.join("etc/apt/sources.list.d"))?;
    std::fs::write(root.join("etc/apt/sources.list.d/debian.sources"), sources)?;
    remove_if_exists(&root.join("etc/apt/sources.list"))?;
    // Host files debootstrap copied in; the engine or the VM provides its own.
    for f in ["etc/hostname", "etc/resolv.conf"] {
        let p = root.join(f);
        remove_if_exists(&p)?;
        std::fs::write(&p, "")?;
    }
    // `apt-get clean` and the package lists: the next `apt-get update` fetches fresh ones.
    clear_dir(&root.join("var/cache/apt/archives"), |n| {
        n.ends_with(".deb")
    })?;
    clear_dir(&root.join("var/cache/apt/archives/partial"), |_| true)?;
    clear_dir(&root.join("var/cache/apt"), |n| n.ends_with(".bin"))?;
    clear_dir(&root.join("var/lib/apt/lists"), |n| {
        n != "lock" && n != "partial"
    })?;
    clear_dir(&root.join("var/lib/apt/lists/partial"), |_| true)?;
    Ok(())
}

/// Runs a command, streaming its lines to the printer at `-v` and to the spinner, and keeps its
/// last lines for the error. Ctrl-C kills it.
pub(crate) fn run_streamed(
    mut cmd: Command,
    recipe: &Recipe,
    step_name: &'static str,
    printer: &Printer,
    progress: &dyn Fn(&str),
) -> Result<(), BoxError> {
    let source = format!("box {}", recipe.name);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = process::spawn(&mut cmd).map_err(|source| BoxError::Command {
        name: recipe.name.clone(),
        step: step_name,
        source,
    })?;
    let (tx, rx) = mpsc::channel::<(&'static str, String)>();
    let mut readers = Vec::new();
    for (stream, pipe) in [
        (
            "stdout",
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ),
        (
            "stderr",
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ),
    ] {
        let Some(pipe) = pipe else { continue };
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send((stream, line)).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let verbose = printer.verbosity() >= Verbosity::Verbose;
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut interrupted = false;
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((stream, line)) => {
                if verbose {
                    printer.output(&source, stream, &line);
                }
                if let Some(msg) = line.strip_prefix("I: ") {
                    progress(msg);
                }
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if crate::interrupt::requested() && !interrupted {
            interrupted = true;
            // SAFETY: signalling our own child by its pid.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => {
                return Err(BoxError::Io {
                    name: recipe.name.clone(),
                    step: format!("wait for {step_name}"),
                    source,
                });
            }
        }
    };
    for r in readers {
        let _ = r.join();
    }
    for (stream, line) in rx.try_iter() {
        if verbose {
            printer.output(&source, stream, &line);
        }
        tail.push_back(line);
    }
    if interrupted || crate::interrupt::requested() {
        return Err(BoxError::Interrupted);
    }
    if !status.success() {
        let skip = tail.len().saturating_sub(TAIL_LINES);
        let output = tail.into_iter().skip(skip).collect::<Vec<_>>().join("\n");
        return Err(BoxError::Command {
            name: recipe.name.clone(),
            step: step_name,
            source: ProcessError::exited_with_output(&cmd, status, &output),
        });
    }
    Ok(())
}

/// Removes leftovers of builds whose process is gone (killed, or power lost).
fn sweep_stale(tmp: &Path) {
    let Ok(rd) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("rootfs-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if !process_alive(pid) {
            let _ = remove_tree(&e.path());
        }
    }
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Unmounts whatever is mounted under `path` (debootstrap mounts /proc and /sys, and binds
/// /dev in containers), then removes it. Refuses to remove while anything stays mounted, so a
/// bind-mounted host folder is never emptied.
fn remove_tree(path: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    for _ in 0..3 {
        let mounts = mounts_under(path);
        if mounts.is_empty() {
            return std::fs::remove_dir_all(path);
        }
        for m in mounts {
            let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: a valid NUL-terminated path; MNT_DETACH has no other preconditions.
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
    Err(std::io::Error::other(format!(
        "{} still has file systems mounted; unmount them and remove it",
        path.display()
    )))
}

/// Mount points at or below `path`, deepest first.
fn mounts_under(path: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .map(|m| PathBuf::from(unescape_mount(m)))
        .filter(|m| m.starts_with(path))
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    out.dedup();
    out
}

/// /proc/self/mounts escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn remove_if_exists(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes the files of `dir` (not sub-folders) whose names `remove` picks.
fn clear_dir(dir: &Path, remove: impl Fn(&str) -> bool) -> std::io::Result<()> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().is_ok_and(|t| !t.is_dir()) && remove(&name) {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub(crate) fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(tool).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape_mount(r"/a\040b/c"), "/a b/c");
        assert_eq!(unescape_mount("/plain"), "/plain");
    }

    #[test]
    fn removes_a_tree_without_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r");
        std::fs::create_dir_all(p.join("x/y")).unwrap();
        std::fs::write(p.join("x/y/z"), "z").unwrap();
        remove_tree(&p).unwrap();
        assert!(!p.exists());
        remove_tree(&p).unwrap();
    }
}
