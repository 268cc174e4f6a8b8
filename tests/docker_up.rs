//! `pipe up` and the machine commands against the real Docker engine, on small Pipelinefiles
//! that build in seconds on the debian-12 box.

mod common;

use common::{Project, docker, ensure_box, free_port, http_get_retry};

/// A tiny HTTP server in perl (perl-base is in every Debian): serves /srv/www/index.html.
const SERVER: &str = r#"perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalAddr=>"0.0.0.0",LocalPort=>$ARGV[0],Listen=>5,ReuseAddr=>1) or die "listen: $!"; while($c=$s->accept){ <$c>; open(F,"<","/srv/www/index.html"); local $/; $b=<F>; close F; print $c "HTTP/1.0 200 OK\r\nContent-Length: ".length($b)."\r\n\r\n".$b; close $c }' 8000"#;

fn pipelinefile(port: u16, extra: &str) -> String {
    format!(
        r#"[pipeline]
name = "@NAME@"

[vars]
greeting = "hello"
unused = "x"
token = {{ env = "PIPE_TEST_TOKEN", default = "none", sensitive = true }}

[box]
docker = {{ box = "debian-12" }}

[base]
provision = [ {{ shell = "base.sh" }} ]

[app]
provision = [
  {{ file = "www/", to = "/srv/www" }},
  {{ inline = ["echo '{{{{ vars.greeting }}}} from {{{{ environment }}}}' >> /srv/www/index.html"] }},
]

[[service]]
name = "web"
command = '''{SERVER}'''
port = 8000
host_port = {port}

{extra}

[env.dev]
target = "docker"
"#
    )
}

fn project(prefix: &str, extra: &str) -> (Project, u16) {
    ensure_box();
    let port = free_port();
    let p = Project::new(
        prefix,
        &pipelinefile(port, extra),
        &[
            (
                "base.sh",
                "#!/bin/sh\nset -e\necho base-layer > /base.txt\n",
            ),
            ("www/index.html", "<h1>page</h1>\n"),
            ("www/.pipeignore", "*.tmp\n"),
            ("www/junk.tmp", "ignored\n"),
        ],
    );
    (p, port)
}

