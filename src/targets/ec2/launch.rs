//! Starting a machine on EC2: folder and key, key pair, security group, instance, SSH.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::communicators::ssh::{HostKeyPolicy, SshComm, SshSettings};
use crate::engine::aws::wait::WaitPolicy;
use crate::engine::aws::{AwsClient, InstanceLaunch, Tagged, is_loopback_endpoint};
use crate::error::{Error, Result};
use crate::runner::{Resource, Runner};
use crate::targets::Machine;
use crate::targets::resource::{self, Destroyer};
use crate::ui::Printer;

use super::failed;

/// How long cloud-init may take to finish once SSH answers.
const CLOUD_INIT_WAIT: Duration = Duration::from_secs(300);

/// What a machine is launched with.
pub struct Launch<'a> {
    pub client: &'a AwsClient,
    /// Instance, key pair, security group and folder name: `pipe-<pipeline>-<purpose>-<run>`.
    pub name: String,
    pub image: String,
    pub instance_type: String,
    pub subnet: Option<String>,
    pub ssh_username: String,
    /// Tags of everything launched (`Name` is added).
    pub tags: Tagged,
    /// The project's root (for `.pipe/ec2/`).
    pub root: &'a Path,
    pub wait: Duration,
    /// How long sshd may take to answer once the instance runs (`ssh_timeout`).
    pub ssh_timeout: Duration,
}

/// The folder of a machine: `.pipe/ec2/<name>/`.
pub fn machine_dir(root: &Path, name: &str) -> PathBuf {
    crate::state::dir(root).join("ec2").join(name)
}

/// The private key of a machine's folder.
pub fn key_path(dir: &Path) -> PathBuf {
    dir.join("id_ed25519")
}

/// Launches the machine and connects to it; every resource journaled first, each with the
/// one destroy of its kind. Returns the machine and its instance id.
pub fn launch(
    runner: &mut Runner<'_>,
    l: &Launch<'_>,
    printer: &Printer,
) -> Result<(Machine, String)> {
    let region = l.client.region().to_string();
    let endpoint = l.client.endpoint().map(str::to_string);
    let destroyer = || Destroyer::with_aws(l.client.clone());
    let mut tags = l.tags.clone();
    tags.insert("Name".into(), l.name.clone());
    let mut resources = Vec::new();

    let dir = machine_dir(l.root, &l.name);
    let folder = Resource::Path { path: dir.clone() };
    let public_key = resource::create(runner, destroyer(), &folder, || make_key(&dir))?;
    resources.push(folder);

    let key_pair = Resource::Ec2KeyPair {
        region: region.clone(),
        endpoint: endpoint.clone(),
        name: l.name.clone(),
    };
    resource::create(runner, destroyer(), &key_pair, || {
        l.client
            .import_key_pair(&l.name, &public_key, &tags)
            .map_err(failed(format!("key pair {}", l.name)))
    })?;
    resources.push(key_pair);

    let cidr = caller_cidr(l.client)?;
    let group = Resource::Ec2SecurityGroup {
        region: region.clone(),
        endpoint: endpoint.clone(),
        name: l.name.clone(),
    };
    let group_id = resource::create(runner, destroyer(), &group, || {
        let on = || failed(format!("security group {}", l.name));
        let vpc = match &l.subnet {
            Some(s) => Some(l.client.subnet_vpc(s).map_err(on())?),
            None => None,
        };
        let id = l
            .client
            .create_security_group(
                &l.name,
                "pipe: SSH from the host that bakes, for one run",
                vpc.as_deref(),
                &tags,
            )
            .map_err(on())?;
        l.client.authorize_ingress(&id, 22, &cidr).map_err(on())?;
        Ok(id)
    })?;
    resources.push(group);

    let instance = Resource::Ec2Instance {
        region: region.clone(),
        endpoint,
        name: l.name.clone(),
    };
    let launch = InstanceLaunch {
        image: l.image.clone(),
        instance_type: l.instance_type.clone(),
        key_name: l.name.clone(),
        security_group: group_id,
        subnet: l.subnet.clone(),
        tags: tags.clone(),
        client_token: l.name.clone(),
    };
    let launched = resource::create(runner, destroyer(), &instance, || {
        l.client
            .run_instance(&launch)
            .map_err(failed(format!("instance {}", l.name)))
    })?;
    resources.push(instance);
    printer.info(format!(
        "{}: instance {} launched ({} from {}, SSH from {cidr} only)",
        l.name, launched.id, l.instance_type, l.image
    ));
    runner.pause_point(&format!("instance launched {}", l.name));
    let running = l
        .client
        .wait_instance(
            &launched.id,
            "running",
            WaitPolicy::up_to(l.wait),
            &crate::interrupt::requested,
        )
        .map_err(failed(&l.name))?;
    let host = running
        .public_ip
        .clone()
        .or(running.private_ip.clone())
        .ok_or_else(|| {
            Error::runtime(
                format!("instance {} runs but has no IP address", launched.id),
                Some("give the subnet public IPs, or bake from inside the VPC".into()),
            )
        })?;
    let mut s = SshSettings::new(host.clone(), l.ssh_username.clone(), key_path(&dir));
    s.host_key = HostKeyPolicy::AcceptNew;
    s.known_hosts = dir.join("known_hosts");
    s.ssh_timeout = l.ssh_timeout;
    let comm = SshComm::new(s);
    let started = std::time::Instant::now();
    comm.connect().map_err(|e| match e {
        crate::communicators::ExecError::Interrupted => Error::Interrupted,
        e => Error::runtime(
            format!("no SSH to {} ({}): {e}", l.name, launched.id),
            Some(format!(
                "the security group lets port 22 in from {cidr} only; check the instance's console output in the EC2 console; if sshd is only slow to start, raise the environment's `ssh_timeout` (now {}s)",
                l.ssh_timeout.as_secs()
            )),
        ),
    })?;
    printer.info(format!(
        "{}: SSH up on {host} {:.1}s after running",
        l.name,
        started.elapsed().as_secs_f64()
    ));
    let status = crate::targets::guest::wait_for_cloud_init(&comm, CLOUD_INIT_WAIT)?;
    if status.contains("error") {
        printer.warn(
            format!("{}: cloud-init reports an error ({status})", l.name),
            Some("its log is /var/log/cloud-init.log on the machine".into()),
        );
    }
    let machine = Machine {
        name: l.name.clone(),
        comm: Box::new(comm),
        resources,
        login: format!(
            "ssh -i {} -o StrictHostKeyChecking=no {}@{host}",
            key_path(&dir).display(),
            l.ssh_username
        ),
    };
    Ok((machine, launched.id))
}

