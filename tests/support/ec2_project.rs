//! Ec2 bake projects against the local EC2, shared by the ec2 test binaries: a small
//! Pipelinefile (a perl web server as the service, a verify that reads its page), bakes in the
//! foreground or the background, and what must be gone after a run.
#![allow(dead_code)]

use crate::common::{self, Project, spawn_pipe};
use crate::local_ec2;

/// A tiny HTTP server in perl (perl-base is in every Debian): serves /srv/www/index.html.
pub const SERVER: &str = r#"perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalAddr=>"0.0.0.0",LocalPort=>$ARGV[0],Listen=>5,ReuseAddr=>1) or die "listen: $!"; while($c=$s->accept){ <$c>; open(F,"<","/srv/www/index.html"); local $/; $b=<F>; close F; print $c "HTTP/1.0 200 OK\r\nContent-Length: ".length($b)."\r\n\r\n".$b; close $c }' 8000"#;

pub fn pipelinefile(app_extra: &str) -> String {
    format!(
        r#"[pipeline]
name = "@NAME@"

[vars]
greeting = "hello"

[box]
ec2 = {{ ami_filter = {{ name = "debian-12-amd64-*", owners = ["136693071363"] }} }}

[base]
provision = [ {{ shell = "base.sh" }} ]

[app]
provision = [
  {{ file = "www/", to = "/srv/www" }},
  {{ inline = ["echo '{{{{ vars.greeting }}}} from {{{{ environment }}}}' >> /srv/www/index.html"] }},{app_extra}
]

[[service]]
name = "web"
command = '''{SERVER}'''
port = 8000
publish = false

[verify]
commands = ["test -f /srv/www/index.html", "cat /base.txt"]
http = [{{ url = "http://127.0.0.1:8000/", status = 200, contains = "hello from staging" }}]
timeout = 30

[env.staging]
target = "ec2"
region = "us-east-1"
instance_type = "t3.micro"

[env.production]
target = "ec2"
promote_from = "staging"
region = "us-east-1"
"#
    )
}

pub fn project(prefix: &str) -> Project {
    project_with(prefix, "")
}

/// A project whose app layer also runs `app_extra` (provisioners, TOML).
pub fn project_with(prefix: &str, app_extra: &str) -> Project {
    // The local EC2's instances start from the debian-12 box.
    common::ensure_box();
    Project::new(
        prefix,
        &pipelinefile(app_extra),
        &[
            (
                "base.sh",
                "#!/bin/sh\nset -e\necho base-layer > /base.txt\n",
            ),
            ("www/index.html", "<h1>page</h1>\n"),
        ],
    )
}

pub fn bake(p: &Project, ec2: &local_ec2::LocalEc2) -> common::Run {
    let env = ec2.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    p.pipe_env(&["bake", "--env", "staging", "--no-progress"], &env)
}

/// The machine folders left in `.pipe/ec2` (the layer locks stay).
pub fn machine_folders(p: &Project) -> Vec<String> {
    std::fs::read_dir(p.path().join(".pipe/ec2"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "locks")
                .collect()
        })
        .unwrap_or_default()
}

pub fn assert_nothing_left(p: &Project, ec2: &local_ec2::LocalEc2) {
    assert_eq!(ec2.live_instances(&p.name), vec![], "instances left");
    assert_eq!(
        ec2.key_pairs(&p.name),
        Vec::<String>::new(),
        "key pairs left"
    );
    assert_eq!(
        ec2.security_groups(&p.name),
        Vec::<String>::new(),
        "security groups left"
    );
    assert_eq!(machine_folders(p), Vec::<String>::new(), "key folders left");
    assert_eq!(p.journals(), Vec::<String>::new(), "journals left");
}

pub const SLOW_APP: &str = "\n  { inline = [\"echo APP-PROVISIONING-NOW\", \"sleep 120\"] },";

pub fn spawn_bake(
    p: &Project,
    ec2: &local_ec2::LocalEc2,
    extra: &[(&str, &str)],
) -> common::Spawned {
    let env = ec2.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend_from_slice(extra);
    spawn_pipe(
        p.path(),
        &["bake", "--env", "staging", "--no-progress"],
        &env,
    )
}
