//! Finding and loading the Pipelinefile, the typed model it becomes, and `pipe validate`'s
//! handling of `--var`, `--env` and unset host variables.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pipe::config::{self, BoxSource, ConfigError, ProvisionerKind, ProxyMode, ShellSource};
use pipe::config::{TargetKind, TargetSettings, VarSource};

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

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn good(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/pipelinefiles/good")
        .join(name)
}

/// A temp folder with `Pipelinefile.toml` = `text`.
fn project(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Pipelinefile.toml"), text).unwrap();
    dir
}

#[test]
fn the_model_holds_what_the_file_says() {
    let dir = good("03-everything");
    let pf = config::load(&dir.join("Pipelinefile.toml"), &dir).unwrap();
    assert_eq!(pf.root, dir);
    assert_eq!(pf.pipeline.name.value, "everything-2");
    assert_eq!(pf.pipeline.description.as_deref(), Some("all the keys"));

    assert_eq!(pf.vars["workers"].source, VarSource::Value("4".into()));
    assert_eq!(pf.vars["debug"].source, VarSource::Value("false".into()));
    assert_eq!(
        pf.vars["nginx_workers"].description.as_deref(),
        Some("workers")
    );
    assert!(pf.vars["api_token"].sensitive);
    assert_eq!(
        pf.vars["api_token"].source,
        VarSource::Env {
            name: "PIPE_TEST_SURELY_UNSET_TOKEN".into(),
            default: Some("dev".into())
        }
    );

    assert_eq!(
        pf.boxes.get(TargetKind::Docker).unwrap().value,
        BoxSource::Recipe("debian-12".into())
    );
    assert_eq!(
        pf.boxes.get(TargetKind::Qemu).unwrap().value,
        BoxSource::CloudImage {
            image: "images/debian-12.qcow2".into(),
            // Lowercased.
            checksum: Some(
                "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8".into()
            )
        }
    );
    assert_eq!(
        pf.boxes.get(TargetKind::Ec2).unwrap().value,
        BoxSource::AmiFilter {
            name: "debian-12-amd64-*".into(),
            owners: vec!["136693071363".into()]
        }
    );
    assert_eq!(
        pf.build.proxy,
        ProxyMode::Explicit {
            http: Some("http://127.0.0.1:3128".into()),
            https: Some("http://127.0.0.1:3128".into()),
            no_proxy: Some("localhost".into()),
        }
    );

    let precache = pf.base.precache.as_ref().unwrap();
    assert_eq!(precache.files.len(), 2);
    assert_eq!(precache.to, "/opt/precache");
    assert_eq!(precache.run.raw, "npm ci --omit=dev");
    assert_eq!(precache.env["NODE_ENV"].raw, "{{ vars.node_env }}");

    let ProvisionerKind::Shell(shell) = &pf.base.provision[0].kind else {
        panic!("a shell provisioner first");
    };
    assert!(matches!(&shell.source, ShellSource::Script(s) if s.value == "provisioners/primal.sh"));
    assert_eq!(shell.retries, 2);
    assert_eq!(shell.valid_exit_codes, vec![0, 3]);
    assert_eq!(shell.timeout, Some(600));
    assert_eq!(shell.run_as.as_deref(), Some("root"));
    let ProvisionerKind::Ansible {
        playbook,
        extra_vars,
        env,
    } = &pf.base.provision[1].kind
    else {
        panic!("then ansible");
    };
    assert_eq!(playbook.value, "playbooks/site.yml");
    assert_eq!(extra_vars["env"].raw, "{{ environment }}");
    assert_eq!(env["ANSIBLE_NOCOLOR"].raw, "1");

    let ProvisionerKind::File {
        source, to, owner, ..
    } = &pf.app.provision[0].kind
    else {
        panic!("a file provisioner first");
    };
    assert_eq!(source.value, "app/");
    assert_eq!(to.raw, "/opt/{{ pipeline.name }}");
    assert_eq!(owner.as_deref(), Some("app"));
    let ProvisionerKind::Shell(inline) = &pf.app.provision[2].kind else {
        panic!("inline last");
    };
    let ShellSource::Inline(commands) = &inline.source else {
        panic!("inline commands");
    };
    assert_eq!(commands.len(), 3);
    assert_eq!(inline.retries, 0);
    assert_eq!(inline.valid_exit_codes, vec![0]);
    assert_eq!(inline.timeout, None);

    let names: Vec<&str> = pf.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["app", "nginx", "worker"]);
    assert_eq!(pf.services[0].published_port(), None, "publish = false");
    assert_eq!(pf.services[1].published_port(), Some(8080));
    assert!(
        pf.services[1].publish,
        "publish defaults to true with a port"
    );
    assert!(!pf.services[2].publish, "and to false without one");

    assert_eq!(pf.verify.timeout, 30);
    assert_eq!(pf.verify.http[0].status, 200);
    assert_eq!(pf.verify.http[1].status, 200);
    assert!(pf.verify.http[1].contains.is_none());

    let envs: Vec<&str> = pf.envs.keys().map(String::as_str).collect();
    assert_eq!(envs, ["dev", "vm", "staging", "production"]);
    let TargetSettings::Qemu(q) = &pf.envs["vm"].settings else {
        panic!("vm is qemu");
    };
    assert_eq!((q.cpus, q.memory, q.accel.as_str()), (2, 2048, "tcg"));
    assert_eq!(q.disk_size.as_deref(), Some("8G"));
    assert_eq!(pf.envs["staging"].vars["workers"].value, "8");
    assert_eq!(pf.envs["dev"].vars["debug"].value, "true");
    assert_eq!(
        pf.envs["production"].promote_from.as_ref().unwrap().value,
        "staging"
    );
    let TargetSettings::Ec2(ec2) = &pf.envs["production"].settings else {
        panic!("production is ec2");
    };
    assert_eq!(
        ec2.ssm_parameter.as_deref(),
        Some("/everything/production/ami")
    );
    assert_eq!(ec2.region, None);
    // The trailing `/` of the prefix is not part of it.
    assert_eq!(
        pf.ledger,
        config::LedgerSettings::S3(config::S3LedgerSettings {
            bucket: "everything-ledger".into(),
            prefix: "pipe/everything".into(),
            region: Some("eu-west-1".into()),
            endpoint_url: Some("http://127.0.0.1:5000".into()),
        })
    );
}

