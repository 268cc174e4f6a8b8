//! Layer digests, computed from real Pipelinefiles in temp folders: what must change them and
//! what must not.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pipe::config::{self, Pipelinefile, TargetKind};
use pipe::layers::{
    DigestError, DigestInputs, DigestKey, HostEnv, LayerDigests, VarValue, compute,
    compute_with_transcripts,
};

const PIPELINEFILE: &str = r#"
[pipeline]
name = "shop"

[vars]
node_env = "development"
workers = { value = "2", description = "worker processes" }
unused = "not referenced anywhere"
api_token = { value = "s3cret-token-value", sensitive = true }

[box]
docker = { box = "debian-12" }
ec2 = { ami = "ami-0123456789abcdef0" }

[base]
precache = { files = ["app/package.json"], run = "npm ci --prefix /opt/precache" }
provision = [
  { shell = "provisioners/primal.sh", env = { WORKERS = "{{ vars.workers }}" } },
  { inline = ["echo base-two"] },
]

[app]
provision = [
  { file = "app/", to = "/opt/app" },
  { shell = "provisioners/carnivore.sh", env = { NODE_ENV = "{{ vars.node_env }}", TOKEN = "{{ vars.api_token }}" }, retries = 1, timeout = 30 },
]

[[service]]
name = "web"
command = "node /opt/app/server.js"
port = 8080

[env.dev]
target = "docker"

[env.staging]
target = "ec2"
region = "us-east-1"
vars = { node_env = "staging" }
"#;

