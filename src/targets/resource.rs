//! One destroy per kind of journaled resource, used by the runner's cleanups (through the
//! targets that create them) and by `pipe clean` alike, so a resource is removed the same way
//! whether its run failed, was interrupted, or was killed and swept later.
//!
//! The Docker engine is connected only when a container or an image is to be removed, and AWS
//! only when an EC2 resource is (once per region and endpoint): `pipe clean` on a host that runs
//! only QEMU asks for neither.

use std::cell::RefCell;
use std::path::Path;
use std::time::Duration;

use crate::engine::aws::{self, AwsClient, AwsSettings, wait::WaitPolicy};
use crate::engine::docker::DockerClient;
use crate::error::{Error, Result};
use crate::runner::{Resource, Runner};

use crate::engine::qemu as vm;

/// How long a QEMU process gets to quit before it is killed.
const QEMU_GRACE: Duration = Duration::from_secs(5);
/// How long a terminated instance may take to be gone, and its security group to be free.
const EC2_GONE: Duration = Duration::from_secs(600);
/// How long a refresh that is rolled back may take to end, in a cleanup.
const REFRESH_GONE: Duration = Duration::from_secs(3600);

/// Destroys resources; holds the Docker and AWS connections once they were needed.
#[derive(Default)]
pub struct Destroyer {
    docker: RefCell<Option<DockerClient>>,
    aws: RefCell<Vec<AwsClient>>,
}

impl Destroyer {
    /// A destroyer that uses this connection for containers and images.
    pub fn with_docker(client: DockerClient) -> Self {
        Self {
            docker: RefCell::new(Some(client)),
            aws: RefCell::default(),
        }
    }

    fn docker(&self) -> Result<DockerClient> {
        if let Some(c) = &*self.docker.borrow() {
            return Ok(c.clone());
        }
        let c = DockerClient::connect()?;
        *self.docker.borrow_mut() = Some(c.clone());
        Ok(c)
    }

    /// A destroyer that uses this AWS client for EC2 resources in its region and endpoint.
    pub fn with_aws(client: AwsClient) -> Self {
        Self {
            docker: RefCell::default(),
            aws: RefCell::new(vec![client]),
        }
    }

    fn aws(&self, region: &str, endpoint: &Option<String>) -> Result<AwsClient> {
        self.aws_as(region, endpoint, &None)
    }

    /// [`Self::aws`] through `role` (assumed with STS) when given: a resource in another
    /// account.
    fn aws_as(
        &self,
        region: &str,
        endpoint: &Option<String>,
        role: &Option<String>,
    ) -> Result<AwsClient> {
        let same = |c: &AwsClient| {
            c.region() == region
                && c.endpoint() == endpoint.as_deref()
                && c.role() == role.as_deref()
        };
        if let Some(c) = self.aws.borrow().iter().find(|c| same(c)) {
            return Ok(c.clone());
        }
        let settings = AwsSettings {
            region: Some(region.to_string()),
            endpoint_url: endpoint.clone(),
            role: role.as_ref().map(|arn| aws::AssumedRole {
                arn: arn.clone(),
                session_name: "pipe-clean".into(),
            }),
            ..AwsSettings::default()
        };
        let c = AwsClient::connect(&settings)?;
        self.aws.borrow_mut().push(c.clone());
        Ok(c)
    }

    /// Removes `res`; `Ok(false)` when it was already gone.
    pub fn destroy(&self, res: &Resource) -> Result<bool> {
        match res {
            Resource::Container { name } => Ok(self.docker()?.remove_container(name)?),
            Resource::Image { reference } => Ok(self.docker()?.remove_image(reference, true)?),
            Resource::QemuMachine { pidfile, overlay } => {
                let existed = stop_qemu(pidfile)?;
                let removed = remove_path(overlay)?;
                // Everything else in the folder goes too, except the console log, so that a
                // machine that failed to boot can still be read about.
                if let Some(dir) = pidfile.parent()
                    && let Ok(rd) = std::fs::read_dir(dir)
                {
                    for e in rd.flatten() {
                        if e.file_name() != "console.log" && e.path().is_file() {
                            let _ = std::fs::remove_file(e.path());
                        }
                    }
                }
                Ok(existed || removed)
            }
            Resource::QemuProcess { pidfile } => stop_qemu(pidfile),
            Resource::Path { path } => remove_path(path),
            Resource::Ec2Instance {
                region,
                endpoint,
                name,
            } => Ok(terminate(&self.aws(region, endpoint)?, name)?),
            Resource::Ec2SecurityGroup {
                region,
                endpoint,
                name,
            } => {
                let c = self.aws(region, endpoint)?;
                let groups = c.security_groups(&[("group-name".into(), vec![name.clone()])])?;
                for (id, _, _) in &groups {
                    c.delete_security_group(id, EC2_GONE, &crate::interrupt::abandoned)?;
                }
                Ok(!groups.is_empty())
            }
            Resource::Ec2KeyPair {
                region,
                endpoint,
                name,
            } => Ok(self.aws(region, endpoint)?.delete_key_pair(name)?),
            Resource::Ec2Image {
                region,
                endpoint,
                name,
            } => {
                let c = self.aws(region, endpoint)?;
                let images =
                    c.describe_images(&["self".into()], &[("name".into(), vec![name.clone()])])?;
                for image in &images {
                    c.delete_image(&image.id)?;
                }
                Ok(!images.is_empty())
            }
            Resource::Ec2TemplateVersion {
                region,
                endpoint,
                template_id,
                run,
                role,
            } => {
                let c = self.aws_as(region, endpoint, role)?;
                let mut any = false;
                for v in c.template_versions(template_id)? {
                    if !v.default && v.description.as_deref().is_some_and(|d| d.contains(run)) {
                        any |= c.delete_template_version(template_id, v.number)?;
                    }
                }
                Ok(any)
            }
            Resource::Ec2Refresh {
                region,
                endpoint,
                group,
                role,
            } => Ok(self.aws_as(region, endpoint, role)?.roll_back_refresh(
                group,
                REFRESH_GONE,
                &crate::interrupt::abandoned,
            )?),
            Resource::Ec2Group {
                region,
                endpoint,
                name,
                role,
            } => Ok(self.aws_as(region, endpoint, role)?.undo_incoming_group(
                name,
                REFRESH_GONE,
                &crate::interrupt::abandoned,
            )?),
            Resource::PromotionLock {
                region,
                endpoint,
                name,
                run,
                role,
            } => {
                let c = self.aws_as(region, endpoint, role)?;
                match c.parameter(name)? {
                    Some(p) if p.value.contains(run.as_str()) => Ok(c.delete_parameter(name)?),
                    _ => Ok(false),
                }
            }
            Resource::LedgerLock {
                bucket,
                key,
                region,
                endpoint,
                run,
            } => {
                let c = AwsClient::connect(&AwsSettings {
                    region: region.clone(),
                    endpoint_url: endpoint.clone(),
                    ..AwsSettings::default()
                })?;
                Ok(crate::ledger::release_s3_lock(c, bucket, key, run)?)
            }
        }
    }
}

