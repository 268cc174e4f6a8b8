//! Starting a machine on EC2: folder and key, key pair, security group, instance, SSH.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::communicators::ssh::{Bastion, HostKeyPolicy, SshComm, SshSettings};
use crate::config::{Ec2Settings, RootVolume, SshInterface};
use crate::engine::aws::wait::WaitPolicy;
use crate::engine::aws::{
    AwsClient, InstanceInfo, InstanceLaunch, RootVolumeSpec, Tagged, is_loopback_endpoint,
};
use crate::error::{Error, Result};
use crate::provisioners::trace::Traced;
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
    pub ssh_username: String,
    /// The environment's launch and SSH options (subnet, groups, profile, root volume,
    /// CIDRs, interface, host, port, bastion).
    pub settings: &'a Ec2Settings,
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

    let cidrs = match l.settings.ssh_cidrs.as_slice() {
        [] => vec![caller_cidr(l.client)?],
        written => written.to_vec(),
    };
    let cidr = cidrs.join(", ");
    let port = l.settings.ssh_port.unwrap_or(22);
    // The root volume goes on the source AMI's root device, which only the AMI knows.
    let root_volume = match &l.settings.root_volume {
        Some(v) => Some((root_device(l.client, &l.image)?, volume_spec(v))),
        None => None,
    };
    let group = Resource::Ec2SecurityGroup {
        region: region.clone(),
        endpoint: endpoint.clone(),
        name: l.name.clone(),
    };
    let group_id = resource::create(runner, destroyer(), &group, || {
        let on = || failed(format!("security group {}", l.name));
        let vpc = match &l.settings.subnet_id {
            Some(s) => Some(l.client.subnet_vpc(s).map_err(on())?),
            None => None,
        };
        let id = l
            .client
            .create_security_group(
                &l.name,
                "pipe: SSH to a build instance, for one run",
                vpc.as_deref(),
                &tags,
            )
            .map_err(on())?;
        l.client
            .authorize_ingress(&id, port, &cidrs)
            .map_err(on())?;
        Ok(id)
    })?;
    resources.push(group);

    let instance = Resource::Ec2Instance {
        region: region.clone(),
        endpoint,
        name: l.name.clone(),
    };
    let mut groups = vec![group_id];
    groups.extend(l.settings.security_group_ids.iter().cloned());
    let launch = InstanceLaunch {
        image: l.image.clone(),
        instance_type: l.instance_type.clone(),
        key_name: l.name.clone(),
        security_groups: groups,
        subnet: l.settings.subnet_id.clone(),
        associate_public_ip: l.settings.associate_public_ip,
        iam_instance_profile: l.settings.iam_instance_profile.clone(),
        root_volume,
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
        "{}: instance {} launched ({} from {}, SSH to port {port} from {cidr} only)",
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
    let mut s = ssh_settings(l.settings, &running, &l.ssh_username, &dir, l.root)?;
    s.ssh_timeout = l.ssh_timeout;
    let host = s.host.clone();
    let via = s
        .bastion
        .as_ref()
        .map(|b| format!(" via {}@{}:{}", b.user, b.host, b.port))
        .unwrap_or_default();
    let comm = SshComm::new(s);
    let started = std::time::Instant::now();
    comm.connect().map_err(|e| match e {
        crate::communicators::ExecError::Interrupted => Error::Interrupted,
        e => Error::runtime(
            format!("no SSH to {} ({}): {e}", l.name, launched.id),
            Some(format!(
                "the security group lets port {port} in from {cidr} only (`ssh_cidrs`); connecting to {host}:{port}{via} (`ssh_interface`, `ssh_host`, `bastion`); check the instance's console output in the EC2 console; if sshd is only slow to start, raise the environment's `ssh_timeout` (now {}s)",
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
        comm: Traced::boxed(Box::new(comm), printer),
        resources,
        login: format!(
            "ssh -i {} -o StrictHostKeyChecking=no -p {port}{} {}@{host}",
            key_path(&dir).display(),
            match &l.settings.bastion {
                Some(_) => via.replace(" via ", " -J "),
                None => String::new(),
            },
            l.ssh_username
        ),
        build_env: BTreeMap::new(),
    };
    Ok((machine, launched.id))
}

/// How pipe reaches an instance over SSH: the address `ssh_interface` picks (the public IP
/// falls back to the private one) unless `ssh_host` overrides it, `ssh_port`, the machine's
/// own key and known_hosts in its folder, and the bastion, whose key is read from the host
/// (`~/` is the home folder, a relative path is relative to the Pipelinefile).
pub fn ssh_settings(
    settings: &Ec2Settings,
    instance: &InstanceInfo,
    user: &str,
    dir: &Path,
    root: &Path,
) -> Result<SshSettings> {
    let address = match settings.ssh_interface {
        SshInterface::PublicIp => instance.public_ip.clone().or(instance.private_ip.clone()),
        SshInterface::PrivateIp => instance.private_ip.clone(),
    };
    let host = settings.ssh_host.clone().or(address).ok_or_else(|| {
        let which = match settings.ssh_interface {
            SshInterface::PublicIp => "no IP address",
            SshInterface::PrivateIp => "no private IP address",
        };
        Error::runtime(
            format!("connecting to instance {}: it runs but has {which}", instance.id),
            Some(
                "give the subnet public IPs (`associate_public_ip = true` with `subnet_id`), or bake from inside the VPC with `ssh_interface = \"private_ip\"` or through a `bastion`"
                    .into(),
            ),
        )
    })?;
    let mut s = SshSettings::new(host, user.to_string(), key_path(dir));
    s.port = settings.ssh_port.unwrap_or(22);
    s.host_key = HostKeyPolicy::AcceptNew;
    s.known_hosts = dir.join("known_hosts");
    s.ssh_timeout = settings.ssh_timeout.map_or(
        crate::communicators::ssh::DEFAULT_SSH_TIMEOUT,
        Duration::from_secs,
    );
    s.bastion = settings.bastion.as_ref().map(|b| Bastion {
        host: b.host.clone(),
        port: b.port,
        user: b.user.clone().unwrap_or_else(|| user.to_string()),
        key: Some(host_path(root, &b.key)),
    });
    Ok(s)
}

/// A path written in the Pipelinefile for a file read on this host: `~/` is the home folder,
/// a relative path is relative to the Pipelinefile's folder.
fn host_path(root: &Path, written: &str) -> PathBuf {
    match written.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"))
            .join(rest),
        None => root.join(written),
    }
}

/// The device the root volume of `image` is attached as.
fn root_device(client: &AwsClient, image: &str) -> Result<String> {
    let found = client.image(image)?;
    found
        .as_ref()
        .and_then(|i| i.root_device_name.clone())
        .ok_or_else(|| {
            Error::runtime(
                format!(
                    "looking up the root device of AMI {image} (for `root_volume`): {}",
                    if found.is_some() {
                        "DescribeImages gives no root device name"
                    } else {
                        "no such AMI"
                    }
                ),
                Some("check the box's AMI, or leave `root_volume` out".into()),
            )
        })
}

fn volume_spec(v: &RootVolume) -> RootVolumeSpec {
    RootVolumeSpec {
        size_gb: v.size_gb,
        volume_type: v.volume_type.clone(),
        encrypted: v.encrypted,
        kms_key_id: v.kms_key_id.clone(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Ec2Bastion;

    fn instance(public: Option<&str>, private: Option<&str>) -> InstanceInfo {
        InstanceInfo {
            id: "i-1".into(),
            state: "running".into(),
            public_ip: public.map(str::to_string),
            private_ip: private.map(str::to_string),
            state_reason: None,
            image: "ami-1".into(),
            tags: Tagged::new(),
        }
    }

    #[test]
    fn ssh_settings_follow_the_interface_host_port_and_bastion() {
        let dir = Path::new("/p/.pipe/ec2/m");
        let root = Path::new("/p");
        let both = instance(Some("203.0.113.9"), Some("10.0.0.9"));
        let mut s = Ec2Settings::default();

        let d = ssh_settings(&s, &both, "admin", dir, root).unwrap();
        assert_eq!((d.host.as_str(), d.port), ("203.0.113.9", 22));
        assert_eq!(d.user, "admin");
        assert_eq!(d.key, dir.join("id_ed25519"));
        assert_eq!(d.known_hosts, dir.join("known_hosts"));
        assert_eq!(d.bastion, None);
        // No public IP: the private one, as before the option existed.
        let private_only = instance(None, Some("10.0.0.9"));
        let d = ssh_settings(&s, &private_only, "admin", dir, root).unwrap();
        assert_eq!(d.host, "10.0.0.9");

        s.ssh_interface = SshInterface::PrivateIp;
        s.ssh_port = Some(2222);
        s.bastion = Some(Ec2Bastion {
            host: "bastion.example.com".into(),
            port: 2200,
            user: None,
            key: "keys/bastion".into(),
        });
        let d = ssh_settings(&s, &both, "admin", dir, root).unwrap();
        assert_eq!((d.host.as_str(), d.port), ("10.0.0.9", 2222));
        assert_eq!(
            d.bastion,
            Some(Bastion {
                host: "bastion.example.com".into(),
                port: 2200,
                user: "admin".into(),
                key: Some(PathBuf::from("/p/keys/bastion")),
            })
        );
        // A private IP is required then; its absence says what to do.
        let public_only = instance(Some("203.0.113.9"), None);
        let err = ssh_settings(&s, &public_only, "admin", dir, root).unwrap_err();
        assert!(err.to_string().contains("no private IP address"), "{err}");
        assert!(err.hint().unwrap().contains("bastion"));

        s.ssh_host = Some("build.internal".into());
        s.bastion.as_mut().unwrap().user = Some("ec2-user".into());
        s.bastion.as_mut().unwrap().key = "~/.ssh/bastion".into();
        let d = ssh_settings(&s, &public_only, "admin", dir, root).unwrap();
        assert_eq!(d.host, "build.internal");
        let b = d.bastion.unwrap();
        assert_eq!(b.user, "ec2-user");
        let home = PathBuf::from(std::env::var_os("HOME").unwrap());
        assert_eq!(b.key, Some(home.join(".ssh/bastion")));
    }
}