/// A fresh ed25519 key in `dir` (private 0600, never leaves the host); returns the public
/// key line.
fn make_key(dir: &Path) -> Result<String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::runtime(format!("creating {}: {e}", dir.display()), None))?;
    let key = key_path(dir);
    crate::targets::guest::new_login_key(&key)?;
    std::fs::read_to_string(key.with_extension("pub"))
        .map(|k| k.trim().to_string())
        .map_err(|e| Error::runtime(format!("reading {}.pub: {e}", key.display()), None))
}

/// The /32 SSH may come from: this host as the endpoint sees it. The local EC2 is on the
/// loopback (127.0.0.1/32); AWS sees this host's public address, asked of AWS's checkip.
fn caller_cidr(client: &AwsClient) -> Result<String> {
    if client.endpoint().is_some_and(is_loopback_endpoint) {
        return Ok("127.0.0.1/32".into());
    }
    let ip = public_ip().map_err(|e| {
        Error::runtime(
            format!("finding this host's public address (for the SSH rule): {e}"),
            Some("checkip.amazonaws.com must be reachable over HTTP".into()),
        )
    })?;
    Ok(format!("{ip}/32"))
}

/// This host's public IPv4 address, from checkip.amazonaws.com (plain HTTP, one line).
fn public_ip() -> std::io::Result<std::net::Ipv4Addr> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let addr = ("checkip.amazonaws.com", 80)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: checkip.amazonaws.com\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    body.rsplit("\r\n\r\n")
        .next()
        .and_then(|b| b.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no address in the answer"))
}

/// The tags every resource of a run carries.
pub fn run_tags(pipeline: &str, run_id: &str, env: &str, layer: &str) -> Tagged {
    BTreeMap::from([
        ("pipe:run".to_string(), run_id.to_string()),
        ("pipe:pipeline".to_string(), pipeline.to_string()),
        ("pipe:env".to_string(), env.to_string()),
        ("pipe:layer".to_string(), layer.to_string()),
    ])
}
