//! Ctrl-C, SIGTERM and SIGKILL during a Docker bake: whatever step the signal lands in, the run
//! leaves no container, image or journal of its own; a SIGKILLed run is removed by `pipe clean`.
//!
//! Steps are hit deterministically with the `PIPE_TEST_PAUSE_AT` test hook (the runner prints
//! `test hook: paused at ...` and waits for the signal); the middle of provisioning with a
//! provisioner that prints a marker and sleeps.

mod common;

use common::{Project, Spawned, ensure_box, spawn_pipe};

const SERVER: &str = r#"perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalAddr=>"0.0.0.0",LocalPort=>$ARGV[0],Listen=>5,ReuseAddr=>1) or die "listen: $!"; while($c=$s->accept){ <$c>; print $c "HTTP/1.0 200 OK\r\n\r\nok"; close $c }' 8000"#;

const PIPELINEFILE: &str = r#"[pipeline]
name = "@NAME@"

[box]
docker = { box = "debian-12" }

[base]
provision = [ { shell = "base.sh" } ]

[app]
provision = [ { inline = ["echo app > /app.txt"] } ]

[[service]]
name = "web"
command = '''SERVER'''
port = 8000
publish = false

[verify]
http = [{ url = "http://127.0.0.1:8000/", status = 200, contains = "ok" }]
timeout = 20

[env.dev]
target = "docker"
"#;

const SLOW_BASE: &str = "#!/bin/sh\necho PROVISIONING-NOW\nsleep 120\n";

fn project(prefix: &str, base: &str) -> Project {
    ensure_box();
    Project::new(
        prefix,
        &PIPELINEFILE.replace("SERVER", SERVER),
        &[("base.sh", base)],
    )
}

/// The run id of the one run in progress (its journal).
fn run_id(p: &Project) -> String {
    let runs = p.journal_runs();
    assert_eq!(runs.len(), 1, "one journal: {runs:?}");
    runs[0].clone()
}

/// Starts a bake, waits for `marker` on stderr, sends `sig`; returns the run id and the exit.
fn interrupt_bake(
    p: &Project,
    pause_at: Option<&str>,
    marker: &str,
    sig: i32,
) -> (String, i32, String) {
    let env: Vec<(&str, &str)> = pause_at
        .map(|s| vec![("PIPE_TEST_PAUSE_AT", s)])
        .unwrap_or_default();
    let mut child: Spawned = spawn_pipe(p.path(), &["bake", "--env", "dev", "--no-progress"], &env);
    child.wait_for(marker, 240);
    let run = run_id(p);
    child.signal(sig);
    let (code, stderr) = child.finish();
    (run, code, stderr)
}

#[track_caller]
fn assert_nothing_left(p: &Project, run: &str, stderr: &str) {
    assert!(
        p.labelled_with_run(run).is_empty(),
        "left by {run}: {:?}\n{stderr}",
        p.labelled_with_run(run)
    );
    assert!(
        p.containers().is_empty(),
        "containers left: {:?}\n{stderr}",
        p.containers()
    );
    assert!(
        p.journals().is_empty(),
        "journal left: {:?}\n{stderr}",
        p.journals()
    );
    assert!(
        p.ledger_lines().is_empty(),
        "an interrupted bake records no release"
    );
}

fn at_step(prefix: &str, step: &str) {
    let p = project(prefix, "#!/bin/sh\necho base > /base.txt\n");
    let (run, code, stderr) = interrupt_bake(&p, Some(step), "test hook: paused at", libc::SIGINT);
    assert_eq!(code, 130, "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_nothing_left(&p, &run, &stderr);
}

#[test]
fn sigint_at_the_base_layer_step() {
    at_step("sig-base", "build base layer");
}

#[test]
fn sigint_at_the_app_layer_step() {
    at_step("sig-app", "build app layer");
}

#[test]
fn sigint_at_the_verify_step() {
    at_step("sig-verify", "verify app layer");
}

#[test]
fn sigint_with_the_verify_machine_running() {
    at_step("sig-verifymachine", "verify machine started");
}

#[test]
fn sigint_in_the_middle_of_provisioning() {
    let p = project("sig-prov", SLOW_BASE);
    let (run, code, stderr) = interrupt_bake(&p, None, "PROVISIONING-NOW", libc::SIGINT);
    assert_eq!(code, 130, "{stderr}");
    assert_nothing_left(&p, &run, &stderr);
}

#[test]
fn sigterm_in_the_middle_of_provisioning() {
    let p = project("sig-term", SLOW_BASE);
    let (run, code, stderr) = interrupt_bake(&p, None, "PROVISIONING-NOW", libc::SIGTERM);
    assert_eq!(code, 130, "{stderr}");
    assert_nothing_left(&p, &run, &stderr);
}

#[test]
fn a_sigkilled_bake_is_removed_by_pipe_clean() {
    let p = project("sig-kill", SLOW_BASE);
    let (run, code, stderr) = interrupt_bake(&p, None, "PROVISIONING-NOW", libc::SIGKILL);
    assert_eq!(code, 128 + libc::SIGKILL, "{stderr}");
    let left = p.labelled_with_run(&run);
    assert_eq!(left.len(), 1, "the build container is left: {left:?}");
    assert_eq!(p.journal_runs(), vec![run.clone()]);

    let dry = p.pipe(&["clean", "--dry-run"]);
    dry.ok();
    assert!(
        dry.stdout.contains("would remove container"),
        "{}",
        dry.stdout
    );
    assert_eq!(
        p.labelled_with_run(&run).len(),
        1,
        "--dry-run removes nothing"
    );

    let clean = p.pipe(&["clean"]);
    clean.ok();
    assert!(
        clean.stdout.contains("removed container"),
        "{}",
        clean.stdout
    );
    assert!(clean.stdout.contains(&run), "{}", clean.stdout);
    assert!(p.labelled_with_run(&run).is_empty());
    assert!(p.containers().is_empty());
    assert!(p.journals().is_empty());
    assert_eq!(p.pipe(&["clean"]).stdout.trim(), "nothing to clean");
}

#[test]
fn clean_sweeps_labelled_leftovers_without_a_journal() {
    let p = project("sig-label", SLOW_BASE);
    let (run, _, _) = interrupt_bake(&p, None, "PROVISIONING-NOW", libc::SIGKILL);
    std::fs::remove_dir_all(p.path().join(".pipe/journal")).unwrap();
    let clean = p.pipe(&["clean"]);
    clean.ok();
    assert!(
        // The build machine that was killed: labelled pipe.build, never pipe.run (issue 13).
        clean.stdout.contains(&format!("labelled pipe.build={run}")),
        "{}",
        clean.stdout
    );
    assert!(p.labelled_with_run(&run).is_empty());
}
