//! Docker boxes against the real engine and Debian's mirror: building is idempotent by recipe
//! digest, only changes that matter rebuild, list and remove work.
//!
//! The debian-12 box is shared with the other Docker tests and stays; the test box built here
//! from a throwaway recipe is removed at the end, even when the test fails.

#[path = "support/docker_box.rs"]
mod support;

use std::path::Path;

use pipe::boxes::{self, BoxTarget, Recipe};
use pipe::engine::docker::DockerClient;

#[test]
fn debian_12_builds_once() {
    let client = support::client();
    let recipe = support::debian_12();
    let printer = support::quiet_printer();
    let first = boxes::build_docker_box(&client, &recipe, &printer, false).unwrap();
    let count = images_of(&client, "debian-12");

    let again = boxes::build_docker_box(&client, &recipe, &printer, false).unwrap();
    assert!(!again.built, "an unchanged recipe is not rebuilt");
    assert_eq!(again.id, first.id);
    assert_eq!(again.digest, recipe.digest(BoxTarget::Docker));
    assert_eq!(
        again.image,
        format!("pipe-box/debian-12:{}", &again.digest[..12])
    );
    assert_eq!(images_of(&client, "debian-12"), count, "no new image");

    let listed = boxes::list_docker_boxes(&client).unwrap();
    let entry = listed
        .iter()
        .find(|b| b.id == first.id)
        .expect("list shows the box");
    assert_eq!(entry.name, "debian-12");
    assert!(entry.latest);
    let latest = client
        .inspect_image("pipe-box/debian-12:latest")
        .unwrap()
        .unwrap();
    assert_eq!(latest.id, first.id);
}

/// Removes every image of the test box when the test ends, however it ends.
struct BoxGuard<'a>(&'a DockerClient, String);

impl Drop for BoxGuard<'_> {
    fn drop(&mut self) {
        let _ = boxes::remove_docker_box(self.0, &self.1);
    }
}

#[test]
fn only_changes_that_matter_rebuild_and_remove_removes() {
    let client = support::client();
    let printer = support::quiet_printer();
    let name = format!("pipe-test-{}", std::process::id());
    let _guard = BoxGuard(&client, name.clone());
    let dir = tempfile::tempdir().unwrap();
    let recipe_path = dir.path().join("boxes").join(format!("{name}.toml"));
    std::fs::create_dir_all(recipe_path.parent().unwrap()).unwrap();
    let write = |text: &str| -> Recipe {
        std::fs::write(&recipe_path, text).unwrap();
        Recipe::find(&name, &dir.path().join("deeper/still")).unwrap_or_else(|e| panic!("{e}"))
    };
    let base = "[box]\ndescription = \"test box\"\nsuite = \"bookworm\"\nvariant = \"minbase\"\n";

    let built = boxes::build_docker_box(&client, &write(base), &printer, false).unwrap();
    assert!(built.built);

    // The description is for humans: same digest, nothing rebuilt.
    let described = write(&base.replace("test box", "the same box, described differently"));
    let same = boxes::build_docker_box(&client, &described, &printer, false).unwrap();
    assert!(!same.built);
    assert_eq!(same.id, built.id);

    // A package for the docker target changes the image.
    let changed = write(&format!("{base}\n[docker]\npackages = [\"less\"]\n"));
    assert_ne!(changed.digest(BoxTarget::Docker), built.digest);
    let rebuilt = boxes::build_docker_box(&client, &changed, &printer, false).unwrap();
    assert!(rebuilt.built);
    assert_ne!(rebuilt.id, built.id);
    assert_eq!(
        images_of(&client, &name),
        2,
        "the previous digest's image is kept"
    );
    let latest = client
        .inspect_image(&format!("pipe-box/{name}:latest"))
        .unwrap()
        .unwrap();
    assert_eq!(latest.id, rebuilt.id, "latest follows the newest build");
    let listed: Vec<_> = boxes::list_docker_boxes(&client)
        .unwrap()
        .into_iter()
        .filter(|b| b.name == name)
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|b| b.id == rebuilt.id && b.latest));

    // Going back to an earlier recipe reuses its image and moves `latest` back.
    let back = boxes::build_docker_box(&client, &write(base), &printer, false).unwrap();
    assert!(!back.built);
    assert_eq!(back.id, built.id);
    let latest = client
        .inspect_image(&format!("pipe-box/{name}:latest"))
        .unwrap()
        .unwrap();
    assert_eq!(latest.id, built.id);

    let removed = boxes::remove_docker_box(&client, &name).unwrap();
    assert_eq!(removed.len(), 2);
    assert_eq!(images_of(&client, &name), 0);
    assert!(
        boxes::remove_docker_box(&client, &name)
            .unwrap_err()
            .to_string()
            .contains("not built")
    );
}

#[test]
fn a_missing_recipe_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let err = Recipe::find("no-such-box", dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("boxes/no-such-box.toml"), "{msg}");
    assert!(err.hint().unwrap().contains("debian-12.toml"));
    assert!(Recipe::find("Bad Name", Path::new("/")).is_err());
}

/// Images tagged `pipe-box/NAME:*` (images committed from a box container carry its labels
/// too, so labels alone would count them).
fn images_of(client: &DockerClient, name: &str) -> usize {
    let prefix = format!("pipe-box/{name}:");
    client
        .images_by_labels(&[&format!("pipe.box={name}")])
        .unwrap()
        .iter()
        .filter(|i| i.tags.iter().any(|t| t.starts_with(&prefix)))
        .count()
}
