//! What every communicator must do, as one function per behaviour. A test file runs each one
//! as its own `#[test]` against a live machine (docker exec now, SSH later):
//!
//! ```ignore
//! #[path = "support/communicator_suite.rs"]
//! mod suite;
//! #[test] fn exit_codes() { suite::exit_codes(&machine()) }
//! ```
//!
//! The machine must be a Debian-like system with coreutils, findutils and a `nobody` user; the
//! communicator's default user must be allowed to chown (root, or passwordless sudo).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pipe::communicators::{Collect, Communicator, ExecError, ExecRequest, UploadOptions};
use pipe::layers::tree::{self, EntryKind};

/// One check of the suite.
pub type Check = fn(&dyn Communicator);

/// Every suite function, by name, for a file that wants to loop instead.
pub const ALL: &[(&str, Check)] = &[
    ("exit_codes", exit_codes),
    ("missing_command_is_127", missing_command_is_127),
    (
        "stdout_and_stderr_are_separate",
        stdout_and_stderr_are_separate,
    ),
    ("large_output_on_both_streams", large_output_on_both_streams),
    ("env_values_pass_through", env_values_pass_through),
    ("workdir", workdir),
    ("user", user),
    ("stdin", stdin),
    ("large_stdin", large_stdin),
    ("timeout_kills_the_command", timeout_kills_the_command),
    (
        "upload_file_keeps_content_and_mode",
        upload_file_keeps_content_and_mode,
    ),
    ("upload_tree", upload_tree),
    ("upload_into_missing_parents", upload_into_missing_parents),
    ("upload_owner", upload_owner),
    ("upload_bytes", upload_bytes),
    ("download_file", download_file),
    ("download_tree_round_trip", download_tree_round_trip),
];

