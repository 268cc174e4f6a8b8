//! `pipe clean` without a Docker engine (a host that only runs QEMU): journaled resources of
//! every kind that needs no engine are removed through the same destroy the runs use, the
//! docker sweep by label is skipped with a warning, and the command succeeds. The engine is
//! made unreachable for pipe alone, with DOCKER_HOST naming a socket that does not exist, so
//! nothing else on the machine is disturbed.

mod common;

use common::Project;

const PIPELINEFILE: &str = r#"
[pipeline]
name = "@NAME@"

[box]
docker = { box = "debian-12" }
qemu = { box = "debian-12" }

[app]
provision = [ { inline = ["true"] } ]

[env.dev]
target = "qemu"
"#;

#[test]
fn clean_without_a_docker_engine_removes_journaled_qemu_leftovers_and_exits_0() {
    let p = Project::new("clean-nodocker", PIPELINEFILE, &[]);
    // What a SIGKILLed qemu run leaves: a VM folder with an overlay and a stale pid file (a
    // pid that is no QEMU, so nothing is signalled), and a temporary artifact file.
    let vm = p.path().join(".pipe/qemu/pipe-build-app-abc123");
    std::fs::create_dir_all(&vm).unwrap();
    for f in ["disk.qcow2", "qemu.pid", "console.log", "id_ed25519"] {
        std::fs::write(vm.join(f), "x").unwrap();
    }
    std::fs::write(vm.join("qemu.pid"), "1").unwrap();
    let tmp = p.path().join("artifact.qcow2.tmp-1");
    std::fs::write(&tmp, "x").unwrap();
    let journal = serde_json::json!({
        "run_id": "20260101000000-abcdef",
        "pid": 999_999_999u64,
        "command": "bake",
        "pipeline": p.name,
        "started": "2026-01-01T00:00:00Z",
        "resources": [
            {"kind": "path", "path": vm},
            {"kind": "qemu_machine", "pidfile": vm.join("qemu.pid"), "overlay": vm.join("disk.qcow2")},
            {"kind": "path", "path": tmp},
        ],
    });
    std::fs::create_dir_all(p.path().join(".pipe/journal")).unwrap();
    std::fs::write(
        p.path().join(".pipe/journal/20260101000000-abcdef.json"),
        serde_json::to_vec_pretty(&journal).unwrap(),
    )
    .unwrap();

    let dry = p.pipe_env(
        &["clean", "--dry-run"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    dry.ok();
    assert!(vm.exists() && tmp.exists(), "--dry-run removes nothing");

    let run = p.pipe_env(
        &["clean"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    run.ok();
    assert!(!vm.exists(), "the VM folder is gone: {}", run.all());
    assert!(!tmp.exists(), "the temporary file is gone: {}", run.all());
    assert!(p.journals().is_empty(), "{:?}", p.journals());
    assert!(
        run.stdout.contains("removed qemu machine"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("docker: leftovers without a journal were not looked for"),
        "the skipped sweep is said: {}",
        run.stderr
    );
    // Nothing left: a second run has nothing to do, still without Docker.
    let again = p.pipe_env(
        &["clean"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    again.ok();
    assert!(
        again.stdout.contains("nothing to clean"),
        "{}",
        again.stdout
    );
}