/// A project folder with a Pipelinefile and the files it names.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Self {
        Self::with(PIPELINEFILE)
    }

    fn with(pipelinefile: &str) -> Self {
        let p = Project {
            dir: tempfile::tempdir().unwrap(),
        };
        p.write("Pipelinefile.toml", pipelinefile);
        p.write("boxes/debian-12.toml", "suite = \"bookworm\"\n");
        p.write("app/package.json", "{\"name\": \"shop\"}\n");
        p.write("app/server.js", "console.log('hi')\n");
        p.write("app/lib/util.js", "module.exports = 1\n");
        p.write("app/.pipeignore", "*.log\n");
        p.write("app/debug.log", "noise\n");
        p.write("provisioners/primal.sh", "apt-get install -y nodejs\n");
        p.write(
            "provisioners/carnivore.sh",
            "cd /opt/app && npm start --dry-run\n",
        );
        p
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, content: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn chmod(&self, rel: &str, mode: u32) {
        std::fs::set_permissions(self.path(rel), std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Rewrites the Pipelinefile with `from` replaced by `to` (which must occur).
    fn edit(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(self.path("Pipelinefile.toml")).unwrap();
        assert!(text.contains(from), "the Pipelinefile has no `{from}`");
        self.write("Pipelinefile.toml", &text.replacen(from, to, 1));
    }

    fn load(&self) -> Pipelinefile {
        match config::load(&self.path("Pipelinefile.toml"), self.dir.path()) {
            Ok(pf) => pf,
            Err(e) => panic!("the test Pipelinefile does not load:\n{e}"),
        }
    }

    /// Inputs as a run would build them, with everything outside the project fixed.
    fn inputs(&self, pf: &Pipelinefile, env: &str) -> DigestInputs {
        let target = pf.envs[env].target.value;
        let mut inputs =
            pipe::plan::digest_inputs(pf, target, HostEnv::Fixed(BTreeMap::new())).unwrap();
        inputs.vars = resolve_vars(pf, env);
        inputs.timestamp = "20250101000000".into();
        inputs.git_commit = "abc1234".into();
        inputs.key = Some(DigestKey::from_text("test-digest-key"));
        inputs
    }

    fn digests(&self, env: &str) -> LayerDigests {
        let pf = self.load();
        compute(&pf, env, &self.inputs(&pf, env)).unwrap()
    }

    fn digests_with(&self, env: &str, f: impl FnOnce(&mut DigestInputs)) -> LayerDigests {
        let pf = self.load();
        let mut inputs = self.inputs(&pf, env);
        f(&mut inputs);
        // What the box and the kept build trust resolve to follows the changed target and host
        // environment, as in a run.
        let (identity, trust) =
            pipe::plan::resolve_digest_host(&pf, inputs.target, &inputs.host_env).unwrap();
        inputs.box_identity = identity;
        inputs.kept_trust = trust;
        compute(&pf, env, &inputs).unwrap()
    }
}

/// `[vars]` overlaid with `[env.NAME].vars` (no host variables in these tests).
fn resolve_vars(pf: &Pipelinefile, env: &str) -> BTreeMap<String, VarValue> {
    let resolved = config::vars::resolve(pf, Some(env), &[], &|_| None).unwrap();
    resolved
        .vars
        .iter()
        .map(|(name, v)| {
            (
                name.clone(),
                VarValue {
                    value: v.value.clone(),
                    sensitive: v.sensitive,
                },
            )
        })
        .collect()
}

/// Runs `change` and says which layers' digests moved.
fn moved(p: &Project, env: &str, change: impl FnOnce(&Project)) -> (bool, bool) {
    let before = p.digests(env);
    change(p);
    let after = p.digests(env);
    (before.base != after.base, before.app != after.app)
}

const APP_ONLY: (bool, bool) = (false, true);
const BOTH: (bool, bool) = (true, true);
const NEITHER: (bool, bool) = (false, false);

#[test]
fn digests_are_stable_and_well_formed() {
    let p = Project::new();
    let a = p.digests("dev");
    let b = p.digests("dev");
    assert_eq!(a, b);
    assert_ne!(a.base, a.app);
    for d in [a.base, a.app] {
        let s = d.to_string();
        assert!(s.starts_with("sha256:"), "{s}");
        assert_eq!(s.len(), 7 + 64);
        assert!(
            s[7..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(d.short(), &s[7..19]);
        assert_eq!(s.parse::<pipe::layers::Digest>().unwrap(), d);
    }
}

#[test]
fn an_uploaded_file_content_change_moves_only_the_app() {
    let p = Project::new();
    assert_eq!(
        moved(&p, "dev", |p| p
            .write("app/server.js", "console.log('bye')\n")),
        APP_ONLY
    );
}

#[test]
fn an_uploaded_file_mode_change_moves_the_app() {
    let p = Project::new();
    p.chmod("app/server.js", 0o644);
    assert_eq!(
        moved(&p, "dev", |p| p.chmod("app/server.js", 0o755)),
        APP_ONLY
    );
}

#[test]
fn a_file_added_to_an_uploaded_folder_moves_the_app() {
    let p = Project::new();
    assert_eq!(
        moved(&p, "dev", |p| p.write("app/lib/new.js", "x\n")),
        APP_ONLY
    );
}

#[test]
fn touching_a_file_changes_nothing() {
    let p = Project::new();
    let touch = |p: &Project| {
        for rel in [
            "app/server.js",
            "app/package.json",
            "provisioners/primal.sh",
        ] {
            let f = std::fs::File::options()
                .write(true)
                .open(p.path(rel))
                .unwrap();
            let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
            f.set_modified(later).unwrap();
        }
    };
    assert_eq!(moved(&p, "dev", touch), NEITHER);
}

#[test]
fn a_pipeignored_file_changes_nothing() {
    let p = Project::new();
    assert_eq!(
        moved(&p, "dev", |p| {
            p.write("app/debug.log", "other noise\n");
            p.write("app/lib/trace.log", "new ignored file\n");
        }),
        NEITHER
    );
    // Ignoring it is what makes the difference: un-ignore and it counts.
    assert_eq!(
        moved(&p, "dev", |p| p.write("app/.pipeignore", "")),
        APP_ONLY
    );
}

#[test]
fn a_used_var_in_vars_moves_the_layers_that_use_it() {
    let p = Project::new();
    // `node_env` is used only by an app provisioner.
    assert_eq!(
        moved(&p, "dev", |p| p
            .edit(r#"node_env = "development""#, r#"node_env = "test""#)),
        APP_ONLY
    );
    // `workers` is used by a base provisioner: the app follows its base.
    assert_eq!(
        moved(&p, "dev", |p| p.edit(r#"value = "2""#, r#"value = "3""#)),
        BOTH
    );
}

#[test]
fn a_used_var_in_env_vars_moves_only_that_environment() {
    let p = Project::new();
    let dev = p.digests("dev");
    assert_eq!(
        moved(&p, "staging", |p| p.edit(
            r#"vars = { node_env = "staging" }"#,
            r#"vars = { node_env = "staging-2" }"#
        )),
        APP_ONLY
    );
    assert_eq!(p.digests("dev"), dev);
}

#[test]
fn an_unused_var_changes_nothing() {
    let p = Project::new();
    assert_eq!(
        moved(&p, "dev", |p| p.edit(
            r#"unused = "not referenced anywhere""#,
            r#"unused = "something else""#
        )),
        NEITHER
    );
}

#[test]
fn editing_a_script_moves_its_layer() {
    let p = Project::new();
    assert_eq!(
        moved(&p, "dev", |p| p.write(
            "provisioners/carnivore.sh",
            "cd /opt/app && npm start\n"
        )),
        APP_ONLY
    );
    assert_eq!(
        moved(&p, "dev", |p| p.write(
            "provisioners/primal.sh",
            "apt-get install -y nodejs npm\n"
        )),
        BOTH
    );
}

#[test]
fn provisioner_order_counts() {
    let p = Project::new();
    assert_eq!(
        moved(&p, "dev", |p| p.edit(
            r#"  { shell = "provisioners/primal.sh", env = { WORKERS = "{{ vars.workers }}" } },
  { inline = ["echo base-two"] },"#,
            r#"  { inline = ["echo base-two"] },
  { shell = "provisioners/primal.sh", env = { WORKERS = "{{ vars.workers }}" } },"#
        )),
        BOTH
    );
}

#[test]
fn the_box_recipe_moves_both_layers() {
    let p = Project::new();
    assert_eq!(
        moved(&p, "dev", |p| p
            .write("boxes/debian-12.toml", "suite = \"trixie\"\n")),
        BOTH
    );
}

#[test]
fn a_precache_file_moves_base_and_app() {
    let p = Project::new();
    assert_eq!(
        moved(&p, "dev", |p| p.write(
            "app/package.json",
            "{\"name\": \"shop\", \"version\": \"2\"}\n"
        )),
        BOTH
    );
}

/// The base's checkpoint (its provisioners without the precache step) is what the base would
/// be with no precache step: a precache input leaves it, a base provisioner moves it.
#[test]
fn the_checkpoint_is_the_base_without_its_precache_step() {
    let p = Project::new();
    let before = p.digests("dev");
    let checkpoint = before.checkpoint.expect("the base has a precache step");
    assert_ne!(checkpoint, before.base);

    p.write(
        "app/package.json",
        "{\"name\": \"shop\", \"version\": \"2\"}\n",
    );
    let bumped = p.digests("dev");
    assert_ne!(bumped.base, before.base);
    assert_eq!(
        bumped.checkpoint,
        Some(checkpoint),
        "a dependency bump keeps it"
    );

    p.edit(
        r#"inline = ["echo base-two"]"#,
        r#"inline = ["echo base-2"]"#,
    );
    let edited = p.digests("dev");
    assert_ne!(
        edited.checkpoint,
        Some(checkpoint),
        "a base provisioner moves it"
    );

    p.edit(
        r#"precache = { files = ["app/package.json"], run = "npm ci --prefix /opt/precache" }"#,
        "",
    );
    let without = p.digests("dev");
    assert_eq!(without.checkpoint, None);
    assert_eq!(Some(without.base), edited.checkpoint);
}

#[test]
fn a_sensitive_var_enters_only_as_an_hmac() {
    let p = Project::new();
    assert_eq!(
        moved(&p, "dev", |p| p.edit(
            r#"value = "s3cret-token-value""#,
            r#"value = "an0ther-secret""#
        )),
        APP_ONLY
    );

    let pf = p.load();
    let inputs = p.inputs(&pf, "dev");
    let (digests, transcripts) = compute_with_transcripts(&pf, "dev", &inputs).unwrap();
    assert_eq!(digests, compute(&pf, "dev", &inputs).unwrap());
    let contains =
        |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    for t in [&transcripts.base, &transcripts.app] {
        assert!(
            !contains(t, "an0ther-secret"),
            "the clear value entered a digest"
        );
    }
    // The non-sensitive values do enter in clear, so the search above can find values.
    assert!(contains(&transcripts.app, "development"));
    assert!(contains(&transcripts.app, "hmac-sha256"));

    // Same value, another key: another digest (the keyed path is taken).
    let other_key = p.digests_with("dev", |i| i.key = Some(DigestKey::from_text("other-key")));
    assert_eq!(other_key.base, digests.base);
    assert_ne!(other_key.app, digests.app);

    // No key at all: an error naming the var, not a silent plain hash.
    let mut keyless = inputs.clone();
    keyless.key = None;
    match compute(&pf, "dev", &keyless) {
        Err(e @ DigestError::MissingKey { .. }) => {
            assert!(e.to_string().contains("api_token"), "{e}");
            assert!(e.hint().is_some());
        }
        other => panic!("expected MissingKey, got {other:?}"),
    }
}

#[test]
fn reordering_keys_and_tables_changes_nothing() {
    let p = Project::new();
    let before = p.digests("dev");
    p.write(
        "Pipelinefile.toml",
        r#"
[env.staging]
vars = { node_env = "staging" }
region = "us-east-1"
target = "ec2"

[env.dev]
target = "docker"

[[service]]
port = 8080
command = "node /opt/app/server.js"
name = "web"

[app]
provision = [
  { to = "/opt/app", file = "app/" },
  { timeout = 30, retries = 1, env = { TOKEN = "{{ vars.api_token }}", NODE_ENV = "{{ vars.node_env }}" }, shell = "provisioners/carnivore.sh" },
]

[base]
provision = [
  { env = { WORKERS = "{{ vars.workers }}" }, shell = "provisioners/primal.sh" },
  { inline = ["echo base-two"] },
]
precache = { run = "npm ci --prefix /opt/precache", files = ["app/package.json"] }

[box]
ec2 = { ami = "ami-0123456789abcdef0" }
docker = { box = "debian-12" }

[vars]
api_token = { sensitive = true, value = "s3cret-token-value" }
unused = "not referenced anywhere"
workers = { description = "worker processes", value = "2" }
node_env = "development"

[pipeline]
name = "shop"
"#,
    );
    assert_eq!(p.digests("dev"), before);
}

#[test]
fn comments_and_whitespace_change_nothing() {
    let p = Project::new();
    let before = p.digests("dev");
    let text = std::fs::read_to_string(p.path("Pipelinefile.toml")).unwrap();
    let noisy: String = text
        .lines()
        .map(|l| {
            if l.starts_with('[') {
                format!("# a comment above\n\n{l}    # and beside\n")
            } else if l.contains(" = ") && !l.starts_with(' ') {
                format!("{}\n", l.replacen(" = ", "   =   ", 1))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_ne!(noisy, text);
    p.write("Pipelinefile.toml", &noisy);
    assert_eq!(p.digests("dev"), before);
}

#[test]
fn retries_and_timeout_change_nothing() {
    let p = Project::new();
    assert_eq!(
        moved(&p, "dev", |p| p.edit(
            "retries = 1, timeout = 30",
            "retries = 5, timeout = 600"
        )),
        NEITHER
    );
}

#[test]
fn the_target_kind_comes_from_the_caller() {
    let p = Project::new();
    let dev = p.digests("dev");
    let staging = p.digests("staging");
    assert_ne!(dev.base, staging.base, "ec2 and docker bases differ");
    // `up --local` on staging builds on docker: same base as dev (no var of the base differs),
    // its own app (node_env differs).
    let local = p.digests_with("staging", |i| i.target = TargetKind::Docker);
    assert_eq!(local.base, dev.base);
    assert_ne!(local.app, dev.app);
}

#[test]
fn a_timestamp_reference_is_never_reused() {
    let p = Project::new();
    p.edit("echo base-two", "echo built at {{ timestamp }}");
    let a = p.digests_with("dev", |i| i.timestamp = "20250101000000".into());
    let b = p.digests_with("dev", |i| i.timestamp = "20250101000001".into());
    assert_ne!(a.base, b.base);
    assert_ne!(a.app, b.app);
    // Layers that do not reference it do not care.
    let p = Project::new();
    let a = p.digests_with("dev", |i| i.timestamp = "20250101000000".into());
    let b = p.digests_with("dev", |i| i.timestamp = "20250101000001".into());
    assert_eq!(a, b);
}

#[test]
fn a_missing_file_is_an_error_with_its_path_and_a_hint() {
    let p = Project::new();
    let pf = p.load();
    std::fs::remove_file(p.path("provisioners/carnivore.sh")).unwrap();
    let err = compute(&pf, "dev", &p.inputs(&pf, "dev")).unwrap_err();
    match &err {
        DigestError::Read { path, .. } => {
            assert!(
                path.ends_with(Path::new("provisioners/carnivore.sh")),
                "{path:?}"
            );
        }
        other => panic!("expected Read, got {other:?}"),
    }
    assert!(err.to_string().contains("carnivore.sh"), "{err}");
    assert!(err.hint().unwrap().contains("create it"));
}

#[test]
fn build_trust_counts_only_when_kept() {
    let with_build = |keep: bool| {
        PIPELINEFILE.replace(
            "[base]",
            &format!("[build]\nca_certificates = [\"certs\"]\nkeep_build_trust = {keep}\n\n[base]"),
        )
    };
    let change_cert = |p: &Project| p.write("certs/corp.crt", "-----BEGIN CERTIFICATE-----\nB\n");

    let p = Project::with(&with_build(false));
    p.write("certs/corp.crt", "-----BEGIN CERTIFICATE-----\nA\n");
    assert_eq!(moved(&p, "dev", change_cert), NEITHER);

    let p = Project::with(&with_build(true));
    p.write("certs/corp.crt", "-----BEGIN CERTIFICATE-----\nA\n");
    assert_eq!(moved(&p, "dev", change_cert), BOTH);
    // Kept proxy settings count too.
    let a = p.digests_with("dev", |i| {
        i.host_env = HostEnv::Fixed([("HTTPS_PROXY".into(), "http://127.0.0.1:3128".into())].into())
    });
    let b = p.digests("dev");
    assert_ne!(a.base, b.base);
}

#[test]
fn an_ansible_playbook_folder_is_hashed_like_an_upload() {
    let p = Project::with(&PIPELINEFILE.replace(
        r#"  { inline = ["echo base-two"] },"#,
        r#"  { ansible = "playbooks/site.yml", extra_vars = { workers = "{{ vars.workers }}" } },"#,
    ));
    p.write("playbooks/site.yml", "- hosts: all\n  roles: [web]\n");
    p.write("playbooks/roles/web/tasks/main.yml", "- debug: msg=one\n");
    p.write("playbooks/.pipeignore", "*.retry\n");
    assert_eq!(
        moved(&p, "dev", |p| p.write(
            "playbooks/roles/web/tasks/main.yml",
            "- debug: msg=two\n"
        )),
        BOTH
    );
    assert_eq!(
        moved(&p, "dev", |p| p
            .write("playbooks/site.retry", "localhost\n")),
        NEITHER
    );
}

#[test]
fn a_host_env_reference_enters_with_its_value() {
    let p = Project::new();
    p.edit("echo base-two", "echo {{ env.BUILD_FLAVOUR }}");
    let with = |v: &str| {
        let v = v.to_string();
        p.digests_with("dev", move |i| {
            i.host_env = HostEnv::Fixed([("BUILD_FLAVOUR".into(), v)].into())
        })
    };
    assert_ne!(with("slim").base, with("full").base);
    assert_eq!(with("slim"), with("slim"));
    // Unset renders as empty, so it hashes as empty.
    assert_eq!(with(""), p.digests("dev"));
}
