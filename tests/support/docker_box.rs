//! The debian-12 box and throwaway containers for tests that talk to the real Docker engine.
//! The box is built once per machine (its digest label makes later builds no-ops); containers
//! are labelled, uniquely named per test process, and removed by a guard even when a test
//! panics. Containers of test processes that were killed are swept on the next run.
#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use pipe::boxes::{self, Recipe};
use pipe::engine::docker::{ContainerSpec, DockerClient};
use pipe::ui::{OutputMode, Printer, Verbosity};

/// Label on every container a test starts; its value is the test process id.
pub const TEST_LABEL: &str = "pipe.test.pid";

pub fn client() -> DockerClient {
    DockerClient::connect().unwrap_or_else(|e| panic!("{e}"))
}

pub fn quiet_printer() -> Printer {
    Printer::with_mode(
        OutputMode::Human {
            color: false,
            progress: false,
        },
        Verbosity::Quiet,
    )
}

/// The repository's debian-12 recipe.
pub fn debian_12() -> Recipe {
    Recipe::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("boxes/debian-12.toml")).unwrap()
}

/// The debian-12 box image, built if missing; returns its image reference.
pub fn debian_12_image(client: &DockerClient) -> String {
    boxes::build_docker_box(client, &debian_12(), &quiet_printer(), false)
        .unwrap_or_else(|e| panic!("building the debian-12 box: {e}"))
        .image
}

/// A running container, removed on drop.
pub struct TestContainer {
    pub client: DockerClient,
    pub id: String,
    pub name: String,
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let _ = self.client.remove_container(&self.id);
    }
}

/// Starts `sleep infinity` in `image` with the test labels (plus `spec_fn`'s changes).
pub fn start_container(
    client: &DockerClient,
    image: &str,
    purpose: &str,
    spec_fn: impl FnOnce(&mut ContainerSpec),
) -> TestContainer {
    static N: AtomicUsize = AtomicUsize::new(0);
    sweep_dead_test_containers(client);
    let name = format!(
        "pipe-test-{purpose}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut spec = ContainerSpec::new(image);
    spec.name = Some(name.clone());
    spec.cmd = Some(vec!["sleep".into(), "infinity".into()]);
    spec.labels
        .insert(TEST_LABEL.into(), std::process::id().to_string());
    spec_fn(&mut spec);
    let id = client.create_container(&spec).unwrap();
    let c = TestContainer {
        client: client.clone(),
        id,
        name,
    };
    client.start_container(&c.id).unwrap();
    c
}

/// Removes containers of test processes that no longer exist.
fn sweep_dead_test_containers(client: &DockerClient) {
    let Ok(list) = client.containers_by_labels(&[TEST_LABEL], true) else {
        return;
    };
    for c in list {
        let alive = c
            .labels
            .get(TEST_LABEL)
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = client.remove_container(&c.id);
        }
    }
}
