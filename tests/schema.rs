//! The Pipelinefile's JSON Schema (`schema/pipelinefile.schema.json`) against the parser: the
//! file in the repository is the one `pipe schema` prints (`PIPE_BLESS=1` rewrites it), every
//! Pipelinefile the parser accepts is valid against it, and every one the parser rejects for
//! an unknown key is not.

use std::path::{Path, PathBuf};

const FILE: &str = "schema/pipelinefile.schema.json";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn validator() -> jsonschema::Validator {
    let schema: serde_json::Value = serde_json::from_str(&pipe::config::schema::render()).unwrap();
    jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
}

/// A Pipelinefile as the JSON value an editor validates.
fn as_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    serde_json::to_value(value).unwrap()
}

/// Every `Pipelinefile.toml` under `dir`.
fn pipelinefiles(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            pipelinefiles(&path, out);
        } else if path.file_name().is_some_and(|n| n == "Pipelinefile.toml") {
            out.push(path);
        }
    }
}

fn errors(v: &jsonschema::Validator, json: &serde_json::Value) -> Vec<String> {
    v.iter_errors(json)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn the_schema_in_the_repository_is_current() {
    let current = pipe::config::schema::render();
    let path = repo().join(FILE);
    if std::env::var_os("PIPE_BLESS").is_some() {
        std::fs::write(&path, &current).unwrap();
    }
    let kept = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        kept == current,
        "{FILE} is stale: run `cargo run -- schema > {FILE}` (or PIPE_BLESS=1 cargo test --test schema)"
    );
}

#[test]
fn the_schema_accepts_what_the_parser_accepts_and_rejects_unknown_keys() {
    let v = validator();
    let mut files = vec![repo().join("Pipelinefile.toml")];
    pipelinefiles(&repo().join("tests/pipelinefiles"), &mut files);
    let (mut valid, mut unknown_keys) = (0, 0);
    for path in &files {
        let shown = path.strip_prefix(repo()).unwrap().display().to_string();
        match pipe::config::load(path, &repo()) {
            Ok(_) => {
                let errs = errors(&v, &as_json(path));
                assert!(
                    errs.is_empty(),
                    "{shown} is valid but the schema says:\n{errs:#?}"
                );
                valid += 1;
            }
            Err(pipe::config::ConfigError::Invalid { diagnostics, .. }) => {
                let unknown = diagnostics
                    .iter()
                    .any(|d| d.message.starts_with("unknown key"));
                // Files that are not TOML at all have nothing to show an editor's schema.
                let Ok(text) = std::fs::read_to_string(path) else {
                    continue;
                };
                if !unknown || toml::from_str::<toml::Value>(&text).is_err() {
                    continue;
                }
                assert!(
                    !errors(&v, &as_json(path)).is_empty(),
                    "{shown} has an unknown key but the schema accepts it"
                );
                unknown_keys += 1;
            }
            Err(e) => panic!("{shown}: {e}"),
        }
    }
    // The repository's example and the good/ files; the bad/ files about unknown keys.
    assert!(valid >= 4, "only {valid} valid Pipelinefiles found");
    assert!(
        unknown_keys >= 3,
        "only {unknown_keys} with unknown keys found"
    );
}

#[test]
fn a_misspelt_key_is_rejected_where_it_is() {
    let v = validator();
    let mut json = as_json(&repo().join("Pipelinefile.toml"));
    assert!(errors(&v, &json).is_empty());
    let base = json["base"].as_object_mut().unwrap();
    let provision = base.remove("provision").unwrap();
    base.insert("provison".into(), provision);
    let errs = errors(&v, &json);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].contains("provison"), "{errs:#?}");
    assert!(errs[0].ends_with("at /base"), "{errs:#?}");

    // A wrong type and a misspelt key inside a provisioner are caught too.
    let mut json = as_json(&repo().join("Pipelinefile.toml"));
    json["service"][0]["port"] = serde_json::json!("8080");
    assert!(!errors(&v, &json).is_empty());
    let mut json = as_json(&repo().join("Pipelinefile.toml"));
    json["app"]["provision"][0]["too"] = serde_json::json!("/opt/app");
    assert!(!errors(&v, &json).is_empty());
}
