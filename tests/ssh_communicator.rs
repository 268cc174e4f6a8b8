//! The communicator suite over SSH, against a real sshd: a container of the debian-12 box with
//! openssh-server (and sudo) installed, its port 22 published on 127.0.0.1 only, logged in with
//! an ed25519 key generated for the test run. Also: the host-key policies, a non-root login
//! that becomes root with sudo, connection retries, and a bastion (a second container).
//!
//! The sshd image is built once from the box and reused (labelled with the box image id);
//! containers are removed by guards even when a test fails.

#[path = "support/communicator_suite.rs"]
mod suite;
#[path = "support/docker_box.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use pipe::communicators::docker::DockerExec;
use pipe::communicators::ssh::{Bastion, HostKeyPolicy, SshComm, SshSettings};
use pipe::communicators::{Collect, Communicator, ExecRequest};
use pipe::engine::docker::{DockerClient, ImageConfig, PortSpec};
use support::TestContainer;

const SSHD_REPO: &str = "pipe-test/sshd";
const SSHD_LABEL: &str = "pipe.test.sshd-from";

/// The box with openssh-server, sudo and a sudo-capable `admin` user; built once per box.
fn sshd_image(client: &DockerClient) -> String {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let boxed = support::debian_12_image(client);
    let box_id = client.inspect_image(&boxed).unwrap().unwrap().id;
    let from = box_id.trim_start_matches("sha256:")[..12].to_string();
    // Other test processes may build it at the same time: one file lock for all of them.
    let lock_path = std::env::temp_dir().join("pipe-test-sshd-image.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap();
    lock.lock().unwrap();
    let reference = format!("{SSHD_REPO}:{from}");
    // Images made from earlier builds of the box are of no further use.
    for old in client.images_by_labels(&[SSHD_LABEL]).unwrap_or_default() {
        if old.labels.get(SSHD_LABEL) != Some(&from) {
            let _ = client.remove_image(&old.id, true);
        }
    }
    if client.inspect_image(&reference).unwrap().is_some() {
        return reference;
    }
    let c = support::start_container(client, &boxed, "sshd-build", |_| {});
    let comm = DockerExec::new(client.clone(), c.name.clone());
    let script = r#"set -e
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends openssh-server sudo >/dev/null
mkdir -p /run/sshd
id admin >/dev/null 2>&1 || useradd -m -s /bin/bash admin
mkdir -p /home/admin
echo 'admin ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/admin
chmod 0440 /etc/sudoers.d/admin
apt-get clean
rm -rf /var/lib/apt/lists/*"#;
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
    assert_eq!(
        code,
        0,
        "installing openssh-server: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = ImageConfig {
        cmd: Some(sshd_cmd()),
        labels: BTreeMap::from([(SSHD_LABEL.into(), from.clone())]),
        ..ImageConfig::default()
    };
    client
        .commit_container(&c.id, SSHD_REPO, &from, &config)
        .unwrap();
    reference
}

fn sshd_cmd() -> Vec<String> {
    ["/usr/sbin/sshd", "-D", "-e"].map(String::from).to_vec()
}

/// An ed25519 key pair for this test process.
struct Key {
    _dir: tempfile::TempDir,
    private: PathBuf,
    public: String,
}

fn key() -> Arc<Key> {
    static KEY: Mutex<Option<Arc<Key>>> = Mutex::new(None);
    let mut k = KEY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(k) = &*k {
        return k.clone();
    }
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("id_ed25519");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "pipe-test", "-f"])
        .arg(&private)
        .status()
        .unwrap();
    assert!(status.success());
    let public = std::fs::read_to_string(private.with_extension("pub")).unwrap();
    let made = Arc::new(Key {
        _dir: dir,
        private,
        public,
    });
    *k = Some(made.clone());
    made
}

/// A running sshd container that accepts the test key for root and admin.
struct Sshd {
    container: TestContainer,
    port: u16,
    /// Its address on the Docker network (for the bastion test).
    ip: String,
    /// Its ed25519 host key line (`ssh-ed25519 AAAA...`).
    host_key: String,
}

fn start_sshd(purpose: &str, cmd: Option<Vec<String>>) -> Sshd {
    let client = support::client();
    let image = sshd_image(&client);
    let container = support::start_container(&client, &image, purpose, |spec| {
        spec.ports.push(PortSpec::tcp(22, None));
        spec.cmd = Some(cmd.unwrap_or_else(sshd_cmd));
    });
    let docker = DockerExec::new(client.clone(), container.name.clone());
    let k = key();
    for home in ["/root", "/home/admin"] {
        docker
            .upload_bytes(
                k.public.as_bytes(),
                &format!("{home}/.ssh/authorized_keys"),
                0o600,
            )
            .unwrap();
    }
    let mut out = Collect::default();
    let code = docker
        .exec(
            &ExecRequest::shell(
                "chmod 700 /root/.ssh /home/admin/.ssh && chown -R admin: /home/admin/.ssh && cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub",
            ),
            &mut out,
        )
        .unwrap();
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let host_key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let info = client.inspect_container(&container.id).unwrap().unwrap();
    let published = info
        .ports
        .iter()
        .find(|p| p.container_port == 22)
        .expect("port 22 published");
    assert_eq!(published.host_ip, "127.0.0.1");
    let raw = client
        .block_on(client.api().inspect_container(
            &container.id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        ))
        .unwrap();
    let ip = raw
        .network_settings
        .and_then(|n| n.ip_address)
        .unwrap_or_default();
    Sshd {
        port: published.host_port,
        ip,
        host_key,
        container,
    }
}

/// Settings for root@127.0.0.1:port with the test key, `accept-new` into a private file.
fn settings(port: u16, known_hosts: &Path) -> SshSettings {
    let mut s = SshSettings::new("127.0.0.1", "root", key().private.clone());
    s.port = port;
    s.known_hosts = known_hosts.to_path_buf();
    s.ssh_timeout = Duration::from_secs(60);
    s
}

struct Machine {
    comm: SshComm,
    _known_hosts: tempfile::TempDir,
    _sshd: Sshd,
}

/// One sshd container shared by the suite tests running at the same time.
fn machine() -> Arc<Machine> {
    static SHARED: Mutex<Weak<Machine>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = shared.upgrade() {
        return m;
    }
    let sshd = start_sshd("ssh", None);
    let kh = tempfile::tempdir().unwrap();
    let comm = SshComm::new(settings(sshd.port, &kh.path().join("known_hosts")));
    let m = Arc::new(Machine {
        comm,
        _known_hosts: kh,
        _sshd: sshd,
    });
    *shared = Arc::downgrade(&m);
    m
}

macro_rules! suite_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let m = machine();
                suite::$name(&m.comm);
            }
        )*
    };
}

suite_tests!(
    exit_codes,
    missing_command_is_127,
    stdout_and_stderr_are_separate,
    large_output_on_both_streams,
    env_values_pass_through,
    workdir,
    user,
    stdin,
    large_stdin,
    timeout_kills_the_command,
    upload_file_keeps_content_and_mode,
    upload_tree,
    upload_into_missing_parents,
    upload_owner,
    upload_bytes,
    download_file,
    download_tree_round_trip,
);

#[test]
fn the_suite_list_is_complete() {
    assert_eq!(suite::ALL.len(), 17);
}

#[test]
fn describe_names_user_host_and_port() {
    let m = machine();
    let d = m.comm.describe();
    assert!(d.starts_with("ssh root@127.0.0.1:"), "{d}");
}

#[test]
fn the_whole_suite_as_a_non_root_user_with_sudo() {
    let sshd = start_sshd("ssh-admin", None);
    let kh = tempfile::tempdir().unwrap();
    let mut s = settings(sshd.port, &kh.path().join("known_hosts"));
    s.user = "admin".into();
    let comm = SshComm::new(s);
    let mut out = Collect::default();
    let code = comm
        .exec(
            &ExecRequest {
                user: Some("admin".into()),
                ..ExecRequest::shell("id -un")
            },
            &mut out,
        )
        .unwrap();
    assert_eq!((code, out.stdout.as_slice()), (0, &b"admin\n"[..]));
    for (name, test) in suite::ALL {
        eprintln!("suite as admin: {name}");
        test(&comm);
    }
}

#[test]
fn accept_new_records_the_host_key_and_strict_then_accepts_it() {
    let sshd = start_sshd("ssh-keys", None);
    let kh_dir = tempfile::tempdir().unwrap();
    let kh = kh_dir.path().join("sub/known_hosts");
    let comm = SshComm::new(settings(sshd.port, &kh));
    comm.connect().unwrap();
    let text = std::fs::read_to_string(&kh).unwrap();
    assert_eq!(
        text,
        format!("[127.0.0.1]:{} {}\n", sshd.port, sshd.host_key),
        "recorded as OpenSSH would"
    );
    // ssh-keygen (OpenSSH's own parser) finds it.
    let found = std::process::Command::new("ssh-keygen")
        .arg("-F")
        .arg(format!("[127.0.0.1]:{}", sshd.port))
        .arg("-f")
        .arg(&kh)
        .output()
        .unwrap();
    assert!(found.status.success());
    // A second connection with `strict` now succeeds and adds nothing.
    let mut s = settings(sshd.port, &kh);
    s.host_key = HostKeyPolicy::Strict;
    let strict = SshComm::new(s);
    let mut out = Collect::default();
    assert_eq!(
        strict
            .exec(&ExecRequest::shell("echo ok"), &mut out)
            .unwrap(),
        0
    );
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), text);
}

#[test]
fn strict_refuses_unknown_and_changed_keys_at_once() {
    let sshd = start_sshd("ssh-strict", None);
    let dir = tempfile::tempdir().unwrap();

    let unknown = dir.path().join("empty_known_hosts");
    let mut s = settings(sshd.port, &unknown);
    s.host_key = HostKeyPolicy::Strict;
    let started = Instant::now();
    let err = SshComm::new(s).connect().unwrap_err().to_string();
    assert!(err.contains("is not in"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "not retried");
    assert!(!unknown.exists(), "strict never writes known_hosts");

    // Another machine's key under this host's name: refused under both policies.
    let other = dir.path().join("other");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(status.success());
    let pubkey = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let wrong = dir.path().join("wrong_known_hosts");
    let fields: Vec<&str> = pubkey.split_whitespace().collect();
    std::fs::write(
        &wrong,
        format!(
            "# a comment\n[127.0.0.1]:{} {} {}\n",
            sshd.port, fields[0], fields[1]
        ),
    )
    .unwrap();
    for policy in [HostKeyPolicy::Strict, HostKeyPolicy::AcceptNew] {
        let mut s = settings(sshd.port, &wrong);
        s.host_key = policy;
        let err = SshComm::new(s).connect().unwrap_err().to_string();
        assert!(err.contains("HAS CHANGED"), "{policy:?}: {err}");
    }
    assert_eq!(
        std::fs::read_to_string(&wrong).unwrap().lines().count(),
        2,
        "the file is untouched"
    );
}

#[test]
fn retries_until_sshd_is_up_and_gives_up_after_ssh_timeout() {
    // sshd starts 4 s after the container: the first attempts are refused by the port.
    let sshd = start_sshd(
        "ssh-late",
        Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            "sleep 4; exec /usr/sbin/sshd -D -e".into(),
        ]),
    );
    let kh = tempfile::tempdir().unwrap();
    let comm = SshComm::new(settings(sshd.port, &kh.path().join("known_hosts")));
    let started = Instant::now();
    comm.connect().unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2));

    // Nothing listens on a port we just closed: tries until the timeout, then says so.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut s = settings(port, &kh.path().join("known_hosts"));
    s.ssh_timeout = Duration::from_secs(3);
    let started = Instant::now();
    let err = SshComm::new(s).connect().unwrap_err().to_string();
    let took = started.elapsed();
    assert!(err.contains("no connection within 3s"), "{err}");
    assert!(err.contains("attempts"), "{err}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(15),
        "{took:?}"
    );
}

#[test]
fn reconnects_after_the_session_dies() {
    let sshd = start_sshd("ssh-reconnect", None);
    let kh = tempfile::tempdir().unwrap();
    let comm = SshComm::new(settings(sshd.port, &kh.path().join("known_hosts")));
    let mut out = Collect::default();
    assert_eq!(
        comm.exec(&ExecRequest::shell("echo 1"), &mut out).unwrap(),
        0
    );
    // Kill every sshd session process (not the listener): the kept session dies.
    let docker = DockerExec::new(support::client(), sshd.container.name.clone());
    let mut o = Collect::default();
    docker
        .exec(&ExecRequest::shell("pkill -f 'sshd: root' ; true"), &mut o)
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut out = Collect::default();
    assert_eq!(
        comm.exec(&ExecRequest::shell("echo 2"), &mut out).unwrap(),
        0
    );
    assert_eq!(out.stdout, b"2\n");
}

#[test]
fn through_a_bastion() {
    let target = start_sshd("ssh-target", None);
    let bastion = start_sshd("ssh-bastion", None);
    assert!(
        !target.ip.is_empty(),
        "the target has an address on the Docker network"
    );
    let kh = tempfile::tempdir().unwrap();
    let known = kh.path().join("known_hosts");
    let mut s = settings(22, &known);
    s.host = target.ip.clone();
    s.bastion = Some(Bastion {
        host: "127.0.0.1".into(),
        port: bastion.port,
        user: "admin".into(),
        key: None,
    });
    let comm = SshComm::new(s);
    assert!(
        comm.describe().contains(" via admin@127.0.0.1:"),
        "{}",
        comm.describe()
    );
    let mut out = Collect::default();
    let code = comm
        .exec(
            &ExecRequest::shell("hostname; echo $SSH_CONNECTION"),
            &mut out,
        )
        .unwrap();
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&target.ip),
        "the session ends on the target: {text}"
    );
    assert!(
        text.contains(&bastion.ip),
        "and comes from the bastion: {text}"
    );
    // Both host keys were checked and recorded.
    let recorded = std::fs::read_to_string(&known).unwrap();
    assert!(recorded.contains(&format!(
        "[127.0.0.1]:{} {}",
        bastion.port, bastion.host_key
    )));
    assert!(recorded.contains(&format!("{} {}", target.ip, target.host_key)));
    // Bulk data through the tunnel, both ways.
    suite::large_stdin(&comm);
    suite::download_tree_round_trip(&comm);
}
