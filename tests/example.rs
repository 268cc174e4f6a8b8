//! The repository's own example, as the README's Quick start runs it: `pipe up --local` brings
//! nginx + the node app up on Docker, and 127.0.0.1:8080 answers through nginx.

mod common;

use common::{ensure_box, http_get_retry, repo, run_pipe};

/// Copies what the example needs into a temp folder, so the test never touches the
/// repository's own `.pipe/`.
fn example_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in walkdir::WalkDir::new(repo())
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| {
            let rel = e.path().strip_prefix(repo()).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .into_owned();
            matches!(
                top.as_str(),
                "Pipelinefile.toml" | "app" | "provisioners" | "boxes"
            ) && !rel.to_string_lossy().contains("node_modules")
        })
    {
        let e = entry.unwrap();
        let rel = e.path().strip_prefix(repo()).unwrap();
        let to = dir.path().join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
    dir
}

struct Destroy<'a>(&'a std::path::Path);

impl Drop for Destroy<'_> {
    fn drop(&mut self) {
        let _ = run_pipe(self.0, &["destroy"], &[]);
    }
}

#[test]
fn the_example_comes_up_behind_nginx() {
    ensure_box();
    let dir = example_copy();
    let _guard = Destroy(dir.path());
    let up = run_pipe(dir.path(), &["up", "--local", "--no-progress"], &[]);
    up.ok();
    let (status, body) = http_get_retry(8080, "/", 60);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("NODE_ENV=development"), "{body}");
    let (status, body) = http_get_retry(8080, "/health", 10);
    assert_eq!((status, body.trim()), (200, "ok"));
    // nginx answers (not node directly): its Server header is on every response.
    let head = run_pipe(
        dir.path(),
        &["exec", "--", "curl", "-sI", "http://127.0.0.1/"],
        &[],
    );
    assert!(
        head.stdout.to_lowercase().contains("server: nginx"),
        "{}",
        head.stdout
    );
    // The precached dependencies were adopted, not downloaded again by the app layer.
    let mods = run_pipe(
        dir.path(),
        &["exec", "--", "ls", "/opt/app/node_modules"],
        &[],
    );
    mods.ok();
    assert!(mods.stdout.contains("ms"), "{}", mods.stdout);

    let again = run_pipe(dir.path(), &["up", "--local"], &[]);
    again.ok();
    assert!(again.stdout.contains("up to date"), "{}", again.stdout);
}