/// Terminates the instances named `name` that are not terminated yet and waits until they
/// are; true when there was one.
fn terminate(c: &AwsClient, name: &str) -> std::result::Result<bool, aws::AwsError> {
    let live: Vec<String> = c
        .instances(&[
            ("tag:Name".into(), vec![name.to_string()]),
            (
                "instance-state-name".into(),
                ["pending", "running", "stopping", "stopped", "shutting-down"]
                    .map(String::from)
                    .to_vec(),
            ),
        ])?
        .into_iter()
        .map(|i| i.id)
        .collect();
    c.terminate_instances(&live)?;
    for id in &live {
        c.wait_instance(
            id,
            "terminated",
            WaitPolicy::up_to(EC2_GONE),
            &crate::interrupt::abandoned,
        )?;
    }
    Ok(!live.is_empty())
}

/// Journals `res`, creates it through `create`, and registers the one destroy of its kind as
/// its cleanup. Every resource a target creates goes through here.
pub fn create<T>(
    runner: &mut Runner<'_>,
    destroyer: Destroyer,
    res: &Resource,
    create: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let r2 = res.clone();
    runner.create(res.clone(), create, move || {
        destroyer.destroy(&r2).map(|_| ())
    })
}

/// Stops the QEMU of a pid file (QMP quit, then SIGKILL); true when one ran.
fn stop_qemu(pidfile: &Path) -> Result<bool> {
    let ran = vm::read_pid(pidfile).is_some_and(vm::qemu_alive);
    let existed = ran || pidfile.exists();
    if let Some(dir) = pidfile.parent() {
        vm::stop(dir, QEMU_GRACE).map_err(|e| {
            Error::runtime(format!("stopping QEMU of {}: {e}", dir.display()), None).caused_by(e)
        })?;
    }
    Ok(existed)
}

/// Removes a file or a folder; false when there was none.
pub fn remove_path(path: &Path) -> Result<bool> {
    let gone = |e: std::io::Error| {
        Error::runtime(format!("removing {}: {e}", path.display()), None).caused_by(e)
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(gone(e)),
        Ok(m) if m.is_dir() => match std::fs::remove_dir_all(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(gone(e)),
            _ => Ok(true),
        },
        Ok(_) => match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(gone(e)),
            _ => Ok(true),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_dead_qemu_machines_need_no_docker_and_report_what_existed() {
        let dir = tempfile::tempdir().unwrap();
        let d = Destroyer::default();
        let vm_dir = dir.path().join("vm");
        std::fs::create_dir_all(&vm_dir).unwrap();
        for f in ["disk.qcow2", "console.log", "id_ed25519", "qemu.pid"] {
            std::fs::write(vm_dir.join(f), "x").unwrap();
        }
        // A pid that is no QEMU: nothing is signalled, the files still go.
        std::fs::write(vm_dir.join("qemu.pid"), std::process::id().to_string()).unwrap();
        let machine = Resource::QemuMachine {
            pidfile: vm_dir.join("qemu.pid"),
            overlay: vm_dir.join("disk.qcow2"),
        };
        assert!(d.destroy(&machine).unwrap());
        let left: Vec<String> = std::fs::read_dir(&vm_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec!["console.log".to_string()]);
        assert!(!d.destroy(&machine).unwrap(), "already gone");
        let folder = Resource::Path { path: vm_dir };
        assert!(d.destroy(&folder).unwrap());
        assert!(!d.destroy(&folder).unwrap());
        assert!(d.docker.borrow().is_none(), "no Docker connection was made");
    }
}
