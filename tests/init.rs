//! `pipe init` writes a Pipelinefile that validates in a fresh folder, and never overwrites.

use std::path::Path;
use std::process::{Command, Output};

fn pipe(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pipe"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run pipe")
}

#[test]
fn init_then_validate_then_init_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("My Site");
    std::fs::create_dir(&dir).unwrap();

    let out = pipe(&dir, &["init"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "wrote Pipelinefile.toml, boxes/debian-12.toml and pipelinefile.schema.json for pipeline `my-site`; next: pipe validate, then pipe up --local\n"
    );
    let written = std::fs::read_to_string(dir.join("Pipelinefile.toml")).unwrap();
    assert!(written.contains("name = \"my-site\""));
    // Editors find the schema through taplo's `#:schema` line, on the file's first line.
    assert!(
        written.starts_with("#:schema ./pipelinefile.schema.json\n"),
        "{written}"
    );
    let schema = std::fs::read_to_string(dir.join("pipelinefile.schema.json")).unwrap();
    assert_eq!(
        schema,
        String::from_utf8(pipe(&dir, &["schema"]).stdout).unwrap()
    );
    assert!(dir.join("boxes/debian-12.toml").is_file());

    let out = pipe(&dir, &["validate"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Pipelinefile.toml is valid: pipeline `my-site`, environments: dev\n"
    );

    std::fs::write(dir.join("Pipelinefile.toml"), "# mine\n").unwrap();
    let out = pipe(&dir, &["init"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: Pipelinefile.toml already exists here; pipe init never overwrites\n  hint: edit it, or remove it first to start over\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("Pipelinefile.toml")).unwrap(),
        "# mine\n"
    );
}

#[test]
fn init_keeps_an_existing_box_recipe_and_takes_a_name() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("boxes")).unwrap();
    std::fs::write(tmp.path().join("boxes/debian-12.toml"), "# my recipe\n").unwrap();
    let out = pipe(tmp.path(), &["init", "--name", "shop"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "wrote Pipelinefile.toml and pipelinefile.schema.json for pipeline `shop`; next: pipe validate, then pipe up --local\n"
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("boxes/debian-12.toml")).unwrap(),
        "# my recipe\n"
    );
    assert_eq!(pipe(tmp.path(), &["validate"]).status.code(), Some(0));
}

#[test]
fn init_refuses_an_invalid_name() {
    let tmp = tempfile::tempdir().unwrap();
    let out = pipe(tmp.path(), &["init", "--name", "My Shop"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: invalid pipeline name `My Shop`\n  hint: use lowercase letters, digits and `-`, e.g. `--name my-shop`\n"
    );
    assert!(!tmp.path().join("Pipelinefile.toml").exists());
}
