//! Each provisioner on the real Docker engine: file, shell (retries, exit codes, timeout,
//! run_as, workdir, env), inline, ansible, precache, and build-time trust and proxies.

mod common;

use common::{Project, ensure_box};

fn pf(base: &str, app: &str, extra: &str) -> String {
    format!(
        r#"[pipeline]
name = "@NAME@"

[vars]
who = "world"

[box]
docker = {{ box = "debian-12" }}

[base]
provision = [{base}]

[app]
provision = [{app}]

{extra}

[env.dev]
target = "docker"
"#
    )
}

#[test]
fn shell_retries_exit_codes_user_workdir_and_env() {
    ensure_box();
    let p = Project::new(
        "shell",
        &pf(
            r#"{ shell = "flaky.sh", retries = 2 },
  { inline = ["exit 3"], valid_exit_codes = [0, 3] },
  { inline = ["id -un > /tmp/user.txt", "pwd > /tmp/pwd.txt"], run_as = "nobody", workdir = "/tmp" },
  { inline = ["echo \"$GREETING\" > /greeting.txt"], env = { GREETING = "hello {{ vars.who }}" } },"#,
            r#"{ inline = ["true"] }"#,
            "",
        ),
        &[(
            "flaky.sh",
            // Fails on the first run, succeeds on the second: retries must re-run it.
            "#!/bin/sh\nif [ ! -f /tmp/flaky-ran ]; then touch /tmp/flaky-ran; echo first run fails; exit 1; fi\necho second run passes\n",
        )],
    );
    let up = p.pipe(&["up", "--local"]);
    up.ok();
    assert!(up.stderr.contains("retrying (1 of 2)"), "{}", up.stderr);
    assert!(up.stderr.contains("second run passes"), "{}", up.stderr);
    let cat = |f: &str| p.pipe(&["exec", "--", "cat", f]).stdout;
    assert_eq!(cat("/tmp/user.txt"), "nobody\n");
    assert_eq!(cat("/tmp/pwd.txt"), "/tmp\n");
    assert_eq!(cat("/greeting.txt"), "hello world\n");
    // Nothing of pipe's provisioning work folder is left in the image.
    let ls = p.pipe(&[
        "exec",
        "--",
        "sh",
        "-c",
        "ls /tmp/pipe-provision 2>&1 || true",
    ]);
    assert!(ls.stdout.contains("No such file"), "{}", ls.stdout);
}

#[test]
fn a_timeout_kills_the_script_and_says_so() {
    ensure_box();
    let p = Project::new(
        "timeout",
        &pf(
            r#"{ inline = ["echo sleeping", "sleep 600"], timeout = 2 }"#,
            "",
            "",
        ),
        &[],
    );
    let up = p.pipe(&["up", "--local"]);
    assert_eq!(up.code, 1, "{}", up.all());
    assert!(
        up.stderr.contains("base/inline #1 timed out after 2s"),
        "{}",
        up.stderr
    );
    assert!(p.containers().is_empty());
}

#[test]
fn an_exit_code_outside_valid_ones_fails_with_the_code() {
    ensure_box();
    let p = Project::new(
        "exitcode",
        &pf(
            r#"{ inline = ["exit 5"], valid_exit_codes = [0, 3] }"#,
            "",
            "",
        ),
        &[],
    );
    let up = p.pipe(&["up", "--local"]);
    assert_eq!(up.code, 1);
    assert!(
        up.stderr.contains("failed with exit code 5"),
        "{}",
        up.stderr
    );
}