/// Runs `argv` and returns (exit code, stdout, stderr).
fn run(c: &dyn Communicator, req: ExecRequest) -> (i32, String, String) {
    let mut out = Collect::default();
    let code = c
        .exec(&req, &mut out)
        .unwrap_or_else(|e| panic!("{}: exec {:?}: {e}", c.describe(), req.argv));
    (
        code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sh(c: &dyn Communicator, script: &str) -> (i32, String, String) {
    run(c, ExecRequest::shell(script))
}

/// Runs a script that must succeed; returns its stdout.
fn sh_ok(c: &dyn Communicator, script: &str) -> String {
    let (code, out, err) = sh(c, script);
    assert_eq!(code, 0, "`{script}` failed: {err}");
    out
}

/// A path on the machine no other test uses (not created).
fn scratch(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "/tmp/pipe-suite-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn exit_codes(c: &dyn Communicator) {
    assert!(!c.describe().is_empty());
    assert_eq!(sh(c, "true").0, 0);
    assert_eq!(sh(c, "exit 3").0, 3);
    let (code, out, _) = run(
        c,
        ExecRequest {
            argv: vec!["printf".into(), "%s|".into(), "a b".into(), "'c'".into()],
            ..ExecRequest::default()
        },
    );
    assert_eq!(code, 0);
    assert_eq!(out, "a b|'c'|", "argv is passed without a shell");
}

pub fn missing_command_is_127(c: &dyn Communicator) {
    assert_eq!(sh(c, "no-such-command-pipe").0, 127);
    let (code, _, _) = run(
        c,
        ExecRequest {
            argv: vec!["no-such-command-pipe".into()],
            ..ExecRequest::default()
        },
    );
    assert_eq!(code, 127, "a missing executable exits 127, as in a shell");
}

pub fn stdout_and_stderr_are_separate(c: &dyn Communicator) {
    let (code, out, err) = sh(
        c,
        "for i in 1 2 3; do echo out$i; echo err$i >&2; done; printf tail",
    );
    assert_eq!(code, 0);
    assert_eq!(out, "out1\nout2\nout3\ntail");
    assert_eq!(err, "err1\nerr2\nerr3\n");
}

pub fn large_output_on_both_streams(c: &dyn Communicator) {
    const N: usize = 4 * 1024 * 1024;
    let mut sink = Collect::default();
    let script = format!("yes o | head -c {N} & yes e | head -c {N} >&2; wait");
    let code = c.exec(&ExecRequest::shell(script), &mut sink).unwrap();
    assert_eq!(code, 0);
    assert_eq!(sink.stdout.len(), N);
    assert_eq!(sink.stderr.len(), N);
    assert!(sink.stdout.chunks(2).all(|p| p == b"o\n"));
    assert!(sink.stderr.chunks(2).all(|p| p == b"e\n"));
}

pub fn env_values_pass_through(c: &dyn Communicator) {
    let tricky = "a b 'single' \"double\" $HOME `x` \\ ; *\nsecond line";
    let env = BTreeMap::from([
        ("PIPE_PLAIN".to_string(), "plain".to_string()),
        ("PIPE_TRICKY".to_string(), tricky.to_string()),
    ]);
    let (code, out, _) = run(
        c,
        ExecRequest {
            env,
            ..ExecRequest::shell(r#"printf '%s|%s' "$PIPE_PLAIN" "$PIPE_TRICKY""#)
        },
    );
    assert_eq!(code, 0);
    assert_eq!(out, format!("plain|{tricky}"));
}

pub fn workdir(c: &dyn Communicator) {
    let (code, out, _) = run(
        c,
        ExecRequest {
            workdir: Some("/usr/share".into()),
            ..ExecRequest::shell("pwd")
        },
    );
    assert_eq!(code, 0);
    assert_eq!(out, "/usr/share\n");
}

pub fn user(c: &dyn Communicator) {
    let (code, out, _) = run(
        c,
        ExecRequest {
            user: Some("nobody".into()),
            ..ExecRequest::shell("id -u; id -un")
        },
    );
    assert_eq!(code, 0);
    assert_eq!(out, "65534\nnobody\n");
}

pub fn stdin(c: &dyn Communicator) {
    let (code, out, _) = run(
        c,
        ExecRequest {
            argv: vec!["cat".into()],
            stdin: Some(b"hello\nworld\n".to_vec()),
            ..ExecRequest::default()
        },
    );
    assert_eq!(code, 0);
    assert_eq!(out, "hello\nworld\n");
    // No stdin: the command sees end of file at once rather than hanging.
    let (code, out, _) = run(
        c,
        ExecRequest {
            timeout: Some(Duration::from_secs(60)),
            ..ExecRequest::shell("cat; echo done")
        },
    );
    assert_eq!((code, out.as_str()), (0, "done\n"));
}

pub fn large_stdin(c: &dyn Communicator) {
    // Echoed back while it is written: neither side may wait for the other.
    let data: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut sink = Collect::default();
    let code = c
        .exec(
            &ExecRequest {
                argv: vec!["cat".into()],
                stdin: Some(data.clone()),
                ..ExecRequest::default()
            },
            &mut sink,
        )
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(sink.stdout.len(), data.len());
    assert!(sink.stdout == data);
}

pub fn timeout_kills_the_command(c: &dyn Communicator) {
    let started = Instant::now();
    let res = c.exec(
        &ExecRequest {
            timeout: Some(Duration::from_secs(2)),
            // A child in the background holds the output open too.
            ..ExecRequest::shell("sleep 1234 & sleep 1235; echo never")
        },
        &mut Collect::default(),
    );
    let took = started.elapsed();
    assert!(
        matches!(res, Err(ExecError::TimedOut(d)) if d == Duration::from_secs(2)),
        "{res:?}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    // Nothing of it is left running (zombies have an empty cmdline).
    let check = "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -c '^sleep 123[45]' || true";
    let mut left = String::new();
    for _ in 0..50 {
        left = sh_ok(c, check);
        if left.trim() == "0" {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{} sleep processes survived the timeout", left.trim());
}

pub fn upload_file_keeps_content_and_mode(c: &dyn Communicator) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("tool.sh");
    std::fs::write(&f, "#!/bin/sh\necho tool\n").unwrap();
    set_mode(&f, 0o755);
    let dest = format!("{}/bin/tool", scratch("file"));
    c.upload(&f, &dest, &UploadOptions::default()).unwrap();
    assert_eq!(
        sh_ok(c, &format!("stat -c '%a %u %F' {dest}")),
        "755 0 regular file\n"
    );
    assert_eq!(sh_ok(c, &dest), "tool\n");
    // Uploading again replaces the file.
    std::fs::write(&f, "#!/bin/sh\necho v2\n").unwrap();
    c.upload(&f, &dest, &UploadOptions::default()).unwrap();
    assert_eq!(sh_ok(c, &dest), "v2\n");
}

/// A tree with everything an upload must get right; returns the host folder.
fn fixture_tree(root: &Path) {
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::create_dir_all(root.join("ignored")).unwrap();
    std::fs::create_dir_all(root.join("nested")).unwrap();
    std::fs::write(root.join("a/b/c.txt"), "c\n").unwrap();
    std::fs::write(root.join("run.sh"), "#!/bin/sh\necho run\n").unwrap();
    std::fs::write(root.join("secret"), "s").unwrap();
    std::fs::write(root.join("with space.txt"), "space").unwrap();
    std::fs::write(root.join("x.log"), "log").unwrap();
    std::fs::write(root.join("ignored/y.txt"), "y").unwrap();
    std::fs::write(root.join("nested/keep.txt"), "keep").unwrap();
    std::fs::write(root.join("nested/skip.me"), "skip").unwrap();
    std::fs::write(root.join(".pipeignore"), "*.log\nignored/\n").unwrap();
    std::fs::write(root.join("nested/.pipeignore"), "skip.me\n").unwrap();
    std::os::unix::fs::symlink("a/b/c.txt", root.join("link")).unwrap();
    for (p, m) in [
        ("", 0o755),
        ("a", 0o755),
        ("a/b", 0o700),
        ("a/b/c.txt", 0o644),
        ("empty", 0o755),
        ("nested", 0o755),
        ("nested/keep.txt", 0o644),
        ("run.sh", 0o755),
        ("secret", 0o600),
        ("with space.txt", 0o644),
    ] {
        set_mode(&root.join(p), m);
    }
}

/// `path|type|mode|link` for everything under `dest` on the machine, sorted.
fn listing(c: &dyn Communicator, dest: &str) -> Vec<String> {
    let out = sh_ok(c, &format!("find '{dest}' -printf '%P|%y|%m|%l\\n'"));
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

pub fn upload_tree(c: &dyn Communicator) {
    let dir = tempfile::tempdir().unwrap();
    fixture_tree(dir.path());
    let dest = scratch("tree");
    c.upload(dir.path(), &dest, &UploadOptions::default())
        .unwrap();
    let mut expected = vec![
        "|d|755|",
        "a|d|755|",
        // Modes are normalized as git does (see layers::tree): 0700 -> 0755, 0600 -> 0644.
        "a/b|d|755|",
        "a/b/c.txt|f|644|",
        "empty|d|755|",
        "link|l|777|a/b/c.txt",
        "nested|d|755|",
        "nested/keep.txt|f|644|",
        "run.sh|f|755|",
        "secret|f|644|",
        "with space.txt|f|644|",
    ];
    expected.sort();
    assert_eq!(listing(c, &dest), expected);
    assert_eq!(sh_ok(c, &format!("cat '{dest}/with space.txt'")), "space");
    assert_eq!(sh_ok(c, &format!("cat '{dest}/link'")), "c\n");
    assert_eq!(
        sh_ok(c, &format!("find '{dest}' ! -user 0 | wc -l")).trim(),
        "0",
        "uploads are owned by root unless an owner is given"
    );
    // A trailing slash on dest means the same folder.
    c.upload(dir.path(), &format!("{dest}/"), &UploadOptions::default())
        .unwrap();
    assert_eq!(listing(c, &dest).len(), expected.len());
}

pub fn upload_into_missing_parents(c: &dyn Communicator) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), "deep").unwrap();
    let dest = format!("{}/x/y/z/app", scratch("deep"));
    c.upload(dir.path(), &dest, &UploadOptions::default())
        .unwrap();
    assert_eq!(sh_ok(c, &format!("cat {dest}/f")), "deep");
}

pub fn upload_owner(c: &dyn Communicator) {
    let dir = tempfile::tempdir().unwrap();
    fixture_tree(dir.path());
    let dest = scratch("owner");
    let opts = UploadOptions {
        owner: Some("nobody".into()),
    };
    c.upload(dir.path(), &dest, &opts).unwrap();
    assert_eq!(
        sh_ok(
            c,
            &format!("find '{dest}' ! -type l ! -user nobody | wc -l")
        )
        .trim(),
        "0"
    );
    assert_eq!(
        sh_ok(c, &format!("stat -c '%U:%G %a' '{dest}/a/b'")),
        "nobody:nogroup 755\n",
        "the owner's login group, modes untouched"
    );
    // The owner can use what it owns.
    let (code, out, _) = run(
        c,
        ExecRequest {
            user: Some("nobody".into()),
            ..ExecRequest::shell(format!("cat '{dest}/a/b/c.txt'"))
        },
    );
    assert_eq!((code, out.as_str()), (0, "c\n"));
}

pub fn upload_bytes(c: &dyn Communicator) {
    let dest = format!("{}/etc/app.conf", scratch("bytes"));
    c.upload_bytes(b"key = \"value\"\n", &dest, 0o640).unwrap();
    assert_eq!(sh_ok(c, &format!("cat {dest}")), "key = \"value\"\n");
    assert_eq!(sh_ok(c, &format!("stat -c '%a %u' {dest}")), "640 0\n");
    c.upload_bytes(b"", &dest, 0o600).unwrap();
    assert_eq!(sh_ok(c, &format!("stat -c '%a %s' {dest}")), "600 0\n");
}

pub fn download_file(c: &dyn Communicator) {
    let src = format!("{}/data.bin", scratch("dlfile"));
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    c.upload_bytes(&data, &src, 0o751).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("copy.bin");
    c.download(&src, &dest).unwrap();
    assert!(std::fs::read(&dest).unwrap() == data);
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o751);
    assert!(c.download("/no/such/file", &dir.path().join("x")).is_err());
}

pub fn download_tree_round_trip(c: &dyn Communicator) {
    let src = tempfile::tempdir().unwrap();
    fixture_tree(src.path());
    let remote = scratch("dltree");
    c.upload(src.path(), &remote, &UploadOptions::default())
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("back");
    c.download(&remote, &dest).unwrap();
    let summary = |root: &Path| -> Vec<(String, EntryKind, u32, Vec<u8>)> {
        tree::walk(root)
            .unwrap()
            .into_iter()
            .map(|e| {
                let content = match e.kind {
                    EntryKind::File => std::fs::read(&e.abs).unwrap(),
                    _ => Vec::new(),
                };
                let mode = if matches!(e.kind, EntryKind::Symlink(_)) {
                    0
                } else {
                    e.mode
                };
                (e.rel, e.kind, mode, content)
            })
            .collect()
    };
    assert_eq!(summary(&dest), summary(src.path()));
}
