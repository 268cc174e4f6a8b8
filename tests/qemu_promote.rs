//! Promotion on qemu against real VMs (TCG when KVM does not work, as on CI): staging and
//! production run on qemu; a release baked in staging is promoted into production (a VM on an
//! overlay of the release's artifact, serving on 127.0.0.1 at production's port), replaced by a
//! newer one, rolled back, and kept serving when a promotion fails or is interrupted. One test
//! runs the whole story, since every VM boot under TCG costs tens of seconds.

mod common;

use std::path::Path;

use common::{Project, http_get_retry};

/// Its own pipeline name, so no other test's layers or artifacts are touched (its layers are
/// reused by the next run: same digests).
const PIPELINE: &str = "pipe-qemu-promote";

/// A tiny HTTP server in perl (perl-base is in every Debian): serves /srv/www/index.html,
/// reading the whole request first (QEMU's user-mode network drops a reply to a socket closed
/// with unread data).
const SERVER: &str = r#"perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalAddr=>"0.0.0.0",LocalPort=>$ARGV[0],Listen=>5,ReuseAddr=>1) or die "listen: $!"; while($c=$s->accept){ while(<$c>){ last if /^\r?$/ } open(F,"<","/srv/www/index.html"); local $/; $b=<F>; close F; print $c "HTTP/1.0 200 OK\r\nContent-Length: ".length($b)."\r\n\r\n".$b; close $c }' 8000"#;

/// Staging is the first environment (+0), production the second: it serves on `port + 1`.
fn pipelinefile(port: u16) -> String {
    format!(
        r#"[pipeline]
name = "{PIPELINE}"

[box]
qemu = {{ box = "debian-12" }}

[app]
provision = [
  {{ file = "www/", to = "/srv/www" }},
  {{ inline = ["echo 'baked for {{{{ environment }}}}' >> /srv/www/index.html"] }},
]

[[service]]
name = "web"
command = '''{SERVER}'''
port = 8000
host_port = {port}

[verify]
http = [{{ url = "http://127.0.0.1:8000/", status = 200, contains = "baked for" }}]
timeout = 60

[env.staging]
target = "qemu"

[env.production]
target = "qemu"
promote_from = "staging"
"#
    )
}

/// A port `p` with `p + 1` free too.
fn free_pair() -> u16 {
    loop {
        let p = common::free_port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// Removes what the test made outside its temp folder, even when it fails: every VM of the
/// project (with its overlay) and the artifacts its bakes wrote.
struct Cleanup<'a>(&'a Project);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Ok(rd) = std::fs::read_dir(self.0.path().join(".pipe/qemu")) {
            for e in rd.flatten() {
                let _ = pipe::targets::qemu::machine::destroy(&e.path());
            }
        }
        for line in self.0.ledger_lines() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if let Some(a) = v["release"]["artifacts"]["qemu"].as_str() {
                let _ = std::fs::remove_file(a);
            }
        }
    }
}

/// QEMU processes started for this project.
fn qemu_processes(p: &Project) -> Vec<String> {
    p.qemu_processes()
}