#[test]
fn file_uploads_keep_modes_owner_and_folder_conventions() {
    ensure_box();
    let p = Project::new(
        "file",
        &pf(
            r#"{ inline = ["useradd --system web"] }"#,
            r#"{ file = "site", to = "/srv" },
  { file = "site/", to = "/opt/contents", owner = "web" },
  { file = "single.txt", to = "/etc/single.txt" },"#,
            "",
        ),
        &[
            ("site/index.html", "<p>hi</p>\n"),
            ("site/bin/run.sh", "#!/bin/sh\necho run\n"),
            ("site/.pipeignore", "secret.env\n"),
            ("site/secret.env", "TOKEN=x\n"),
            ("single.txt", "one\n"),
        ],
    );
    p.pipe(&["up", "--local"]).ok();
    let sh = |c: &str| p.pipe(&["exec", "--", "sh", "-c", c]).stdout;
    // `site` (no slash) lands as /srv/site; `site/` puts its contents in /opt/contents.
    assert_eq!(sh("cat /srv/site/index.html"), "<p>hi</p>\n");
    assert_eq!(sh("cat /opt/contents/index.html"), "<p>hi</p>\n");
    assert_eq!(sh("stat -c %a /opt/contents/bin/run.sh"), "755\n");
    assert_eq!(sh("stat -c %a /opt/contents/index.html"), "644\n");
    assert_eq!(sh("stat -c %U /opt/contents/index.html"), "web\n");
    assert_eq!(
        sh("test -e /opt/contents/secret.env && echo leaked || echo ignored"),
        "ignored\n"
    );
    assert_eq!(sh("cat /etc/single.txt"), "one\n");
}

/// The precache step runs after the base's provisioners, in its folder; the provisioners are
/// kept as a checkpoint, so a change of the precache files alone (a dependency bump) runs only
/// the precache step on it.
#[test]
fn precache_runs_after_the_base_provisioners_in_its_folder() {
    ensure_box();
    let p = Project::new(
        "precache",
        &pf(
            r#"{ inline = ["echo tool > /usr/local/bin/marker", "cat /proc/sys/kernel/random/uuid > /base-run"] }"#,
            r#"{ inline = ["cp /opt/deps/installed.txt /app-deps.txt"] }"#,
            "[base.precache]\nfiles = [\"deps/manifest.txt\"]\nto = \"/opt/deps\"\nrun = \"test -f /usr/local/bin/marker && sort manifest.txt > installed.txt\"\n",
        ),
        &[("deps/manifest.txt", "b\na\n")],
    );
    let up = p.pipe(&["up", "--local"]);
    up.ok();
    assert!(up.all().contains("build base checkpoint"), "{}", up.all());
    let out = p.pipe(&["exec", "--", "cat", "/app-deps.txt"]);
    assert_eq!(out.stdout, "a\nb\n");
    let base_run = p.pipe(&["exec", "--", "cat", "/base-run"]).stdout;
    assert_eq!(base_run.trim().len(), 36, "{base_run:?}");

    // A dependency bump: the checkpoint is reused, only the precache step runs on it.
    p.write("deps/manifest.txt", "c\nb\na\n");
    let up = p.pipe(&["up", "--local"]);
    up.ok();
    assert!(
        up.all().contains("reusing pipe/") && up.all().contains("only the precache step runs"),
        "{}",
        up.all()
    );
    assert!(!up.all().contains("build base checkpoint"), "{}", up.all());
    assert_eq!(
        p.pipe(&["exec", "--", "cat", "/app-deps.txt"]).stdout,
        "a\nb\nc\n"
    );
    assert_eq!(
        p.pipe(&["exec", "--", "cat", "/base-run"]).stdout,
        base_run,
        "the base's provisioners did not run again"
    );
    // Three base-labelled images now: the checkpoint and two bases on it; destroy removes
    // them all (children first).
    let destroyed = p.pipe(&["destroy", "--layers"]);
    destroyed.ok();
    assert!(p.layer_images().is_empty(), "{:?}", p.layer_images());
}