#[test]
fn up_builds_serves_and_then_does_nothing() {
    let (p, port) = project("up", "");
    let first = p.pipe(&["up", "--local", "--no-progress"]);
    first.ok();
    let (status, body) = http_get_retry(port, "/", 30);
    assert_eq!(status, 200);
    assert!(body.contains("<h1>page</h1>"), "{body}");
    assert!(body.contains("hello from dev"), "{body}");
    let images = p.layer_images();
    assert_eq!(images.len(), 2, "one base and one app image");
    // .pipeignore kept junk.tmp out of the upload.
    let ls = p.pipe(&["exec", "--", "ls", "/srv/www"]);
    ls.ok();
    assert!(!ls.stdout.contains("junk.tmp"), "{}", ls.stdout);
    assert!(ls.stdout.contains("index.html"));

    let second = p.pipe(&["up", "--local", "--no-progress"]);
    second.ok();
    assert!(second.stdout.contains("up to date"), "{}", second.stdout);
    assert_eq!(p.layer_images(), images, "a second up creates no image");
    assert_eq!(p.containers().len(), 1);

    // An unused var changes nothing either.
    let third = p.pipe(&["up", "--local", "--var", "unused=y"]);
    third.ok();
    assert!(third.stdout.contains("up to date"), "{}", third.stdout);

    // exec passes the exit code through.
    let e = p.pipe(&["exec", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(e.code, 3);
    assert_eq!(e.stdout, "out\n");
    assert!(e.stderr.contains("err"));
}

#[test]
fn an_app_edit_rebuilds_only_the_app_layer() {
    let (p, port) = project("appedit", "");
    p.pipe(&["up", "--local"]).ok();
    let before = p.layer_images();
    let base_of = |p: &Project| {
        docker(&[
            "images",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=pipe.pipeline={}", p.name),
            "--filter",
            "label=pipe.layer=base",
        ])
    };
    let base_before = base_of(&p);
    p.write("www/index.html", "<h1>changed</h1>\n");
    // With PIPE_PROFILE=1 and --json: one `profile` event at the end, with the app-edit
    // path's phases (the base only found, the app layer built, the machine replaced).
    let json = p.pipe_env(&["--json", "up", "--local"], &[("PIPE_PROFILE", "1")]);
    json.ok();
    let events: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .chain(json.stderr.lines())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let profiles: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["event"] == "profile").collect();
    assert_eq!(profiles.len(), 1, "{}", json.all());
    let phases: Vec<&str> = profiles[0]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    for want in [
        "plan and digests",
        "base: find layer",
        "app: build machine",
        "app: commit",
        "remove the old machine",
        "machine: create and start",
        "machine: services ready",
    ] {
        assert!(phases.contains(&want), "{want} not in {phases:?}");
    }
    let total = profiles[0]["total_ms"].as_u64().unwrap();
    let summed: u64 = profiles[0]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ms"].as_u64().unwrap())
        .sum();
    assert!(total > 0 && summed <= total + 5, "{total} {summed}");
    // Undo that build's effect on what follows: this edit is the one checked below.
    p.write("www/index.html", "<h1>changed again</h1>\n");
    let r = p.pipe(&["up", "--local"]);
    r.ok();
    assert!(r.stdout.contains("replaced"), "{}", r.stdout);
    assert!(r.stderr.contains("reusing"), "base reused: {}", r.stderr);
    assert_eq!(base_of(&p), base_before, "base layer untouched");
    let after = p.layer_images();
    assert_eq!(after.len(), 4, "two new app images next to the old ones");
    assert!(before.iter().all(|i| after.contains(i)));
    let (_, body) = http_get_retry(port, "/", 30);
    assert!(body.contains("changed"), "{body}");
    assert_eq!(p.containers().len(), 1, "the old machine was replaced");

    // A base edit rebuilds the base too.
    p.write(
        "base.sh",
        "#!/bin/sh\nset -e\necho base-layer-2 > /base.txt\n",
    );
    p.pipe(&["up", "--local"]).ok();
    assert_ne!(base_of(&p), base_before);
    let cat = p.pipe(&["exec", "--", "cat", "/base.txt"]);
    assert_eq!(cat.stdout, "base-layer-2\n");
}

#[test]
fn a_failing_provisioner_leaves_nothing_behind() {
    let (p, _) = project("fail", "");
    p.write(
        "base.sh",
        "#!/bin/sh\necho preparing\necho 'something broke' >&2\nexit 7\n",
    );
    let r = p.pipe(&["up", "--local"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("base/shell base.sh"), "{}", r.stderr);
    assert!(r.stderr.contains("exit code 7"), "{}", r.stderr);
    assert!(
        r.stderr.contains("something broke"),
        "last lines shown: {}",
        r.stderr
    );
    assert!(p.containers().is_empty(), "left: {:?}", p.containers());
    assert!(p.layer_images().is_empty());
    assert!(p.journals().is_empty(), "journal left: {:?}", p.journals());
}

#[test]
fn keep_on_error_keeps_the_build_container_and_says_how_to_get_in() {
    let (p, _) = project("keep", "");
    p.write("base.sh", "#!/bin/sh\nexit 4\n");
    let r = p.pipe(&["up", "--local", "--keep-on-error"]);
    assert_eq!(r.code, 1);
    let left = p.containers();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        r.stderr.contains(&format!("docker exec -it {}", left[0])),
        "{}",
        r.stderr
    );
}

#[test]
fn a_sensitive_value_never_leaves_the_process_environment() {
    let canary = "canary-5d1f0c9e-never-print-me";
    let (p, port) = project("secret", "");
    // The app layer's script sees the secret; the service too; nothing else does.
    p.write(
        "Pipelinefile.toml",
        &std::fs::read_to_string(p.path().join("Pipelinefile.toml"))
            .unwrap()
            .replace(
                "{ file = \"www/\", to = \"/srv/www\" },",
                "{ file = \"www/\", to = \"/srv/www\" },\n  { inline = [\"test \\\"$TOKEN\\\" = \\\"$EXPECTED\\\"\", \"echo token is $TOKEN\"], env = { TOKEN = \"{{ vars.token }}\", EXPECTED = \"canary-5d1f0c9e-never-print-me\" } },",
            )
            .replace(
                "port = 8000\n",
                "port = 8000\nenv = { TOKEN = \"{{ vars.token }}\" }\n",
            ),
    );
    let env = [("PIPE_TEST_TOKEN", canary)];
    let up = p.pipe_env(&["up", "--local", "-v"], &env);
    up.ok();
    assert!(!up.all().contains(canary), "pipe printed the secret");
    assert!(up.all().contains("token is ********"), "{}", up.stderr);
    let json = p.pipe_env(&["--json", "status"], &env);
    assert!(!json.all().contains(canary));
    http_get_retry(port, "/", 30);
    // The running service has it in its environment (delivered through /run/pipe).
    let environ = p.pipe_env(
        &["exec", "--", "sh", "-c", "cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c '^TOKEN=canary-5d1f0c9e' || true"],
        &env,
    );
    assert_ne!(
        environ.stdout.trim(),
        "0",
        "the service did not get the secret"
    );
    // `pipe exec --service` runs with the service's environment (issue 13); plain exec not.
    let check = format!("test \"$TOKEN\" = {canary} && echo has-token || echo no-token");
    let with = p.pipe(&["exec", "--service", "web", "--", "sh", "-c", &check]);
    with.ok();
    assert_eq!(with.stdout.trim(), "has-token", "{}", with.all());
    let without = p.pipe(&["exec", "--", "sh", "-c", &check]);
    assert_eq!(without.stdout.trim(), "no-token", "{}", without.all());
    let unknown = p.pipe(&["exec", "--service", "nope", "--", "true"]);
    assert_eq!(unknown.code, 2, "{}", unknown.all());
    assert!(
        unknown.stderr.contains("services: web"),
        "{}",
        unknown.stderr
    );
    for img in p.layer_images() {
        let history = docker(&["history", "--no-trunc", &img]);
        assert!(!history.contains(canary), "in docker history of {img}");
        let inspect = docker(&["inspect", &img]);
        assert!(!inspect.contains(canary), "in docker inspect of {img}");
        let save = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("docker save {img} | grep -ac {canary} || true"))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&save.stdout).trim(),
            "0",
            "in the image's files"
        );
    }
    for c in p.containers() {
        assert!(
            !docker(&["inspect", &c]).contains(canary),
            "in docker inspect of {c}"
        );
    }
}

