//! Parity: the repository's example Pipelinefile yields identical provisioned trees on every
//! target: brought up on Docker and on QEMU, and baked for staging on the local EC2 (the
//! example's `staging` is its ec2 environment) and read from an instance of the app AMI. The
//! app folder (with the precached node_modules) and the nginx configuration are compared: file
//! lists, types, modes, owners (by name: uids differ between a container and a systemd VM),
//! link targets and sha256 sums; any difference fails, listed.
//!
//! On QEMU the app must also answer through nginx on 127.0.0.1. On EC2 the bake must leave two
//! AMIs with their tags and a verified release, and an instance launched from the app AMI
//! (through the local EC2, with the Pipelinefile's services delivered as pipe delivers them to
//! every fresh instance: an AMI carries no unit files) must serve the page on its 127.0.0.x:80.
//!
//! One bake per target, run one after the other (the machine has few cores). Slow: the example
//! installs nginx, node and npm everywhere: on a busy 2-core machine about 24 minutes in all,
//! of which about 3 on Docker, 3 on the local EC2 and 18 on QEMU under TCG.

mod common;
#[path = "support/local_ec2.rs"]
mod local_ec2;

use std::collections::BTreeMap;
use std::time::Duration;

use pipe::communicators::docker::DockerExec;
use pipe::communicators::ssh::{HostKeyPolicy, SshComm, SshSettings};
use pipe::communicators::{Collect, Communicator, ExecRequest};
use serde_json::Value;

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

/// The differences between two manifests, named `a` and `b`, one line each.
fn diff(
    (a, left): (&str, &BTreeMap<String, String>),
    (b, right): (&str, &BTreeMap<String, String>),
) -> Vec<String> {
    let width = a.len().max(b.len());
    let mut out = Vec::new();
    for (p, l) in left {
        match right.get(p) {
            None => out.push(format!("only on {a}: {p} {l}")),
            Some(r) if r != l => {
                out.push(format!("differs: {p}\n  {a:width$} {l}\n  {b:width$} {r}"))
            }
            _ => {}
        }
    }
    for (p, r) in right {
        if !left.contains_key(p) {
            out.push(format!("only on {b}: {p} {r}"));
        }
    }
    out
}