#[test]
fn build_trust_and_proxies_exist_only_while_provisioning() {
    ensure_box();
    let pem = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "/dev/null",
            "-days",
            "1",
            "-subj",
            "/CN=pipe test build CA",
        ])
        .output()
        .unwrap();
    assert!(pem.status.success());
    let pem = String::from_utf8(pem.stdout).unwrap();
    let p = Project::new(
        "trust",
        &pf(
            r#"{ inline = [
    "test -f /usr/local/share/ca-certificates/pipe-build/test-ca.crt",
    "grep -q \"$(sed -n 2p /usr/local/share/ca-certificates/pipe-build/test-ca.crt)\" /etc/ssl/certs/ca-certificates.crt",
    "test \"$https_proxy\" = http://127.0.0.1:3128 && test \"$HTTPS_PROXY\" = http://127.0.0.1:3128",
    "test -n \"$NODE_EXTRA_CA_CERTS\"",
  ] }"#,
            "",
            "[build]\nca_certificates = [\"certs\"]\nproxy = { https = \"http://127.0.0.1:3128\" }\n",
        ),
        &[("certs/test-ca.crt", &pem)],
    );
    let up = p.pipe(&["up", "--local"]);
    up.ok();
    let line = pem.lines().nth(1).unwrap().to_string();
    let sh = |c: &str| p.pipe(&["exec", "--", "sh", "-c", c]);
    let ls = sh("ls /usr/local/share/ca-certificates/pipe-build 2>&1 || true").stdout;
    assert!(
        ls.contains("No such file"),
        "the build CA folder stayed: {ls}"
    );
    let bundle = sh("cat /etc/ssl/certs/ca-certificates.crt").stdout;
    assert!(!bundle.contains(&line), "the build CA stayed in the image");
    let env = sh("cat /proc/1/environ | tr '\\0' '\\n'").stdout;
    assert!(!env.to_lowercase().contains("proxy"), "{env}");

    // keep_build_trust = true keeps the certificate in the image.
    let text = std::fs::read_to_string(p.path().join("Pipelinefile.toml"))
        .unwrap()
        .replace("[build]\n", "[build]\nkeep_build_trust = true\n");
    p.write("Pipelinefile.toml", &text);
    p.pipe(&["up", "--local"]).ok();
    let bundle = sh("cat /etc/ssl/certs/ca-certificates.crt").stdout;
    assert!(bundle.contains(&line), "keep_build_trust kept nothing");
}

#[test]
fn ansible_runs_a_playbook_on_the_machine() {
    ensure_box();
    let p = Project::new(
        "ansible",
        &pf(
            r#"{ inline = ["apt-get update -qq", "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ansible-core >/dev/null"] }"#,
            r#"{ ansible = "playbooks/site.yml", extra_vars = { greeting = "hi {{ vars.who }}" } }"#,
            "",
        ),
        &[
            (
                "playbooks/site.yml",
                "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: write a file from a template\n      template:\n        src: templates/motd.j2\n        dest: /etc/motd-pipe\n",
            ),
            (
                "playbooks/templates/motd.j2",
                "{{ greeting }} from ansible\n",
            ),
        ],
    );
    let up = p.pipe(&["up", "--local"]);
    up.ok();
    assert!(
        up.stderr.contains("[app/ansible playbooks/site.yml]"),
        "{}",
        up.stderr
    );
    let out = p.pipe(&["exec", "--", "cat", "/etc/motd-pipe"]);
    assert_eq!(out.stdout, "hi world from ansible\n");
}

#[test]
fn ansible_without_ansible_installed_says_what_to_do() {
    ensure_box();
    let p = Project::new(
        "noansible",
        &pf(
            r#"{ inline = ["true"] }"#,
            r#"{ ansible = "pb/site.yml" }"#,
            "",
        ),
        &[("pb/site.yml", "- hosts: all\n  tasks: []\n")],
    );
    let up = p.pipe(&["up", "--local"]);
    assert_eq!(up.code, 1);
    assert!(
        up.stderr.contains("needs ansible-playbook on the machine"),
        "{}",
        up.stderr
    );
    assert!(p.containers().is_empty());
}