/// The folders of production's serving VMs.
fn serving(p: &Project) -> Vec<String> {
    let prefix = format!("pipe-{PIPELINE}-production-");
    let mut names: Vec<String> = std::fs::read_dir(p.path().join(".pipe/qemu"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn last_ledger(p: &Project) -> serde_json::Value {
    serde_json::from_str(p.ledger_lines().last().unwrap()).unwrap()
}

/// Bakes staging with `page`; returns the release's alias.
fn bake(p: &Project, page: &str) -> String {
    p.write("www/index.html", page);
    let r = p.pipe(&["bake", "--env", "staging", "--no-progress"]);
    r.ok();
    assert!(
        r.stdout.contains("next: pipe promote production"),
        "{}",
        r.all()
    );
    let last = last_ledger(p);
    assert_eq!(last["release"]["target"], "qemu");
    last["release"]["alias"].as_str().unwrap().to_string()
}

/// The one VM serving production: its name ends with `alias`, it runs, and the page on
/// production's port says `page`.
#[track_caller]
fn serves(p: &Project, port: u16, alias: &str, page: &str, context: &str) {
    let (status, body) = http_get_retry(port, "/", 60);
    assert_eq!(status, 200, "{context}");
    assert!(
        body.contains(page) && body.contains("baked for staging"),
        "{body}\n{context}"
    );
    let names = serving(p);
    assert_eq!(names.len(), 1, "{names:?}\n{context}");
    assert!(names[0].ends_with(alias), "{names:?}\n{context}");
    let procs = qemu_processes(p);
    assert_eq!(procs.len(), 1, "one VM serves: {procs:?}\n{context}");
    assert!(procs[0].contains(&names[0]), "{procs:?}\n{context}");
    assert!(p.journals().is_empty(), "{:?}\n{context}", p.journals());
}

fn json_result(run: &common::Run) -> serde_json::Value {
    run.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("data").cloned())
        .unwrap_or_else(|| panic!("no result in:\n{}", run.all()))
}

#[test]
fn promote_replace_rollback_and_keep_serving_on_failure_with_qemu_vms() {
    let port = free_pair();
    let prod = port + 1;
    let p = Project::new(
        "qemu-promote",
        &pipelinefile(port),
        &[("www/index.html", "<h1>one</h1>\n")],
    );
    let _cleanup = Cleanup(&p);

    let one = bake(&p, "<h1>one</h1>\n");
    assert!(qemu_processes(&p).is_empty());

    // --plan says what would happen and changes nothing.
    let plan = p.pipe(&["promote", "production", "--plan"]);
    plan.ok();
    eprintln!("---- promote --plan\n{}", plan.all());
    for want in [
        format!("release {one}"),
        "verify artifact ".to_string(),
        format!("start pipe-{PIPELINE}-production-{one} (web on 127.0.0.1:{prod})"),
        "nothing was changed".to_string(),
    ] {
        assert!(plan.stdout.contains(&want), "{want}: {}", plan.stdout);
    }
    assert_eq!(p.ledger_lines().len(), 1, "--plan records nothing");
    assert!(serving(&p).is_empty(), "--plan starts nothing");
    assert!(qemu_processes(&p).is_empty());

    // Promote: the release's artifact serves on production's port.
    let up = p.pipe(&["promote", "production", "--no-progress"]);
    up.ok();
    eprintln!("---- promote\n{}", up.all());
    assert!(
        up.stdout
            .contains(&format!("`production` now runs release {one}")),
        "{}",
        up.all()
    );
    serves(&p, prod, &one, "one", &up.all());
    let last = last_ledger(&p);
    assert_eq!(last["event"], "promote", "{last}");
    assert_eq!(last["ok"], true, "{last}");
    let history = p.pipe(&["history", "--env", "production"]);
    assert!(history.stdout.contains("promote"), "{}", history.stdout);
    // The serving VM's record says what it is; status lists it.
    let rec = pipe::targets::qemu::machine::load_record(
        &p.path()
            .join(".pipe/qemu")
            .join(format!("pipe-{PIPELINE}-production-{one}")),
    )
    .expect("machine.json");
    assert_eq!(rec.role.as_deref(), Some("serving"));
    assert_eq!(rec.env, "production");
    assert!(rec.release.as_deref().unwrap().starts_with(&one));
    assert!(Path::new(&rec.layer).is_file(), "it runs on the artifact");
    let status = p.pipe(&["--json", "status"]);
    status.ok();
    let rows = json_result(&status)["machines"].clone();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["role"] == "serving")
        .unwrap_or_else(|| panic!("no serving VM in {rows}"));
    assert_eq!(row["target"], "qemu", "{rows}");
    assert_eq!(row["env"], "production", "{rows}");
    assert_eq!(row["state"], "running", "{rows}");
    assert_eq!(
        row["ports"][0],
        format!("127.0.0.1:{prod}->8000").as_str(),
        "{rows}"
    );
    let human = p.pipe(&["status"]);
    eprintln!("---- status\n{}", human.all());
    assert!(
        human.stdout.contains(&format!("release {one}")),
        "{}",
        human.all()
    );

    // Already current and running: refused, nothing booted.
    let again = p.pipe(&["promote", "production"]);
    assert_eq!(again.code, 5, "{}", again.all());
    assert!(again.stderr.contains("already current"), "{}", again.stderr);

    // A newer release replaces it; the old VM's folder is gone.
    let two = bake(&p, "<h1>two</h1>\n");
    let up = p.pipe(&["promote", "production", "--no-progress"]);
    up.ok();
    serves(&p, prod, &two, "two", &up.all());
    assert!(
        !p.path()
            .join(format!(".pipe/qemu/pipe-{PIPELINE}-production-{one}"))
            .exists()
    );

    // Rollback goes back to the first release, through the same path.
    let back = p.pipe(&["rollback", "production", "--no-progress"]);
    back.ok();
    serves(&p, prod, &one, "one", &back.all());
    assert_eq!(last_ledger(&p)["event"], "rollback");

    // The serving VM dies (as after a host reboot): status says so, and promoting the current
    // release again makes it anew from the artifact, in the same folder.
    let dir = p
        .path()
        .join(format!(".pipe/qemu/pipe-{PIPELINE}-production-{one}"));
    let pid: i32 = std::fs::read_to_string(dir.join("qemu.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) on the QEMU process this test's project started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let gone = std::time::Instant::now();
    while !qemu_processes(&p).is_empty() {
        assert!(gone.elapsed().as_secs() < 30, "{:?}", qemu_processes(&p));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = p.pipe(&["status"]);
    assert!(status.stdout.contains("stopped"), "{}", status.all());
    let plan = p.pipe(&["promote", "production", "--release", &one, "--plan"]);
    plan.ok();
    assert!(
        plan.stdout.contains("remove the stopped machine"),
        "{}",
        plan.all()
    );
    let again = p.pipe(&["promote", "production", "--release", &one, "--no-progress"]);
    again.ok();
    serves(&p, prod, &one, "one", &again.all());

    // A promotion whose new VM cannot start (its port is taken): the old VM boots again on
    // its own disk and keeps serving; the failure is recorded.
    let pf = std::fs::read_to_string(p.path().join("Pipelinefile.toml")).unwrap();
    let taken = free_pair();
    let _holder = std::net::TcpListener::bind(("127.0.0.1", taken + 1)).unwrap();
    p.write(
        "Pipelinefile.toml",
        &pf.replace(
            &format!("host_port = {port}"),
            &format!("host_port = {taken}"),
        ),
    );
    let lines = p.ledger_lines().len();
    let failed = p.pipe(&["promote", "production", "--release", &two, "--no-progress"]);
    eprintln!("---- failed promote\n{}", failed.all());
    assert_ne!(failed.code, 0, "{}", failed.all());
    assert!(
        failed.stderr.contains("host forwarding"),
        "{}",
        failed.all()
    );
    serves(&p, prod, &one, "one", &failed.all());
    // It was powered down cleanly (ACPI), not killed, before it booted again.
    let console = std::fs::read_to_string(dir.join("console.log")).unwrap();
    assert!(console.contains("reboot: Power down"), "{console}");
    assert_eq!(p.ledger_lines().len(), lines + 1);
    let last = last_ledger(&p);
    assert_eq!(last["event"], "promote", "{last}");
    assert_eq!(last["ok"], false, "{last}");
    p.write("Pipelinefile.toml", &pf);
    drop(_holder);

    // Ctrl-C once the old VM is stopped: the new one never serves, the old one boots again,
    // nothing is recorded.
    let lines = p.ledger_lines().len();
    let mut child = common::spawn_pipe(
        p.path(),
        &["promote", "production", "--release", &two, "--no-progress"],
        &[("PIPE_TEST_PAUSE_AT", "start pipe-")],
    );
    child.wait_for("test hook: paused at", 600);
    assert_eq!(serving(&p).len(), 1);
    assert!(qemu_processes(&p).is_empty(), "the old VM is stopped");
    child.signal(libc::SIGINT);
    let (code, stderr) = child.finish();
    eprintln!("---- interrupted promote\n{stderr}");
    assert_eq!(code, 130, "{stderr}");
    serves(&p, prod, &one, "one", &stderr);
    assert_eq!(p.ledger_lines().len(), lines, "nothing recorded: {stderr}");

    let history = p.pipe(&["history", "--env", "production"]);
    assert!(history.stdout.contains("rollback"), "{}", history.stdout);
    assert!(history.stdout.contains("FAILED"), "{}", history.stdout);
    p.pipe(&["history", "--verify"]).ok();

    // destroy removes the serving VM: no process, no folder, no journal.
    let destroy = p.pipe(&["destroy"]);
    destroy.ok();
    assert!(
        destroy
            .stdout
            .contains(&format!("pipe-{PIPELINE}-production-{one}")),
        "{}",
        destroy.all()
    );
    assert!(qemu_processes(&p).is_empty(), "{:?}", qemu_processes(&p));
    assert!(serving(&p).is_empty(), "{:?}", serving(&p));
    assert!(p.journals().is_empty(), "{:?}", p.journals());
    let none = p.pipe(&["status"]);
    assert!(none.stdout.contains("no machines"), "{}", none.all());
}