/// GET http://ADDRESS:PORT/PATH (a loopback address: an instance's 127.0.0.x), retried until it
/// answers or `secs` pass: (status, body).
fn http_get_at(address: &str, port: u16, path: &str, secs: u64) -> (u16, String) {
    use std::io::{Read, Write};
    let ip: std::net::Ipv4Addr = address.parse().unwrap();
    assert!(ip.is_loopback(), "not a loopback address: {address}");
    let started = std::time::Instant::now();
    loop {
        let got = (|| -> std::io::Result<(u16, String)> {
            let mut s =
                std::net::TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
            let mut buf = String::new();
            s.read_to_string(&mut buf)?;
            let status = buf
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
            Ok((status, body.unwrap_or_default()))
        })();
        match got {
            Ok(r) if r.0 != 0 => return r,
            other => assert!(
                started.elapsed().as_secs() < secs,
                "no answer on {address}:{port}{path}: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
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

/// The pipe tags every layer AMI carries (README, "Baking on EC2").
const AMI_TAGS: &[&str] = &[
    "pipe:pipeline",
    "pipe:layer",
    "pipe:digest",
    "pipe:env",
    "pipe:git-commit",
    "pipe:parent",
    "Name",
];

/// Bakes the example for staging on the local EC2 and checks what the bake leaves (two tagged
/// AMIs, a verified release of the app AMI); then launches an instance of the app AMI, delivers
/// the services to it as pipe does to every fresh instance, checks the page on the instance's
/// 127.0.0.x:80 from this host, and returns its manifest, read over SSH.
fn ec2_manifest(p: &common::Project) -> BTreeMap<String, String> {
    let ec2 = local_ec2::hold();
    let env = ec2.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let bake = p.pipe_env(&["bake", "--env", "staging", "--no-progress"], &env);
    bake.ok();
    eprintln!("{}", bake.all());

    let images = ec2.images(&p.name);
    assert_eq!(images.len(), 2, "a base and an app AMI: {images:?}");
    let layer = |name: &str| {
        images
            .iter()
            .find(|(_, t)| t["pipe:layer"] == name)
            .unwrap_or_else(|| panic!("no {name} AMI: {images:?}"))
    };
    let (base, app) = (layer("base"), layer("app"));
    for (id, tags) in [base, app] {
        for key in AMI_TAGS {
            assert!(tags.contains_key(*key), "{id} lacks {key}: {tags:?}");
        }
        assert_eq!(tags["pipe:pipeline"], p.name.as_str());
        assert_eq!(tags["pipe:env"], "staging");
        assert!(tags["pipe:digest"].as_str().unwrap().starts_with("sha256:"));
    }
    assert_eq!(base.1["pipe:parent"], ec2.source_ami.as_str());
    assert_eq!(app.1["pipe:parent"], base.0.as_str());
    let release: Value = serde_json::from_str(p.ledger_lines().last().expect("a release")).unwrap();
    let release = &release["release"];
    assert_eq!(
        release["artifacts"]["ec2:us-east-1"],
        app.0.as_str(),
        "{release}"
    );
    assert_eq!(release["verify"]["ok"], true, "{release}");

    // An instance of the app AMI, launched through the local EC2 with a key of this test.
    let key = p.path().join("instance-key/id_ed25519");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    pipe::targets::guest::new_login_key(&key).unwrap();
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let key_name = format!("{}-parity", p.name);
    ec2.ec2(
        "import_key_pair",
        &serde_json::json!({"KeyName": key_name, "PublicKeyMaterial": public.trim()}).to_string(),
    );
    let launched = ec2.ec2(
        "run_instances",
        &serde_json::json!({
            "ImageId": app.0, "MinCount": 1, "MaxCount": 1, "KeyName": key_name,
            "InstanceType": "t3.micro",
        })
        .to_string(),
    );
    let id = launched["Instances"][0]["InstanceId"]
        .as_str()
        .unwrap()
        .to_string();
    let address = launched["Instances"][0]["PublicIpAddress"]
        .as_str()
        .expect("the local EC2 gives every instance its 127.0.0.x")
        .to_string();

    let mut settings = SshSettings::new(address.clone(), "admin", key.clone());
    settings.host_key = HostKeyPolicy::AcceptNew;
    settings.known_hosts = key.with_file_name("known_hosts");
    settings.ssh_timeout = Duration::from_secs(120);
    let comm = SshComm::new(settings);
    comm.connect().unwrap();

    // The staging services, rendered by pipe's plan (`--local` only spares asking AWS for the
    // source AMI: the vars and templates are the environment's), delivered as systemd units.
    let pf = pipe::config::load(&p.path().join("Pipelinefile.toml"), p.path()).unwrap();
    let printer = pipe::ui::Printer::with_mode(
        pipe::ui::OutputMode::Human {
            color: false,
            progress: false,
        },
        pipe::ui::Verbosity::Quiet,
    );
    let selection = pipe::plan::Selection {
        env: Some("staging".into()),
        local: true,
        ..Default::default()
    };
    let plan = pipe::plan::make(&pf, &selection, &printer).unwrap();
    let services = plan.services();
    pipe::targets::guest::deliver_units(&comm, &services).unwrap();
    pipe::targets::guest::wait_ready(&comm, &services, Duration::from_secs(60)).unwrap();
    let (status, body) = http_get_at(&address, 80, "/", 60);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("NODE_ENV=staging"), "{body}");

    let manifest = manifest(&comm);
    ec2.ec2(
        "terminate_instances",
        &serde_json::json!({"InstanceIds": [id]}).to_string(),
    );
    ec2.ec2(
        "delete_key_pair",
        &serde_json::json!({"KeyName": key_name}).to_string(),
    );
    manifest
}

#[test]
fn docker_qemu_and_ec2_provision_identical_trees() {
    common::ensure_box();
    let port = common::free_port();
    let p = common::example("parity", port);
    let _cleanup = QemuCleanup(&p);

    p.pipe(&["up", "--no-progress"]).ok();
    let (status, body) = common::http_get_retry(port, "/", 60);
    assert_eq!(status, 200, "{body}");
    let client = pipe::engine::docker::DockerClient::connect().unwrap();
    let docker = manifest(&DockerExec::new(client, format!("{}-dev", p.name)));
    p.pipe(&["destroy", "--no-progress"]).ok();
    for must in [
        "/opt/app/server.js",
        "/opt/app/node_modules/escape-html/package.json",
        "/opt/app/node_modules/ms/index.js",
        "/etc/nginx/nginx.conf",
        "/etc/nginx/sites-available/ponyfoo.conf",
    ] {
        assert!(docker.contains_key(must), "{must} missing: {docker:#?}");
    }

    let ec2 = ec2_manifest(&p);
    let differences = diff(("docker", &docker), ("ec2", &ec2));
    assert!(
        differences.is_empty(),
        "{} differences between docker and ec2:\n{}",
        differences.len(),
        differences.join("\n")
    );

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
    let differences = diff(("docker", &docker), ("qemu", &qemu));
    assert!(
        differences.is_empty(),
        "{} differences between docker and qemu:\n{}",
        differences.len(),
        differences.join("\n")
    );
}
