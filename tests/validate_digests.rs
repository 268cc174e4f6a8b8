//! `pipe validate --digests`, run as the real binary in a temp project.

use std::path::Path;
use std::process::{Command, Output};

const PIPELINEFILE: &str = r#"
[pipeline]
name = "shop"

[vars]
greeting = "hello"
token = { value = "s3cret-value", sensitive = true }

[box]
docker = { box = "debian-12" }
ec2 = { ami = "ami-0123456789abcdef0" }

[base]
provision = [{ shell = "provisioners/primal.sh" }]

[app]
provision = [
  { file = "app/", to = "/opt/app" },
  { inline = ["echo {{ vars.greeting }}"], env = { TOKEN = "{{ vars.token }}" } },
]

[env.dev]
target = "docker"

[env.staging]
target = "ec2"
region = "us-east-1"
vars = { greeting = "hi" }
"#;

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, content: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    };
    write("Pipelinefile.toml", PIPELINEFILE);
    write("boxes/debian-12.toml", "suite = \"bookworm\"\n");
    write("provisioners/primal.sh", "echo primal\n");
    write("app/index.html", "<h1>hi</h1>\n");
    dir
}

fn pipe(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pipe"))
        .args(args)
        .current_dir(dir)
        // Keep the per-machine key out of the real home, and the digests independent of it.
        .env("XDG_CONFIG_HOME", dir.join(".config"))
        .env("PIPE_DIGEST_KEY", "test-key")
        .env("NO_COLOR", "1")
        .env_remove("PIPE_VAR_greeting")
        .env_remove("PIPE_VAR_token")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn short(s: &str) -> bool {
    s.len() == 12 && s.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

/// `env <name> (<target>): base <12 hex> app <12 hex>[ checkpoint <12 hex>]` → (name, target,
/// base, app).
fn parse_line(line: &str) -> Option<(String, String, String, String)> {
    let rest = line.strip_prefix("env ")?;
    let (name, rest) = rest.split_once(" (")?;
    let (target, rest) = rest.split_once("): base ")?;
    let (base, app) = rest.split_once(" app ")?;
    let app = app.split_once(" checkpoint ").map_or(app, |(app, _)| app);
    (short(base) && short(app)).then(|| (name.into(), target.into(), base.into(), app.into()))
}

/// The `result` event of `--json` output.
fn result_event(out: &str) -> serde_json::Value {
    out.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["event"] == "result")
        .unwrap_or_else(|| panic!("no result event in:\n{out}"))
}

/// The short base digest on `env`'s line.
fn base_of(out: &str, env: &str) -> String {
    out.lines()
        .filter_map(parse_line)
        .find(|l| l.0 == env)
        .unwrap_or_else(|| panic!("no digests for env {env} in:\n{out}"))
        .2
}

/// The line's env name → its base's checkpoint (`... app <12 hex> checkpoint <12 hex>`), or
/// None when the line has none.
fn checkpoint_of(out: &str, env: &str) -> Option<String> {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("env {env} (")))
        .unwrap_or_else(|| panic!("no line for env {env} in:\n{out}"));
    let (_, c) = line.split_once(" checkpoint ")?;
    assert!(short(c), "{line}");
    Some(c.to_string())
}

#[test]
fn prints_one_line_per_environment() {
    let dir = project();
    let out = stdout(&pipe(dir.path(), &["validate", "--digests"]));
    let lines: Vec<_> = out.lines().filter_map(parse_line).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        (lines[0].0.as_str(), lines[0].1.as_str()),
        ("dev", "docker")
    );
    assert_eq!(
        (lines[1].0.as_str(), lines[1].1.as_str()),
        ("staging", "ec2")
    );
    assert_ne!(lines[0].2, lines[1].2, "docker and ec2 bases differ");
    assert!(!out.contains("s3cret-value"));

    // Deterministic across runs.
    let again = stdout(&pipe(dir.path(), &["validate", "--digests"]));
    assert_eq!(out, again);

    // Without --digests there are no digest lines.
    let plain = stdout(&pipe(dir.path(), &["validate"]));
    assert_eq!(plain.lines().filter_map(parse_line).count(), 0, "{plain}");
}

#[test]
fn env_selects_one_environment() {
    let dir = project();
    let out = stdout(&pipe(
        dir.path(),
        &["validate", "--digests", "--env", "staging"],
    ));
    let lines: Vec<_> = out.lines().filter_map(parse_line).collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(lines[0].0, "staging");
}

#[test]
fn json_has_the_full_digests() {
    let dir = project();
    let human = stdout(&pipe(dir.path(), &["validate", "--digests"]));
    let out = stdout(&pipe(dir.path(), &["validate", "--digests", "--json"]));
    let result = result_event(&out);
    assert_eq!(result["command"], "validate");
    let digests = result["data"]["digests"].as_array().expect("data.digests");
    assert_eq!(digests.len(), 2);
    for (d, line) in digests.iter().zip(human.lines().filter_map(parse_line)) {
        assert_eq!(d["env"], line.0.as_str());
        assert_eq!(d["target"], line.1.as_str());
        for (key, short) in [("base", &line.2), ("app", &line.3)] {
            let full = d[key].as_str().unwrap();
            assert_eq!(full.len(), "sha256:".len() + 64, "{full}");
            assert_eq!(&full["sha256:".len()..][..12], short.as_str());
        }
    }
}

