//! `pipe up --watch` against the real Docker engine: edits, new and deleted files of the app
//! layer's inputs reach the running machine (and the page it serves on 127.0.0.1), ignored
//! ones do not, provisioners run again unless `restart_only` covers the change, the services
//! restart in place (the container keeps running, nothing of the old service is left), Ctrl-C
//! leaves the machine running, and `pipe status` says watch changed it.

mod common;

use common::{Project, docker, ensure_box, free_port, http_get_retry, spawn_pipe};

/// A tiny HTTP server in perl (perl-base is in every Debian): serves /srv/www/index.html.
const SERVER: &str = r#"perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalAddr=>"0.0.0.0",LocalPort=>$ARGV[0],Listen=>5,ReuseAddr=>1) or die "listen: $!"; while($c=$s->accept){ <$c>; open(F,"<","/srv/www/index.html"); local $/; $b=<F>; close F; print $c "HTTP/1.0 200 OK\r\nContent-Length: ".length($b)."\r\n\r\n".$b; close $c }' 8000"#;

fn pipelinefile(port: u16) -> String {
    format!(
        r#"[pipeline]
name = "@NAME@"

[box]
docker = {{ box = "debian-12" }}

[app]
provision = [
  {{ file = "www/", to = "/srv/www" }},
  {{ file = "conf/", to = "/etc/web", restart_only = ["*.conf"] }},
  {{ shell = "stamp.sh" }},
]

[[service]]
name = "web"
command = '''{SERVER}'''
port = 8000
host_port = {port}

[env.dev]
target = "docker"
"#
    )
}

/// Waits until the page served on 127.0.0.1 contains `text`.
#[track_caller]
fn page_shows(port: u16, text: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        let (_, body) = http_get_retry(port, "/", 30);
        if body.contains(text) {
            return body;
        }
        assert!(
            start.elapsed().as_secs() < 30,
            "page never showed {text}: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn watch_syncs_edits_into_the_running_machine_until_ctrl_c() {
    ensure_box();
    let port = free_port();
    let p = Project::new(
        "watch",
        &pipelinefile(port),
        &[
            ("www/index.html", "<h1>one</h1>\n"),
            ("www/old.txt", "old\n"),
            ("www/.pipeignore", "*.tmp\n"),
            ("stamp.sh", "#!/bin/sh\nset -e\necho ran >> /srv/runs\n"),
            ("conf/web.conf", "a\n"),
        ],
    );
    let mut w = spawn_pipe(
        p.path(),
        &["up", "--local", "--watch", "--no-progress"],
        &[],
    );
    w.wait_for("watching 3 input(s)", 180);
    page_shows(port, "<h1>one</h1>");

    // An edit, a new file, a deleted one and an ignored one, saved in one burst.
    p.write("www/index.html", "<h1>two</h1>\n");
    p.write("www/new.txt", "new\n");
    std::fs::remove_file(p.path().join("www/old.txt")).unwrap();
    p.write("www/junk.tmp", "ignored\n");
    w.wait_for("synced", 60);
    let line = w.stderr.last().unwrap().clone();
    eprintln!("{line}");
    assert!(
        line.contains("1 changed, 1 new, 1 deleted file(s)")
            && line.contains("re-ran 1 provisioner(s)"),
        "{line}"
    );
    page_shows(port, "<h1>two</h1>");
    let ls = p.pipe(&["exec", "--", "ls", "/srv/www"]);
    ls.ok();
    assert!(ls.stdout.contains("new.txt"), "{}", ls.stdout);
    assert!(!ls.stdout.contains("old.txt"), "{}", ls.stdout);
    assert!(!ls.stdout.contains("junk.tmp"), "ignored: {}", ls.stdout);
    let runs = p.pipe(&["exec", "--", "cat", "/srv/runs"]);
    assert_eq!(runs.stdout, "ran\nran\n", "stamp.sh ran again");

    // The services restarted in place: the same container, a new service process, and only
    // one server left (the supervisor stops the service's whole process group).
    let name = format!("pipe-{}-dev", p.name);
    let started_at = || docker(&["inspect", "-f", "{{.State.StartedAt}}", &name]);
    let service_pid = || {
        p.pipe(&["exec", "--", "cat", "/run/pipe/started/web"])
            .stdout
    };
    let container_started = started_at();
    let pid = service_pid();
    let servers = || {
        p.pipe(&["exec", "--", "sh", "-c", "ps -e -o args | grep -c '^perl'"])
            .stdout
            .trim()
            .to_string()
    };
    assert_eq!(servers(), "1");
    let log = p.pipe(&["exec", "--", "cat", "/var/log/pipe/web.log"]);
    assert!(
        log.stdout.contains("pipe: restarting web (asked to)"),
        "{}",
        log.stdout
    );

    // A `restart_only` upload whose pattern matches: synced, services restarted, no
    // provisioner.
    p.write("conf/web.conf", "b\n");
    w.wait_for("synced", 60);
    let line = w.stderr.last().unwrap().clone();
    eprintln!("{line}");
    assert!(
        line.contains("1 changed file(s)") && !line.contains("re-ran"),
        "{line}"
    );
    let conf = p.pipe(&["exec", "--", "cat", "/etc/web/web.conf", "/srv/runs"]);
    assert_eq!(conf.stdout, "b\nran\nran\n");
    assert_ne!(service_pid(), pid, "the service restarted");
    assert_eq!(
        started_at(),
        container_started,
        "the container did not restart"
    );
    assert_eq!(servers(), "1");

    // A change the pattern does not cover runs the provisioners after the upload again.
    p.write("conf/notes.txt", "n\n");
    w.wait_for("synced", 60);
    let line = w.stderr.last().unwrap().clone();
    assert!(
        line.contains("1 new file(s)") && line.contains("re-ran 1 provisioner(s)"),
        "{line}"
    );
    let runs = p.pipe(&["exec", "--", "cat", "/srv/runs"]);
    assert_eq!(runs.stdout, "ran\nran\nran\n", "stamp.sh ran again");

    // A container whose supervisor is not the one pipe would deliver now (started by another
    // pipe, say) is restarted whole, and serves again.
    p.pipe(&[
        "exec",
        "--",
        "sh",
        "-c",
        "echo '# other' >> /run/pipe/supervise",
    ])
    .ok();
    p.write("conf/web.conf", "c\n");
    w.wait_for("synced", 60);
    assert_ne!(started_at(), container_started, "the container restarted");
    page_shows(port, "<h1>two</h1>");
    assert_eq!(servers(), "1");

    let status = p.pipe(&["status"]);
    status.ok();
    assert!(
        status.stdout.contains("changed by watch"),
        "{}",
        status.stdout
    );

    // Ctrl-C: the machine keeps running and pipe says its image is behind it.
    let mut out = w.child.stdout.take().unwrap();
    w.signal(libc::SIGINT);
    let (code, stderr) = w.finish();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut out, &mut stdout).unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("image is behind the machine until the next `pipe up`"),
        "{stdout}"
    );
    let running = docker(&["inspect", "-f", "{{.State.Running}}", &name]);
    assert_eq!(running.trim(), "true");
    page_shows(port, "<h1>two</h1>");

    // The next `pipe up` makes the machine from its image again: no longer changed by watch.
    p.pipe(&["up", "--local"]).ok();
    let status = p.pipe(&["status"]);
    assert!(
        !status.stdout.contains("changed by watch"),
        "{}",
        status.stdout
    );
}
