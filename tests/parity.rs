//! Parity: the repository's example Pipelinefile, brought up on Docker and on QEMU, yields
//! identical provisioned trees: the app folder (with the precached node_modules) and the nginx
//! configuration. File lists, types, modes, owners (by name: uids differ between a container
//! and a systemd VM), link targets and sha256 sums are compared; any difference fails, listed.
//! On QEMU the app must also answer through nginx on 127.0.0.1.
//!
//! Slow (the example installs nginx, node and npm in both): about 5 minutes on Docker and
//! 10-15 on QEMU under TCG.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use pipe::communicators::docker::DockerExec;
use pipe::communicators::{Collect, Communicator, ExecRequest};

/// What is compared: every entry under these folders.
const TREES: &[&str] = &["/opt/app", "/etc/nginx"];

/// `path|type|mode|owner:group|link|sha256` per entry, sorted.
fn manifest(comm: &dyn Communicator) -> BTreeMap<String, String> {
    let script = format!(
        r#"set -e
find {trees} -xdev -printf '%p|%y|%m|%u:%g|%l|\n' | while IFS= read -r line; do
  p=${{line%%|*}}
  if [ -f "$p" ] && [ ! -L "$p" ]; then
    printf '%s%s\n' "$line" "$(sha256sum "$p" | cut -d' ' -f1)"
  else
    printf '%s\n' "$line"
  fi
done | sort"#,
        trees = TREES.join(" ")
    );
    let mut out = Collect::default();
    let code = comm
        .exec(
            &ExecRequest {
                timeout: Some(Duration::from_secs(600)),
                ..ExecRequest::shell(script)
            },
            &mut out,
        )
        .unwrap();
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (path, rest) = l.split_once('|').unwrap();
            (path.to_string(), rest.to_string())
        })
        .collect()
}

/// The differences between two manifests, one line each.
fn diff(docker: &BTreeMap<String, String>, qemu: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (p, d) in docker {
        match qemu.get(p) {
            None => out.push(format!("only on docker: {p} {d}")),
            Some(q) if q != d => out.push(format!("differs: {p}\n  docker {d}\n  qemu   {q}")),
            _ => {}
        }
    }
    for (p, q) in qemu {
        if !docker.contains_key(p) {
            out.push(format!("only on qemu: {p} {q}"));
        }
    }
    out
}

/// The example project, with its own pipeline name, container name and host port.
fn example(port: u16) -> common::Project {
    let repo = common::repo();
    let text = std::fs::read_to_string(repo.join("Pipelinefile.toml"))
        .unwrap()
        .replace("name = \"ponyfoo\"", "name = \"@NAME@\"")
        .replace(
            "container_name = \"ponyfoo-dev\"",
            "container_name = \"@NAME@-dev\"",
        )
        .replace("host_port = 8080", &format!("host_port = {port}"));
    assert!(text.contains("@NAME@-dev") && text.contains(&format!("host_port = {port}")));
    let mut files: Vec<(String, String)> = Vec::new();
    for dir in ["app", "provisioners"] {
        for e in walkdir::WalkDir::new(repo.join(dir)) {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(&repo)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if e.file_type().is_file() && !rel.contains("node_modules") {
                files.push((rel, std::fs::read_to_string(e.path()).unwrap()));
            }
        }
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    common::Project::new("parity", &text, &refs)
}

/// Stops the project's VMs and removes its qemu layers when the test ends, however it ends.
struct QemuCleanup<'a>(&'a common::Project);

impl Drop for QemuCleanup<'_> {
    fn drop(&mut self) {
        if let Ok(rd) = std::fs::read_dir(self.0.path().join(".pipe/qemu")) {
            for e in rd.flatten() {
                let _ = pipe::targets::qemu::machine::destroy(&e.path());
            }
        }
        let _ = std::fs::remove_dir_all(pipe::targets::qemu::disk::layers_dir(&self.0.name));
    }
}

#[test]
fn docker_and_qemu_provision_identical_trees() {
    common::ensure_box();
    let port = common::free_port();
    let p = example(port);
    let _cleanup = QemuCleanup(&p);

    p.pipe(&["up", "--no-progress"]).ok();
    let (status, body) = common::http_get_retry(port, "/", 60);
    assert_eq!(status, 200, "{body}");
    let client = pipe::engine::docker::DockerClient::connect().unwrap();
    let docker = manifest(&DockerExec::new(client, format!("{}-dev", p.name)));
    p.pipe(&["destroy", "--no-progress"]).ok();

    let up = p.pipe(&["up", "--target", "qemu", "--no-progress"]);
    up.ok();
    eprintln!("{}", up.all());
    let (status, body) = common::http_get_retry(port, "/", 120);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("NODE_ENV=development"), "{body}");
    let rec = pipe::targets::qemu::machine::load_record(
        &p.path()
            .join(".pipe/qemu")
            .join(format!("pipe-{}-dev", p.name)),
    )
    .expect("machine.json");
    let qemu = manifest(&rec.vm.ssh(Duration::from_secs(60)));

    for must in [
        "/opt/app/server.js",
        "/opt/app/node_modules/escape-html/package.json",
        "/opt/app/node_modules/ms/index.js",
        "/etc/nginx/nginx.conf",
        "/etc/nginx/sites-available/ponyfoo.conf",
    ] {
        assert!(docker.contains_key(must), "{must} missing: {docker:#?}");
    }
    let differences = diff(&docker, &qemu);
    assert!(
        differences.is_empty(),
        "{} differences between docker and qemu:\n{}",
        differences.len(),
        differences.join("\n")
    );
}