#[test]
fn destroy_works_without_the_state_folder() {
    let (p, _) = project("destroy", "");
    p.pipe(&["up", "--local"]).ok();
    assert_eq!(p.containers().len(), 1);
    std::fs::remove_dir_all(p.path().join(".pipe")).unwrap();
    let st = p.pipe(&["status"]);
    st.ok();
    assert!(st.stdout.contains("running"), "{}", st.stdout);
    let d = p.pipe(&["destroy"]);
    d.ok();
    assert!(d.stdout.contains("removed machine"), "{}", d.stdout);
    assert!(p.containers().is_empty());
    assert!(p.pipe(&["status"]).stdout.contains("no machines"));
}

#[test]
fn halt_then_up_starts_the_same_machine() {
    let (p, port) = project("halt", "");
    p.pipe(&["up", "--local"]).ok();
    p.pipe(&["halt"]).ok();
    assert!(p.pipe(&["status"]).stdout.contains("exited"));
    let up = p.pipe(&["up", "--local"]);
    up.ok();
    assert!(up.stdout.contains("started"), "{}", up.stdout);
    let (status, _) = http_get_retry(port, "/", 30);
    assert_eq!(status, 200);
}

#[test]
fn services_are_restarted_when_they_die_and_logs_show_it() {
    let (p, port) = project("svc", "");
    p.pipe(&["up", "--local"]).ok();
    http_get_retry(port, "/", 30);
    p.pipe(&["exec", "--", "pkill", "-f", "IO::Socket"]).ok();
    let (status, _) = http_get_retry(port, "/", 30);
    assert_eq!(status, 200);
    let logs = p.pipe(&["logs", "web"]);
    logs.ok();
    assert!(
        logs.stdout.contains("pipe: starting web"),
        "{}",
        logs.stdout
    );
    assert!(logs.stdout.contains("restarting"), "{}", logs.stdout);
    let bad = p.pipe(&["logs", "nope"]);
    assert_eq!(bad.code, 2);
}