/// The package cache: a base rebuild after a change (here: the switch to `--no-download`, with
/// which apt fails rather than fetch a package it lacks) downloads nothing it has in the cache,
/// even though the first build ran `apt-get clean`; npm's and pip's cache folders are the
/// host's; and nothing of the cache is in the committed layer. (npm and pip themselves are not
/// installed here: npm alone is hundreds of Debian packages, too slow for CI.)
#[test]
fn the_package_cache_serves_a_base_rebuild_and_never_enters_a_layer() {
    ensure_box();
    // A cache of its own: other builds of the same box may run at the same time.
    let xdg = tempfile::tempdir().unwrap();
    let env = [("XDG_CACHE_HOME", xdg.path().to_str().unwrap())];
    let base = |apt: &str| {
        format!(
            r#"{{ inline = ["apt-get update -qq", "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {apt} hello >/tmp/apt.log", "grep -E '^(Get:|Need to get)' /tmp/apt.log || true", "hello", "echo npm > \"$npm_config_cache/pipe-test\"", "echo pip > \"$PIP_CACHE_DIR/pipe-test\"", "apt-get clean"] }},"#
        )
    };
    let p = Project::new(
        "pkgcache",
        &pf(&base(""), r#"{ inline = ["true"] }"#, ""),
        &[],
    );
    let first = p.pipe_env(&["bake", "--env", "dev", "--skip-verify"], &env);
    first.ok();
    assert!(
        first
            .stderr
            .lines()
            .any(|l| l.contains("[base/inline") && l.contains("Get:") && l.contains("hello")),
        "the first build downloads: {}",
        first.stderr
    );
    let cache = xdg.path().join("pipe/packages/docker-debian-12");
    let store = cache.join("apt/debs");
    let debs = |what: &str| -> Vec<(String, std::time::SystemTime)> {
        let mut v: Vec<_> = std::fs::read_dir(&store)
            .unwrap_or_else(|e| panic!("{what}: {}: {e}", store.display()))
            .map(|e| e.unwrap())
            .map(|e| {
                let m = e.metadata().unwrap().modified().unwrap();
                (e.file_name().to_string_lossy().into_owned(), m)
            })
            .collect();
        v.sort();
        v
    };
    let before = debs("after the first build");
    assert!(
        before.iter().any(|(n, _)| n.starts_with("hello_")),
        "apt's archives are kept even though the build ran apt-get clean: {before:?}"
    );
    for tool in ["npm", "pip"] {
        let f = cache.join(tool).join("pipe-test");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), format!("{tool}\n"));
    }
    assert!(
        !cache.join("apt/runs").read_dir().unwrap().any(|_| true),
        "a build's own archives folder goes with its build machine"
    );
    let list = p.pipe_env(&["cache", "list"], &env);
    list.ok();
    assert!(list.stdout.contains("docker-debian-12"), "{}", list.stdout);

    // Offline for apt: it may not download a single package.
    p.write(
        "Pipelinefile.toml",
        &pf(&base("--no-download"), r#"{ inline = ["true"] }"#, "").replace("@NAME@", &p.name),
    );
    let second = p.pipe_env(&["bake", "--env", "dev", "--skip-verify"], &env);
    second.ok();
    assert!(second.stderr.contains("Hello, world!"), "{}", second.stderr);
    // apt's own lines (lint's warning above them quotes the Pipelinefile, which says Get: too).
    assert!(
        !second
            .stderr
            .lines()
            .any(|l| l.contains("[base/inline") && l.contains("Get:")),
        "the second build downloaded: {}",
        second.stderr
    );
    assert_eq!(
        debs("after the second build"),
        before,
        "nothing new, nothing rewritten"
    );

    // The newest base layer holds nothing of the cache: only the empty mount point.
    let client = pipe::engine::docker::DockerClient::connect().unwrap();
    let mut bases = client
        .images_by_labels(&[&format!("pipe.pipeline={}", p.name), "pipe.layer=base"])
        .unwrap();
    bases.sort_by_key(|i| std::cmp::Reverse(i.created));
    let container = common::docker(&["create", &bases[0].id, "true"]);
    let listing = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("docker export {} | tar -t", container.trim()))
        .output()
        .unwrap();
    common::docker(&["rm", container.trim()]);
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.lines().any(|l| l == "usr/bin/hello"),
        "hello is installed"
    );
    let leaked: Vec<&str> = listing
        .lines()
        .filter(|l| {
            (l.starts_with("var/cache/pipe-build/") && *l != "var/cache/pipe-build/")
                || l.ends_with(".deb")
                || l.ends_with("pipe-test")
        })
        .collect();
    assert!(leaked.is_empty(), "cached files in the layer: {leaked:?}");

    let cleared = p.pipe_env(&["cache", "clear", "docker-debian-12"], &env);
    cleared.ok();
    assert!(!cache.exists(), "pipe cache clear removed it");
}
