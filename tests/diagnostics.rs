//! Every Pipelinefile diagnostic, pinned byte for byte.
//!
//! Each folder under `tests/pipelinefiles/bad/` holds a broken `Pipelinefile.toml` (and any
//! files it refers to) and `expected.stderr`: what `pipe validate` prints there. Run with
//! `PIPE_BLESS=1` to (re)write the expected files, then review every one of them by eye.
//! Folders under `tests/pipelinefiles/good/` must validate.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn pipelinefiles(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/pipelinefiles")
        .join(kind);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Pipelinefile.toml").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// `pipe ARGS` in `dir`, with a host environment that cannot change the outcome.
fn pipe(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pipe"));
    cmd.args(args).current_dir(dir).env("NO_COLOR", "1");
    for (key, _) in std::env::vars() {
        if key.starts_with("PIPE_") {
            cmd.env_remove(key);
        }
    }
    cmd.output().expect("run pipe")
}

fn name(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn bad_pipelinefiles_report_every_problem_exactly() {
    let bless = std::env::var_os("PIPE_BLESS").is_some();
    let dirs = pipelinefiles("bad");
    assert!(dirs.len() >= 30, "only {} bad Pipelinefiles", dirs.len());
    let mut failures = Vec::new();
    for dir in &dirs {
        let out = pipe(dir, &["validate"]);
        let stderr = String::from_utf8(out.stderr).expect("utf-8 stderr");
        let expected_path = dir.join("expected.stderr");
        if out.status.code() != Some(3) {
            failures.push(format!(
                "{}: exit code {:?}, expected 3\n{stderr}",
                name(dir),
                out.status.code()
            ));
            continue;
        }
        if bless {
            std::fs::write(&expected_path, &stderr).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if stderr != expected {
            failures.push(format!(
                "{}: stderr differs\n--- expected\n{expected}--- actual\n{stderr}",
                name(dir)
            ));
        }
        assert!(out.stdout.is_empty(), "{}: nothing on stdout", name(dir));
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed (PIPE_BLESS=1 rewrites the expected files):\n\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
}

#[test]
fn good_pipelinefiles_validate() {
    let dirs = pipelinefiles("good");
    assert!(!dirs.is_empty());
    for dir in dirs {
        let out = pipe(&dir, &["validate"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}:\n{}",
            name(&dir),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            stdout.starts_with("Pipelinefile.toml is valid: pipeline `"),
            "{}: {stdout}",
            name(&dir)
        );
    }
}

#[test]
fn the_repositorys_own_pipelinefile_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = pipe(root, &["validate", "-f", "Pipelinefile.toml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn json_reports_one_event_per_problem_with_its_location() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pipelinefiles/json");
    let out = pipe(&dir, &["validate", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let events: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let diagnostics: Vec<(String, u64, u64, String)> = events
        .iter()
        .filter(|e| e["event"] == "diagnostic")
        .map(|e| {
            (
                e["file"].as_str().unwrap().to_string(),
                e["line"].as_u64().unwrap(),
                e["column"].as_u64().unwrap(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let f = "Pipelinefile.toml".to_string();
    assert_eq!(
        diagnostics,
        vec![
            (
                f.clone(),
                2,
                8,
                "invalid pipeline name `Bad Name`".to_string()
            ),
            (
                f.clone(),
                5,
                1,
                "unknown key `provison` in [base]".to_string()
            ),
            (f.clone(), 10, 10, "unknown target `dokcer`".to_string()),
        ]
    );
    assert_eq!(
        events[1]["hint"].as_str(),
        Some("did you mean `provision`?"),
        "hints travel with the event"
    );
    let last = events.last().unwrap();
    assert_eq!(last["event"], "error");
    assert_eq!(last["exit_code"], 3);
    assert!(out.stderr.is_empty(), "JSON mode keeps stderr quiet");
}
