//! `pipe bake` against the real Docker engine: layers, verification on a fresh machine, the
//! release in the ledger, a failing verification, layer reuse across bakes.

mod common;

use common::{Project, ensure_box};

/// A tiny HTTP server in perl (perl-base is in every Debian): serves /srv/www/index.html.
const SERVER: &str = r#"perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalAddr=>"0.0.0.0",LocalPort=>$ARGV[0],Listen=>5,ReuseAddr=>1) or die "listen: $!"; while($c=$s->accept){ <$c>; open(F,"<","/srv/www/index.html"); local $/; $b=<F>; close F; print $c "HTTP/1.0 200 OK\r\nContent-Length: ".length($b)."\r\n\r\n".$b; close $c }' 8000"#;

fn pipelinefile(contains: &str) -> String {
    format!(
        r#"[pipeline]
name = "@NAME@"

[vars]
greeting = "hello"

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
publish = false

[verify]
commands = ["test -f /srv/www/index.html", "cat /base.txt"]
http = [{{ url = "http://127.0.0.1:8000/", status = 200, contains = "{contains}" }}]
timeout = 15

[env.dev]
target = "docker"
"#
    )
}

fn project(prefix: &str, contains: &str) -> Project {
    ensure_box();
    Project::new(
        prefix,
        &pipelinefile(contains),
        &[
            (
                "base.sh",
                "#!/bin/sh\nset -e\necho base-layer > /base.txt\n",
            ),
            ("www/index.html", "<h1>page</h1>\n"),
        ],
    )
}

