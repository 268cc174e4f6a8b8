//! The communicator suite against a container of the debian-12 box, over docker exec; plus the
//! Docker client's container and image calls against the real engine.

#[path = "support/communicator_suite.rs"]
mod suite;
#[path = "support/docker_box.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use pipe::communicators::docker::DockerExec;
use pipe::communicators::{Collect, Communicator, ExecRequest};
use pipe::engine::docker::{ImageConfig, PortSpec};
use support::TestContainer;

/// One container shared by the tests that run at the same time; the last one to finish removes
/// it (also when it panics).
struct Machine {
    comm: DockerExec,
    _container: TestContainer,
}

fn machine() -> Arc<Machine> {
    static SHARED: Mutex<Weak<Machine>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = shared.upgrade() {
        return m;
    }
    let client = support::client();
    let image = support::debian_12_image(&client);
    let container = support::start_container(&client, &image, "comm", |_| {});
    let m = Arc::new(Machine {
        comm: DockerExec::new(client, container.name.clone()),
        _container: container,
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
    // Every suite function has a #[test] above (the macro would not compile otherwise); this
    // keeps ALL, which other files may loop over, in step with it.
    assert_eq!(suite::ALL.len(), 17);
}

#[test]
fn describe_names_the_container() {
    let m = machine();
    assert_eq!(
        m.comm.describe(),
        format!("docker exec {}", m.comm.container())
    );
}

#[test]
fn container_ports_tmpfs_labels_and_commit() {
    let client = support::client();
    let image = support::debian_12_image(&client);
    let container = support::start_container(&client, &image, "client", |spec| {
        spec.ports.push(PortSpec::tcp(8000, None));
        spec.tmpfs.insert("/scratch".into(), "rw,size=16m".into());
        spec.env
            .insert("PIPE_TEST_ENV".into(), "from-create".into());
    });

    let info = client.inspect_container(&container.id).unwrap().unwrap();
    assert!(info.running);
    assert_eq!(info.name, container.name);
    assert_eq!(info.ports.len(), 1);
    assert_eq!(
        info.ports[0].host_ip, "127.0.0.1",
        "published on loopback only"
    );
    assert_eq!(info.ports[0].container_port, 8000);
    assert!(info.ports[0].host_port > 0);
    let listed = client
        .containers_by_labels(
            &[&format!("{}={}", support::TEST_LABEL, std::process::id())],
            false,
        )
        .unwrap();
    assert!(listed.iter().any(|c| c.id == container.id && c.running));

    let comm = DockerExec::new(client.clone(), container.id.clone());
    let mut out = Collect::default();
    let script = "findmnt -n -o FSTYPE /scratch 2>/dev/null || grep ' /scratch ' /proc/mounts | cut -d' ' -f3; cat /proc/1/comm";
    assert_eq!(comm.exec(&ExecRequest::shell(script), &mut out).unwrap(), 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("tmpfs\n"), "{text}");
    assert!(
        text.contains("init"),
        "init: true runs an init as PID 1: {text}"
    );
    comm.upload_bytes(b"committed\n", "/opt/marker", 0o644)
        .unwrap();

    // Commit with a config and labels; remove the image afterwards.
    let repo = format!("pipe-test-commit-{}", std::process::id());
    let config = ImageConfig {
        cmd: Some(vec!["cat".into(), "/opt/marker".into()]),
        env: BTreeMap::from([("PIPE_LAYER".into(), "app".into())]),
        labels: BTreeMap::from([("pipe.test.commit".into(), "yes".into())]),
        ..ImageConfig::default()
    };
    let id = client
        .commit_container(&container.id, &repo, "t1", &config)
        .unwrap();
    struct ImageGuard(pipe::engine::docker::DockerClient, String);
    impl Drop for ImageGuard {
        fn drop(&mut self) {
            let _ = self.0.remove_image(&self.1, true);
        }
    }
    let _guard = ImageGuard(client.clone(), id.clone());
    let image_info = client
        .inspect_image(&format!("{repo}:t1"))
        .unwrap()
        .unwrap();
    assert_eq!(image_info.id, id);
    assert_eq!(
        image_info
            .labels
            .get("pipe.test.commit")
            .map(String::as_str),
        Some("yes")
    );
    let found = client.images_by_labels(&["pipe.test.commit=yes"]).unwrap();
    assert!(found.iter().any(|i| i.id == id));
    let committed = api_config(&client, &id);
    assert!(committed.contains("PIPE_LAYER=app"), "{committed}");
    assert!(committed.contains("/opt/marker"), "{committed}");

    assert!(client.remove_image(&id, true).unwrap());
    assert!(client.inspect_image(&id).unwrap().is_none());
    assert!(!client.remove_image(&id, true).unwrap(), "already gone");

    client
        .stop_container(&container.id, std::time::Duration::from_secs(1))
        .unwrap();
    assert!(
        !client
            .inspect_container(&container.id)
            .unwrap()
            .unwrap()
            .running
    );
    assert!(client.remove_container(&container.id).unwrap());
    assert!(client.inspect_container(&container.id).unwrap().is_none());
    assert!(!client.remove_container(&container.id).unwrap());
}

/// The committed image's config as JSON, via the raw API.
fn api_config(client: &pipe::engine::docker::DockerClient, id: &str) -> String {
    let inspect = client.block_on(client.api().inspect_image(id)).unwrap();
    serde_json::to_string(&inspect.config).unwrap()
}

#[test]
fn errors_name_the_resource() {
    let client = support::client();
    let comm = DockerExec::new(client.clone(), "pipe-test-no-such-container");
    let err = comm
        .exec(&ExecRequest::shell("true"), &mut Collect::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("pipe-test-no-such-container"), "{err}");
    let mut spec = pipe::engine::docker::ContainerSpec::new("pipe-test/no-such-image:1");
    spec.name = Some(format!("pipe-test-noimage-{}", std::process::id()));
    let err = client.create_container(&spec).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(
        err.to_string().contains("pipe-test/no-such-image:1"),
        "{err}"
    );
}