#[test]
fn the_source_is_kept_for_later_diagnostics() {
    let dir = good("01-minimal");
    let pf = config::load(&dir.join("Pipelinefile.toml"), &dir).unwrap();
    assert_eq!(pf.source, "[pipeline]\nname = \"minimal\"\n");
    assert_eq!(
        &pf.source[pf.pipeline.name.span.start..pf.pipeline.name.span.end],
        "\"minimal\""
    );
}

#[test]
fn promotion_gates_are_part_of_an_environment() {
    let dir = project(
        r#"[pipeline]
name = "gates"

[box]
docker = { image = "debian:bookworm" }

[env.staging]
target = "docker"

[env.production]
target = "docker"
promote_from = "staging"
min_soak = "1h30m"
require_approval = true
"#,
    );
    let pf = config::load(&dir.path().join("Pipelinefile.toml"), dir.path()).unwrap();
    let prod = &pf.envs["production"];
    let soak = prod.min_soak.as_ref().expect("min_soak");
    assert_eq!(soak.value, std::time::Duration::from_secs(5_400));
    assert_eq!(&pf.source[soak.span.start..soak.span.end], "\"1h30m\"");
    assert!(prod.require_approval);
    let staging = &pf.envs["staging"];
    assert!(staging.min_soak.is_none() && !staging.require_approval);
}

#[test]
fn load_reports_every_problem_with_the_path_as_shown() {
    let dir = project("[pipeline]\nname = \"X\"\n[base]\nprovison = []\n");
    let err = config::load(&dir.path().join("Pipelinefile.toml"), dir.path()).unwrap_err();
    let ConfigError::Invalid {
        diagnostics,
        rendered,
    } = err
    else {
        panic!("invalid");
    };
    assert_eq!(diagnostics.len(), 2);
    assert!(
        rendered.contains(" --> Pipelinefile.toml:2:8\n"),
        "{rendered}"
    );
    assert!(
        rendered.ends_with("error: Pipelinefile.toml has 2 errors\n"),
        "{rendered}"
    );
}