fn ledger_json(p: &Project) -> Vec<serde_json::Value> {
    p.ledger_lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn bake_verifies_records_a_release_and_reuses_layers() {
    let p = project("bake", "hello from {{ environment }}");
    let r = p.pipe(&["bake", "--env", "dev", "--no-progress"]);
    r.ok();
    assert!(r.stdout.contains("verified"), "{}", r.stdout);
    assert!(
        p.containers().is_empty(),
        "verify machine left: {:?}",
        p.containers()
    );
    assert!(p.journals().is_empty(), "journal left: {:?}", p.journals());
    let images = p.layer_images();
    assert_eq!(images.len(), 2, "base and app");

    let ledger = ledger_json(&p);
    assert_eq!(ledger.len(), 1);
    let e = &ledger[0];
    assert_eq!(e["event"], "bake");
    let rel = &e["release"];
    assert_eq!(rel["env"], "dev");
    assert_eq!(rel["target"], "docker");
    assert_eq!(rel["pipeline"], p.name.as_str());
    assert_eq!(rel["alias"].as_str().unwrap().len(), 10);
    assert!(
        rel["id"]
            .as_str()
            .unwrap()
            .starts_with(rel["alias"].as_str().unwrap())
    );
    let app_image = rel["artifacts"]["docker"].as_str().unwrap();
    assert!(
        images.contains(&app_image.to_string()),
        "{app_image} in {images:?}"
    );
    assert!(rel["base_digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(rel["pipelinefile_digest"].as_str().unwrap().len(), 64);
    assert!(rel["who"].as_str().unwrap().contains('@'));
    assert!(rel["git_commit"].is_string() && rel["git_dirty"].is_boolean());
    assert!(rel["when"].is_string());
    assert_eq!(rel["verify"]["ok"], true);
    let excerpt = rel["verify"]["excerpt"].as_str().unwrap();
    assert!(
        excerpt.contains("GET http://127.0.0.1:8000/: 200"),
        "{excerpt}"
    );
    assert!(
        excerpt.contains("base-layer"),
        "command output kept: {excerpt}"
    );

    let releases = p.pipe(&["releases"]);
    releases.ok();
    let alias = rel["alias"].as_str().unwrap();
    assert!(releases.stdout.contains(alias), "{}", releases.stdout);
    assert!(releases.stdout.contains("verified"), "{}", releases.stdout);
    let history = p.pipe(&["history", "--env", "dev"]);
    history.ok();
    assert!(history.stdout.contains("bake"), "{}", history.stdout);
    // An environment the Pipelinefile lacks is a usage error, not an empty history.
    let unknown = p.pipe(&["history", "--env", "nope"]);
    assert_eq!(unknown.code, 2, "{}", unknown.all());
    assert!(
        unknown.stderr.contains("unknown environment `nope`"),
        "{}",
        unknown.stderr
    );

    // A second bake reuses both layers and records a second release.
    let again = p.pipe(&["bake", "--env", "dev", "--no-progress"]);
    again.ok();
    assert_eq!(
        again.stderr.matches("reusing").count(),
        2,
        "{}",
        again.stderr
    );
    assert_eq!(p.layer_images(), images, "no new image");
    let ledger = ledger_json(&p);
    assert_eq!(ledger.len(), 2);
    assert_ne!(ledger[0]["release"]["id"], ledger[1]["release"]["id"]);
    assert_eq!(
        ledger[1]["release"]["artifacts"],
        ledger[0]["release"]["artifacts"]
    );

    // An app edit rebuilds only the app layer.
    p.write("www/index.html", "<h1>changed</h1>\n");
    let third = p.pipe(&["bake", "--env", "dev", "--no-progress"]);
    third.ok();
    assert_eq!(
        third.stderr.matches("reusing").count(),
        1,
        "{}",
        third.stderr
    );
    assert_eq!(p.layer_images().len(), 3);

    // `pipe verify` verifies the newest release again and records it.
    let v = p.pipe(&["verify"]);
    v.ok();
    let ledger = ledger_json(&p);
    assert_eq!(ledger.last().unwrap()["event"], "verify");
    assert!(p.containers().is_empty());

    let chain = p.pipe(&["history", "--verify"]);
    chain.ok();
    assert!(
        chain.stdout.contains("intact: 4 entries"),
        "{}",
        chain.stdout
    );
}

#[test]
fn a_failing_verify_is_a_recorded_unpromotable_release() {
    let p = project("badverify", "this text is not on the page");
    let r = p.pipe(&["bake", "--env", "dev", "--no-progress", "-v"]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(r.stderr.contains("verification failed"), "{}", r.stderr);
    assert!(
        r.stderr.contains("does not contain"),
        "the excerpt is shown: {}",
        r.stderr
    );
    // The body it got is shown, on one line (issue 13).
    assert!(r.stderr.contains("; body: \""), "{}", r.stderr);
    // The verify step failed, it is not `ok` (issue 13).
    assert!(r.stderr.contains("!!  verify app layer"), "{}", r.stderr);
    assert!(!r.stderr.contains("ok  verify app layer"), "{}", r.stderr);
    // -v shows the commands pipe runs in the machines: the checks' curl, service delivery.
    assert!(r.stderr.contains("] $ curl -sS -m "), "{}", r.stderr);
    assert!(r.stderr.contains("] $ upload "), "{}", r.stderr);
    assert!(p.containers().is_empty(), "left: {:?}", p.containers());
    assert!(p.journals().is_empty());
    let ledger = ledger_json(&p);
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0]["release"]["verify"]["ok"], false);
    let releases = p.pipe(&["releases"]);
    assert!(releases.stdout.contains("failed"), "{}", releases.stdout);
    let alias = ledger[0]["release"]["alias"].as_str().unwrap();
    let promote = p.pipe(&["promote", "dev", "--release", alias]);
    assert_eq!(promote.code, 5, "{}", promote.all());
    assert!(
        promote.stderr.contains("failed verification"),
        "{}",
        promote.stderr
    );
}

#[test]
fn services_that_never_listen_fail_verification_with_their_log() {
    let p = project("nolisten", "x");
    p.write(
        "Pipelinefile.toml",
        &std::fs::read_to_string(p.path().join("Pipelinefile.toml"))
            .unwrap()
            .replace(SERVER, "echo web refuses to start; sleep 600")
            .replace("timeout = 15", "timeout = 3"),
    );
    let r = p.pipe(&["bake", "--env", "dev"]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(
        r.stderr.contains("did not listen on port 8000"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("web refuses to start"), "{}", r.stderr);
    assert!(p.containers().is_empty());
}

/// `pipe lint` finds an unquoted expansion (SC2086) in a script file at the script's line, and
/// in an inline command at the command's line in the Pipelinefile; `pipe bake` runs the same
/// checks first and stops on them before any machine exists. Without shellcheck on PATH, lint
/// says so and the bake is not stopped by it.
#[test]
fn lint_finds_unquoted_variables_and_bake_stops_before_a_machine() {
    let p = project("lint", "hello");
    let source = std::fs::read_to_string(p.path().join("Pipelinefile.toml")).unwrap();
    p.write(
        "Pipelinefile.toml",
        &source.replace(
            r#"provision = [ { shell = "base.sh" } ]"#,
            "provision = [\n  { shell = \"base.sh\" },\n  { inline = [\"mkdir -p /srv/www\", \"ls $HOME\"] },\n]",
        ),
    );
    p.write(
        "base.sh",
        "#!/bin/sh\nset -e\ntarget=\"${BASE_FILE:-/base.txt}\"\necho base-layer | tee $target\n",
    );
    let pf = std::fs::read_to_string(p.path().join("Pipelinefile.toml")).unwrap();
    let inline_line = pf.lines().position(|l| l.contains("ls $HOME")).unwrap() + 1;

    let r = p.pipe(&["lint"]);
    assert_eq!(r.code, 3, "{}", r.all());
    // The script's finding: its own file and line (4), the caret under `$target`.
    assert!(
        r.stderr
            .contains("error: SC2086: Double quote to prevent globbing"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains(" --> base.sh:4:23\n"), "{}", r.stderr);
    assert!(
        r.stderr.contains("4 | echo base-layer | tee $target\n"),
        "{}",
        r.stderr
    );
    // The inline command's finding: the Pipelinefile's line and the column of `$HOME`.
    let col = pf
        .lines()
        .nth(inline_line - 1)
        .unwrap()
        .find("$HOME")
        .unwrap()
        + 1;
    assert!(
        r.stderr
            .contains(&format!(" --> Pipelinefile.toml:{inline_line}:{col}\n")),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("lint: 2 errors, 0 warnings"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("error: lint found 2 errors"),
        "{}",
        r.stderr
    );

    // --json: one diagnostic event per finding, with its severity.
    let j = p.pipe(&["lint", "--json"]);
    let events: Vec<serde_json::Value> = j
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["event"] == "diagnostic")
        .collect();
    assert_eq!(events.len(), 2, "{}", j.stdout);
    assert_eq!(events[0]["file"], "Pipelinefile.toml");
    assert_eq!(events[0]["line"], inline_line);
    assert_eq!(events[1]["file"], "base.sh");
    assert_eq!(events[1]["line"], 4);
    assert_eq!(events[1]["severity"], "error");

    let bake = p.pipe(&["bake", "--env", "dev", "--no-progress"]);
    assert_eq!(bake.code, 3, "{}", bake.all());
    assert!(bake.stderr.contains(" --> base.sh:4:23"), "{}", bake.stderr);
    assert!(bake.stderr.contains("--no-lint"), "{}", bake.stderr);
    assert!(p.containers().is_empty(), "{:?}", p.containers());
    assert!(p.layer_images().is_empty(), "{:?}", p.layer_images());
    assert!(p.ledger_lines().is_empty());

    // Without shellcheck: a note, no findings, exit 0.
    let no_tools = p.pipe_env(&["lint"], &[("PATH", "/nonexistent")]);
    no_tools.ok();
    assert!(
        no_tools.stderr.contains("shellcheck is not installed"),
        "{}",
        no_tools.stderr
    );
}

/// Copies `tests/fixtures/NAME` into the project, keeping file modes (scripts stay executable).
fn copy_fixture(name: &str, to: &std::path::Path) {
    let from = common::repo().join("tests/fixtures").join(name);
    for entry in walkdir::WalkDir::new(&from) {
        let entry = entry.unwrap();
        let dest = to.join(entry.path().strip_prefix(&from).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// Two Packer templates shaped like seed 2's `primal.json` and `carnivore.json` (user
/// variables, amazon-ebs, file and shell provisioners, the app template taking the base AMI as
/// `SOURCE_ID`, a sensitive variable, a post-processor) become one Pipelinefile with [base] and
/// [app], which validates, passes lint and bakes on docker with `--local`; what has no
/// equivalent is listed at its top and printed. An HCL2 template is refused with a hint.
#[test]
fn packer_templates_import_validate_and_bake() {
    ensure_box();
    let p = Project::new("import", "", &[]);
    std::fs::remove_file(p.path().join("Pipelinefile.toml")).unwrap();
    copy_fixture("packer", p.path());

    let r = p.pipe(&[
        "import",
        "packer",
        "primal.json",
        "carnivore.json",
        "--name",
        &p.name,
    ]);
    r.ok();
    assert!(
        r.stdout.starts_with("wrote Pipelinefile.toml for pipeline"),
        "{}",
        r.stdout
    );
    for said in [
        "post-processors (1)",
        "`SOURCE_ID` (the base AMI)",
        "ami_name `ponyfoo-primal {{timestamp}}`",
    ] {
        assert!(r.stderr.contains(said), "{said}: {}", r.stderr);
    }
    let pf = std::fs::read_to_string(p.path().join("Pipelinefile.toml")).unwrap();
    assert!(
        pf.starts_with(
            "# Imported by `pipe import packer` from primal.json (base) and carnivore.json (app).\n"
        ),
        "{pf}"
    );
    assert!(
        pf.contains("#   - carnivore.json: post-processors (1) have no equivalent"),
        "{pf}"
    );
    for line in [
        "node_env = \"staging\"",
        "api_token = { env = \"API_TOKEN\", sensitive = true }",
        "ec2 = { ami = \"ami-22de994a\" }",
        "  { file = \"deploy/mailtube/\", to = \"/tmp/mailtube\" },",
        "  { shell = \"deploy/templates/primal\", env = { NVM_VERSION = \"{{ vars.nvm_version }}\", NODE_VERSION = \"{{ vars.node_version }}\" } },",
        "NAME = \"ponyfoo-{{ vars.node_env }}\"",
        "[env.staging]\ntarget = \"ec2\"",
        "ssh_username = \"admin\"",
    ] {
        assert!(pf.contains(line), "{line}\n---\n{pf}");
    }
    let base = pf.find("[base]").unwrap();
    let app = pf.find("[app]").unwrap();
    assert!(base < pf.find("deploy/templates/primal").unwrap());
    assert!(app < pf.find("deploy/templates/carnivore").unwrap());
    assert!(!pf.contains("source_id"), "{pf}");
    p.pipe(&["validate"]).ok();

    // Checks the user adds: what the two scripts made, with the vars they were given.
    std::fs::write(
        p.path().join("Pipelinefile.toml"),
        format!(
            "{pf}\n[verify]\ncommands = [\n  \"grep -qx NODE_VERSION=0.10 /opt/primal/versions\",\n  \"test -f /opt/primal/mailtube/package.json\",\n  \"grep -qx NAME=ponyfoo-staging /opt/app/env\",\n  \"grep -qx 'server_name example.org;' /opt/app/site.conf\",\n  \"grep -qx 12 /opt/app/token-length\",\n]\ntimeout = 5\n"
        ),
    )
    .unwrap();
    let token = "tok-3f9a2c71";
    let bake = p.pipe_env(
        &[
            "bake",
            "--env",
            "staging",
            "--local",
            "--var",
            "server_name=example.org",
            "--no-progress",
        ],
        &[("API_TOKEN", token)],
    );
    bake.ok();
    assert!(bake.stdout.contains("verified"), "{}", bake.stdout);
    assert!(!bake.all().contains(token));
    assert!(!p.ledger_lines().concat().contains(token));
    assert_eq!(p.layer_images().len(), 2, "a base and an app layer");
    assert!(p.containers().is_empty(), "{:?}", p.containers());

    p.write("app.pkr.hcl", "source \"amazon-ebs\" \"app\" {}\n");
    let hcl = p.pipe(&["import", "packer", "app.pkr.hcl", "--output", "other.toml"]);
    assert_eq!(hcl.code, 2, "{}", hcl.all());
    assert!(hcl.stderr.contains("HCL2 template"), "{}", hcl.stderr);
    assert!(hcl.stderr.contains("hcl2_upgrade"), "{}", hcl.stderr);
}