#[test]
fn provision_reruns_the_app_layer_in_place() {
    let (p, port) = project("prov", "");
    p.pipe(&["up", "--local"]).ok();
    p.write("www/index.html", "<h1>iterated</h1>\n");
    p.pipe(&["provision"]).ok();
    let (_, body) = http_get_retry(port, "/", 30);
    assert!(body.contains("iterated"), "{body}");
    assert_eq!(p.layer_images().len(), 2, "provision builds no image");
}

#[test]
fn another_checkout_of_the_same_pipeline_is_left_alone() {
    let (a, _) = project("twins", "");
    a.pipe(&["up", "--local"]).ok();
    // A second checkout: same files, same pipeline name, another folder.
    let b = tempfile::tempdir().unwrap();
    for entry in walkdir::WalkDir::new(a.path()).min_depth(1) {
        let e = entry.unwrap();
        let rel = e.path().strip_prefix(a.path()).unwrap();
        if rel.starts_with(".pipe") {
            continue;
        }
        let to = b.path().join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
    let d = common::run_pipe(b.path(), &["destroy"], &[]);
    d.ok();
    assert!(d.stdout.contains("nothing to destroy"), "{}", d.stdout);
    assert_eq!(
        a.containers().len(),
        1,
        "the other checkout's machine survived"
    );
    let st = common::run_pipe(b.path(), &["status"], &[]);
    assert!(st.stdout.contains("no machines"), "{}", st.stdout);
    let up = common::run_pipe(b.path(), &["up", "--local"], &[]);
    assert_eq!(up.code, 1);
    assert!(
        up.stderr.contains("belongs to the project in"),
        "{}",
        up.stderr
    );
    assert!(up.stderr.contains("container_name"), "{}", up.stderr);
}

#[test]
fn an_image_box_is_used_as_is_and_a_missing_one_is_pulled() {
    ensure_box();
    let tag = common::unique("image-box");
    docker(&[
        "tag",
        "pipe-box/debian-12:latest",
        &format!("pipe-test/image-box:{tag}"),
    ]);
    // A box made for this run: no package cache, which would keep an empty folder for it.
    let text = |image: &str| {
        format!(
            "[pipeline]\nname = \"@NAME@\"\n[build]\npackage_cache = false\n[box]\ndocker = {{ image = \"{image}\" }}\n[base]\nprovision = [{{ inline = [\"echo from-image > /f\"] }}]\n[env.dev]\ntarget = \"docker\"\n"
        )
    };
    let p = Project::new(
        "imagebox",
        &text(&format!("pipe-test/image-box:{tag}")),
        &[],
    );
    p.pipe(&["up", "--local"]).ok();
    assert_eq!(p.pipe(&["exec", "--", "cat", "/f"]).stdout, "from-image\n");
    docker(&["rmi", &format!("pipe-test/image-box:{tag}")]);
    // A registry on 127.0.0.1 that does not answer: pipe tries to pull, and says what failed.
    let q = Project::new("pullbox", &text("127.0.0.1:9/pipe-test/absent:1"), &[]);
    let up = q.pipe(&["up", "--local"]);
    assert_eq!(up.code, 1, "{}", up.all());
    assert!(
        up.stderr
            .contains("pull image 127.0.0.1:9/pipe-test/absent:1"),
        "{}",
        up.stderr
    );
    assert!(up.stderr.contains("hint:"), "{}", up.stderr);
}

#[test]
fn ssh_opens_a_login_shell_with_a_terminal() {
    let (p, _) = project("tty", "");
    p.pipe(&["up", "--local"]).ok();
    // `script` gives pipe a pseudo-terminal, as a user's terminal would.
    let out = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("{} ssh", env!("CARGO_BIN_EXE_pipe")),
            "/dev/null",
        ])
        .current_dir(p.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"tty; echo shell-of-$(hostname); exit 7\n")?;
            child.wait_with_output()
        })
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "no terminal: {text}");
    assert!(
        text.contains(&format!("shell-of-pipe-{}-dev", p.name)),
        "{text}"
    );
}