#[test]
fn finds_the_pipelinefile_in_a_parent_folder() {
    let dir = project("[pipeline]\nname = \"parent\"\n");
    let sub = dir.path().join("a/b");
    std::fs::create_dir_all(&sub).unwrap();
    let out = pipe(&sub, &["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("is valid: pipeline `parent`"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        config::find(&sub),
        Some(dir.path().join("Pipelinefile.toml"))
    );
}

#[test]
fn dash_f_takes_an_explicit_file_and_paths_resolve_next_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("deploy");
    std::fs::create_dir_all(sub.join("scripts")).unwrap();
    std::fs::write(sub.join("scripts/setup.sh"), "true\n").unwrap();
    std::fs::write(
        sub.join("other.toml"),
        "[pipeline]\nname = \"explicit\"\n[base]\nprovision = [{ shell = \"scripts/setup.sh\" }]\n",
    )
    .unwrap();
    // A Pipelinefile here that would fail: -f must win over discovery.
    std::fs::write(dir.path().join("Pipelinefile.toml"), "broken = [").unwrap();
    for args in [
        ["-f", "deploy/other.toml", "validate"],
        ["validate", "-f", "deploy/other.toml"],
    ] {
        let out = pipe(dir.path(), &args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(
            stdout(&out),
            "deploy/other.toml is valid: pipeline `explicit`, environments: none\n"
        );
    }
    // Diagnostics name the file as given.
    std::fs::write(sub.join("bad.toml"), "[pipeline]\nname = \"Bad\"\n").unwrap();
    let out = pipe(dir.path(), &["validate", "-f", "deploy/bad.toml"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains(" --> deploy/bad.toml:2:8\n"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn no_pipelinefile_anywhere_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let out = pipe(dir.path(), &["validate"]);
    // A usage error: exit code 3 means problems listed with file:line:column.
    assert_eq!(out.status.code(), Some(2));
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(
        stderr(&out).replace(&cwd.display().to_string(), "[TMP]"),
        "error: no Pipelinefile.toml in [TMP] or any parent folder\n"
    );
}

#[test]
fn dash_f_to_a_missing_file_cannot_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = pipe(dir.path(), &["validate", "-f", "nope.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(
        stderr(&out).replace(&cwd.display().to_string(), "[TMP]"),
        "error: cannot read [TMP]/nope.toml: No such file or directory (os error 2)\n"
    );
}

const WITH_VARS: &str = r#"
[pipeline]
name = "vars"

[vars]
node_env = "development"
token = { env = "PIPE_TEST_TOKEN_NEVER_SET", sensitive = true }

[box]
docker = { image = "debian:bookworm" }

[env.dev]
target = "docker"

[env.staging]
target = "docker"
"#;

#[test]
fn validate_rejects_an_undeclared_dash_dash_var() {
    let dir = project(WITH_VARS);
    let out = pipe(
        dir.path(),
        &["validate", "--var", "nod_env=x", "--var", "token=t"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: `--var nod_env` sets a var that [vars] does not declare\n  hint: did you mean `node_env`?\n"
    );
}

#[test]
fn validate_rejects_an_unknown_environment() {
    let dir = project(WITH_VARS);
    let out = pipe(
        dir.path(),
        &["validate", "--env", "stagign", "--var", "token=t"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: unknown environment `stagign`\n  hint: did you mean `staging`?\n"
    );
}

#[test]
fn an_unset_host_variable_is_only_a_warning_for_validate() {
    let dir = project(WITH_VARS);
    let out = pipe(dir.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "warning: var `token` reads host variable PIPE_TEST_TOKEN_NEVER_SET, which is unset\n  hint: commands that use it will fail until you export PIPE_TEST_TOKEN_NEVER_SET or pass `--var token=...`\n"
    );
    let out = pipe(dir.path(), &["validate", "--var", "token=t"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr(&out), "");
}

/// What sits where the Pipelinefile should be is the Pipelinefile: a directory or a dangling
/// symlink there is an error, never a reason to use a parent folder's; a FIFO or a device is
/// refused without being read (no hang, no endless read), and so is a huge file.
#[test]
fn special_files_are_refused_clearly_and_quickly() {
    let parent = tempfile::tempdir().unwrap();
    std::fs::write(
        parent.path().join("Pipelinefile.toml"),
        "[pipeline]\nname = \"parent\"\n",
    )
    .unwrap();
    let child = parent.path().join("child");
    std::fs::create_dir_all(child.join("Pipelinefile.toml")).unwrap();
    let out = pipe(&child, &["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is a directory"), "{}", stderr(&out));

    std::fs::remove_dir(child.join("Pipelinefile.toml")).unwrap();
    std::os::unix::fs::symlink("missing.toml", child.join("Pipelinefile.toml")).unwrap();
    let out = pipe(&child, &["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("a symlink to a missing file"),
        "{}",
        stderr(&out)
    );

    let fifo = child.join("fifo.toml");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let started = std::time::Instant::now();
    let out = pipe(&child, &["validate", "-f", "fifo.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("FIFO"), "{}", stderr(&out));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "no hang"
    );

    let out = pipe(&child, &["validate", "-f", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("device"), "{}", stderr(&out));

    let big = child.join("big.toml");
    std::fs::write(&big, vec![b'#'; 5 << 20]).unwrap();
    let out = pipe(&child, &["validate", "-f", "big.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("at most 4194304 bytes"),
        "{}",
        stderr(&out)
    );

    let bad = child.join("latin1.toml");
    std::fs::write(&bad, b"[pipeline]\nname = \"caf\xe9\"\n").unwrap();
    let out = pipe(&child, &["validate", "-f", "latin1.toml"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("error: invalid UTF-8\n --> latin1.toml:2:12"),
        "{}",
        stderr(&out)
    );
}

/// With `--json`, a command line clap refuses is one JSON error event on stdout, exit 2.
#[test]
fn json_usage_errors_are_json_events() {
    let dir = tempfile::tempdir().unwrap();
    let out = pipe(dir.path(), &["--json", "up", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let event: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(event["event"], "error");
    assert_eq!(event["exit_code"], 2);
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .contains("--no-such-flag"),
        "{event}"
    );
    // Without --json, clap's own message on stderr.
    let out = pipe(dir.path(), &["up", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("unexpected argument"),
        "{}",
        stderr(&out)
    );
}