#[test]
fn a_var_override_moves_the_app_digest() {
    let dir = project();
    let a = stdout(&pipe(
        dir.path(),
        &["validate", "--digests", "--env", "dev"],
    ));
    let b = stdout(&pipe(
        dir.path(),
        &[
            "validate",
            "--digests",
            "--env",
            "dev",
            "--var",
            "greeting=bye",
        ],
    ));
    let a = a.lines().find_map(parse_line).unwrap();
    let b = b.lines().find_map(parse_line).unwrap();
    assert_eq!(a.2, b.2, "base does not use the var");
    assert_ne!(a.3, b.3, "app does");
}

#[test]
fn the_key_file_is_created_when_no_key_is_set() {
    let dir = project();
    let o = Command::new(env!("CARGO_BIN_EXE_pipe"))
        .args(["validate", "--digests", "--env", "dev"])
        .current_dir(dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join(".config"))
        .env_remove("PIPE_DIGEST_KEY")
        .output()
        .unwrap();
    let out = stdout(&o);
    assert_eq!(out.lines().filter_map(parse_line).count(), 1, "{out}");
    let key = dir.path().join(".config/pipe/digest.key");
    assert!(key.is_file(), "{} was not created", key.display());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn an_ec2_ami_filter_needs_aws_and_validate_says_so_without_asking() {
    let dir = project();
    let pf = std::fs::read_to_string(dir.path().join("Pipelinefile.toml")).unwrap();
    std::fs::write(
        dir.path().join("Pipelinefile.toml"),
        pf.replace(
            r#"ec2 = { ami = "ami-0123456789abcdef0" }"#,
            r#"ec2 = { ami_filter = { name = "debian-12-amd64-*", owners = ["136693071363"] } }"#,
        ),
    )
    .unwrap();
    // No credentials and an endpoint nobody listens on: nothing may be asked.
    let out = Command::new(env!("CARGO_BIN_EXE_pipe"))
        .args(["validate", "--digests"])
        .current_dir(dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join(".config"))
        .env("PIPE_DIGEST_KEY", "test-key")
        .env("NO_COLOR", "1")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("env staging (ec2): unavailable (needs AWS: [box] ec2 is an ami_filter, which `pipe bake` resolves to an AMI id)"),
        "{text}"
    );
    assert!(text.contains("env dev (docker): base "), "{text}");
}

/// With `[base.precache]`, docker and qemu keep the base's provisioners as a checkpoint layer:
/// `--digests` shows its digest, which is the base digest of the same Pipelinefile without the
/// precache step, moves with a base provisioner and not with the precache files. EC2 builds
/// the base in one instance and shows none.
#[test]
fn a_precache_step_shows_the_checkpoint_where_the_target_keeps_one() {
    let dir = project();
    let root = dir.path();
    let plain = std::fs::read_to_string(root.join("Pipelinefile.toml")).unwrap();
    let with_qemu = plain.replace(
        "ec2 = { ami = ",
        "qemu = { box = \"debian-12\" }\nec2 = { ami = ",
    ) + "\n[env.vm]\ntarget = \"qemu\"\n";
    let precache = with_qemu.replace(
        "[app]",
        "[base.precache]\nfiles = [\"app/package.json\"]\nto = \"/opt/precache\"\nrun = \"true\"\n\n[app]",
    );
    std::fs::write(root.join("app/package.json"), "{\"name\": \"a\"}\n").unwrap();

    // Without a precache step there is no checkpoint, anywhere.
    std::fs::write(root.join("Pipelinefile.toml"), &with_qemu).unwrap();
    let without = stdout(&pipe(root, &["validate", "--digests"]));
    for env in ["dev", "vm", "staging"] {
        assert_eq!(checkpoint_of(&without, env), None, "{without}");
    }

    std::fs::write(root.join("Pipelinefile.toml"), &precache).unwrap();
    let out = stdout(&pipe(root, &["validate", "--digests"]));
    for env in ["dev", "vm"] {
        let c =
            checkpoint_of(&out, env).unwrap_or_else(|| panic!("no checkpoint for {env}:\n{out}"));
        assert_eq!(
            c,
            base_of(&without, env),
            "the checkpoint is the base without its precache step"
        );
        assert_ne!(
            base_of(&out, env),
            c,
            "the base itself covers the precache step"
        );
    }
    assert_eq!(checkpoint_of(&out, "staging"), None, "{out}");

    // JSON: the full checkpoint digest, or null.
    let json = stdout(&pipe(root, &["validate", "--digests", "--json"]));
    let result = result_event(&json);
    for d in result["data"]["digests"].as_array().unwrap() {
        let env = d["env"].as_str().unwrap();
        match checkpoint_of(&out, env) {
            Some(short) => assert_eq!(
                &d["checkpoint"].as_str().unwrap()["sha256:".len()..][..12],
                short
            ),
            None => assert!(d["checkpoint"].is_null(), "{d}"),
        }
    }

    // A dependency bump moves the base, not its checkpoint; a base provisioner moves both.
    std::fs::write(root.join("app/package.json"), "{\"name\": \"b\"}\n").unwrap();
    let bumped = stdout(&pipe(root, &["validate", "--digests", "--env", "dev"]));
    assert_eq!(checkpoint_of(&bumped, "dev"), checkpoint_of(&out, "dev"));
    assert_ne!(base_of(&bumped, "dev"), base_of(&out, "dev"));
    std::fs::write(root.join("provisioners/primal.sh"), "echo primal, edited\n").unwrap();
    let edited = stdout(&pipe(root, &["validate", "--digests", "--env", "dev"]));
    assert_ne!(checkpoint_of(&edited, "dev"), checkpoint_of(&bumped, "dev"));
    assert_ne!(base_of(&edited, "dev"), base_of(&bumped, "dev"));
}
