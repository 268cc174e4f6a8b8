//! The EC2 calls pipe makes, each blocking, each error naming its call.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    ImageState, InstanceMetadataOptionsRequest, InstanceNetworkInterfaceSpecification,
    InstanceStateName, InstanceType, IpPermission, IpRange, ResourceType, Tag, TagSpecification,
    VolumeType,
};

use super::client::AwsClient;
use super::error::AwsError;
use super::wait::{self, Seen, WaitPolicy, Waiting};

/// Tags as key → value.
pub type Tagged = BTreeMap<String, String>;

/// An AMI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: String,
    pub name: String,
    /// `pending`, `available`, `failed`, ...
    pub state: String,
    /// ISO 8601, as AWS writes it (sorts by time).
    pub creation_date: String,
    pub tags: Tagged,
    /// The EBS snapshots behind it.
    pub snapshots: Vec<String>,
    /// The device its root volume is attached as (`/dev/xvda`), when AWS says.
    pub root_device_name: Option<String>,
    /// Deregistration protection is on (`enabled`, or enabled with a cooldown).
    pub protected: bool,
    /// One of its EBS snapshots is encrypted (another account needs a KMS grant to use it).
    pub encrypted: bool,
}

/// An instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    pub id: String,
    /// `pending`, `running`, `stopped`, `terminated`, ...
    pub state: String,
    pub public_ip: Option<String>,
    pub private_ip: Option<String>,
    /// Why it is in its state (`Server.InternalError: ...`), when AWS says.
    pub state_reason: Option<String>,
    /// The AMI it was launched from.
    pub image: String,
    pub tags: Tagged,
}

/// What to launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceLaunch {
    pub image: String,
    pub instance_type: String,
    pub key_name: String,
    /// The temporary group first, then the extra ones.
    pub security_groups: Vec<String>,
    pub subnet: Option<String>,
    /// `Some`: one network interface in `subnet`, with or without a public IP.
    pub associate_public_ip: Option<bool>,
    /// A name, or an ARN (`arn:...`).
    pub iam_instance_profile: Option<String>,
    /// The root volume's settings, on this device.
    pub root_volume: Option<(String, RootVolumeSpec)>,
    /// On the instance and its volumes.
    pub tags: Tagged,
    /// Makes a retried launch the same launch (RunInstances is idempotent per token).
    pub client_token: String,
}

/// How the root volume of an instance is made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootVolumeSpec {
    pub size_gb: Option<u32>,
    pub volume_type: Option<String>,
    pub encrypted: Option<bool>,
    pub kms_key_id: Option<String>,
}

/// Filters on tags: `tag:KEY = VALUE` each.
pub fn filter_tags(tags: &[(&str, &str)]) -> Vec<(String, Vec<String>)> {
    tags.iter()
        .map(|(k, v)| (format!("tag:{k}"), vec![v.to_string()]))
        .collect()
}

/// True when `url` is on the loopback (the local EC2).
pub fn is_loopback_endpoint(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', ':']).next().unwrap_or("");
    host == "localhost" || host.starts_with("127.") || rest.starts_with("[::1]")
}

fn filters(f: &[(String, Vec<String>)]) -> Vec<Filter> {
    f.iter()
        .map(|(name, values)| {
            Filter::builder()
                .name(name)
                .set_values(Some(values.clone()))
                .build()
        })
        .collect()
}

fn tags_of(tags: &[Tag]) -> Tagged {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

fn sdk_tags(tags: &Tagged) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn spec(kind: ResourceType, tags: &Tagged) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(sdk_tags(tags)))
        .build()
}

fn image_info(i: &aws_sdk_ec2::types::Image) -> ImageInfo {
    ImageInfo {
        id: i.image_id().unwrap_or_default().to_string(),
        name: i.name().unwrap_or_default().to_string(),
        state: i
            .state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        creation_date: i.creation_date().unwrap_or_default().to_string(),
        tags: tags_of(i.tags()),
        snapshots: i
            .block_device_mappings()
            .iter()
            .filter_map(|b| b.ebs()?.snapshot_id().map(str::to_string))
            .collect(),
        root_device_name: i.root_device_name().map(str::to_string),
        protected: i
            .deregistration_protection()
            .is_some_and(|p| p.starts_with("enabled")),
        encrypted: i
            .block_device_mappings()
            .iter()
            .any(|b| b.ebs().and_then(|e| e.encrypted()) == Some(true)),
    }
}

fn instance_info(i: &aws_sdk_ec2::types::Instance) -> InstanceInfo {
    InstanceInfo {
        id: i.instance_id().unwrap_or_default().to_string(),
        image: i.image_id().unwrap_or_default().to_string(),
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default(),
        public_ip: i.public_ip_address().map(str::to_string),
        private_ip: i.private_ip_address().map(str::to_string),
        state_reason: i.state_reason().and_then(|r| {
            let code = r.code().unwrap_or_default();
            let msg = r.message().unwrap_or_default();
            (!code.is_empty() || !msg.is_empty()).then(|| format!("{code}: {msg}"))
        }),
        tags: tags_of(i.tags()),
    }
}

impl AwsClient {
    /// Images by owners and filters (every page).
    pub fn describe_images(
        &self,
        owners: &[String],
        filter: &[(String, Vec<String>)],
    ) -> Result<Vec<ImageInfo>, AwsError> {
        let pages: Vec<_> = self.block(
            self.ec2
                .describe_images()
                .set_owners((!owners.is_empty()).then(|| owners.to_vec()))
                .set_filters(Some(filters(filter)))
                .into_paginator()
                .send()
                .collect(),
        );
        let mut out = Vec::new();
        for page in pages {
            let page = page.map_err(|e| AwsError::api("DescribeImages", e))?;
            out.extend(page.images().iter().map(image_info));
        }
        Ok(out)
    }

    /// One image by id; `None` when it does not exist (any more).
    pub fn image(&self, id: &str) -> Result<Option<ImageInfo>, AwsError> {
        let out = self.block(self.ec2.describe_images().image_ids(id).send());
        match out {
            Ok(o) => Ok(o.images().first().map(image_info)),
            Err(e) => {
                let e = AwsError::api("DescribeImages", e);
                if e.is_not_found() || e.code() == Some("InvalidAMIID.Malformed") {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The newest image (by CreationDate) matching `name` (wildcards allowed) owned by one of
    /// `owners`.
    pub fn newest_image(
        &self,
        name: &str,
        owners: &[String],
    ) -> Result<Option<ImageInfo>, AwsError> {
        let mut found = self.describe_images(owners, &[("name".into(), vec![name.into()])])?;
        found.retain(|i| i.state == "available" || i.state.is_empty());
        found.sort_by(|a, b| a.creation_date.cmp(&b.creation_date));
        Ok(found.pop())
    }

    /// Imports a public key as key pair `name`, tagged.
    pub fn import_key_pair(
        &self,
        name: &str,
        public_key: &str,
        tags: &Tagged,
    ) -> Result<(), AwsError> {
        self.block(
            self.ec2
                .import_key_pair()
                .key_name(name)
                .public_key_material(aws_sdk_ec2::primitives::Blob::new(public_key.as_bytes()))
                .tag_specifications(spec(ResourceType::KeyPair, tags))
                .send(),
        )
        .map_err(|e| AwsError::api("ImportKeyPair", e))?;
        Ok(())
    }

    /// Key pairs matching the filters: (name, tags).
    pub fn key_pairs(
        &self,
        filter: &[(String, Vec<String>)],
    ) -> Result<Vec<(String, Tagged)>, AwsError> {
        let out = self
            .block(
                self.ec2
                    .describe_key_pairs()
                    .set_filters(Some(filters(filter)))
                    .send(),
            )
            .map_err(|e| AwsError::api("DescribeKeyPairs", e))?;
        Ok(out
            .key_pairs()
            .iter()
            .map(|k| {
                (
                    k.key_name().unwrap_or_default().to_string(),
                    tags_of(k.tags()),
                )
            })
            .collect())
    }

    /// Deletes key pair `name`; false when there was none.
    pub fn delete_key_pair(&self, name: &str) -> Result<bool, AwsError> {
        let existed = !self
            .key_pairs(&[("key-name".into(), vec![name.into()])])?
            .is_empty();
        if existed {
            self.block(self.ec2.delete_key_pair().key_name(name).send())
                .map_err(|e| AwsError::api("DeleteKeyPair", e))?;
        }
        Ok(existed)
    }

    /// The VPC of a subnet.
    pub fn subnet_vpc(&self, subnet: &str) -> Result<String, AwsError> {
        let out = self
            .block(self.ec2.describe_subnets().subnet_ids(subnet).send())
            .map_err(|e| AwsError::api("DescribeSubnets", e))?;
        out.subnets()
            .first()
            .and_then(|s| s.vpc_id())
            .map(str::to_string)
            .ok_or_else(|| AwsError::Api {
                operation: "DescribeSubnets",
                code: None,
                detail: format!("subnet {subnet} has no VPC"),
            })
    }

    /// Creates security group `name` (in `vpc`, else the default VPC), tagged, with no
    /// ingress; returns its id.
    pub fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc: Option<&str>,
        tags: &Tagged,
    ) -> Result<String, AwsError> {
        let out = self
            .block(
                self.ec2
                    .create_security_group()
                    .group_name(name)
                    .description(description)
                    .set_vpc_id(vpc.map(str::to_string))
                    .tag_specifications(spec(ResourceType::SecurityGroup, tags))
                    .send(),
            )
            .map_err(|e| AwsError::api("CreateSecurityGroup", e))?;
        Ok(out.group_id().unwrap_or_default().to_string())
    }

    /// Lets TCP `port` in from `cidrs` only (one rule).
    pub fn authorize_ingress(
        &self,
        group: &str,
        port: u16,
        cidrs: &[String],
    ) -> Result<(), AwsError> {
        let rule = IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(i32::from(port))
            .to_port(i32::from(port))
            .set_ip_ranges(Some(
                cidrs
                    .iter()
                    .map(|c| IpRange::builder().cidr_ip(c).build())
                    .collect(),
            ))
            .build();
        self.block(
            self.ec2
                .authorize_security_group_ingress()
                .group_id(group)
                .ip_permissions(rule)
                .send(),
        )
        .map_err(|e| AwsError::api("AuthorizeSecurityGroupIngress", e))?;
        Ok(())
    }

    /// Security groups matching the filters: (id, name, tags).
    pub fn security_groups(
        &self,
        filter: &[(String, Vec<String>)],
    ) -> Result<Vec<(String, String, Tagged)>, AwsError> {
        let pages: Vec<_> = self.block(
            self.ec2
                .describe_security_groups()
                .set_filters(Some(filters(filter)))
                .into_paginator()
                .send()
                .collect(),
        );
        let mut out = Vec::new();
        for page in pages {
            let page = page.map_err(|e| AwsError::api("DescribeSecurityGroups", e))?;
            out.extend(page.security_groups().iter().map(|g| {
                (
                    g.group_id().unwrap_or_default().to_string(),
                    g.group_name().unwrap_or_default().to_string(),
                    tags_of(g.tags()),
                )
            }));
        }
        Ok(out)
    }

    /// Deletes a security group by id; retried while an instance that used it is still
    /// shutting down (`DependencyViolation`), up to `patience`.
    pub fn delete_security_group(
        &self,
        id: &str,
        patience: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<(), AwsError> {
        let started = std::time::Instant::now();
        loop {
            let out = self.block(self.ec2.delete_security_group().group_id(id).send());
            match out.map_err(|e| AwsError::api("DeleteSecurityGroup", e)) {
                Ok(_) => return Ok(()),
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e)
                    if e.code() == Some("DependencyViolation") && started.elapsed() < patience =>
                {
                    wait::sleep_unless(Duration::from_secs(2), stop)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Launches one instance with IMDSv2 required (`HttpTokens=required`); returns it as
    /// RunInstances answered (normally `pending`).
    pub fn run_instance(&self, launch: &InstanceLaunch) -> Result<InstanceInfo, AwsError> {
        let mut req = self
            .ec2
            .run_instances()
            .image_id(&launch.image)
            .instance_type(InstanceType::from(launch.instance_type.as_str()))
            .key_name(&launch.key_name);
        // A public IP is asked for on the instance's network interface, which then also holds
        // the subnet and the groups (AWS refuses them beside it).
        req = match launch.associate_public_ip {
            Some(public) => req.network_interfaces(
                InstanceNetworkInterfaceSpecification::builder()
                    .device_index(0)
                    .set_subnet_id(launch.subnet.clone())
                    .set_groups(Some(launch.security_groups.clone()))
                    .associate_public_ip_address(public)
                    .delete_on_termination(true)
                    .build(),
            ),
            None => req
                .set_security_group_ids(Some(launch.security_groups.clone()))
                .set_subnet_id(launch.subnet.clone()),
        };
        if let Some(p) = &launch.iam_instance_profile {
            let spec = IamInstanceProfileSpecification::builder();
            req = req.iam_instance_profile(if p.starts_with("arn:") {
                spec.arn(p).build()
            } else {
                spec.name(p).build()
            });
        }
        if let Some((device, v)) = &launch.root_volume {
            let ebs = EbsBlockDevice::builder()
                .delete_on_termination(true)
                .set_volume_size(v.size_gb.map(|n| n as i32))
                .set_volume_type(v.volume_type.as_deref().map(VolumeType::from))
                .set_encrypted(v.encrypted)
                .set_kms_key_id(v.kms_key_id.clone())
                .build();
            req = req.block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(device)
                    .ebs(ebs)
                    .build(),
            );
        }
        let out = self
            .block(
                req.min_count(1)
                    .max_count(1)
                    .client_token(&launch.client_token)
                    .metadata_options(
                        InstanceMetadataOptionsRequest::builder()
                            .http_tokens(HttpTokensState::Required)
                            .http_endpoint(
                                aws_sdk_ec2::types::InstanceMetadataEndpointState::Enabled,
                            )
                            .build(),
                    )
                    .tag_specifications(spec(ResourceType::Instance, &launch.tags))
                    .tag_specifications(spec(ResourceType::Volume, &launch.tags))
                    .send(),
            )
            .map_err(|e| AwsError::api("RunInstances", e))?;
        out.instances()
            .first()
            .map(instance_info)
            .ok_or_else(|| AwsError::Api {
                operation: "RunInstances",
                code: None,
                detail: "no instance in the answer".into(),
            })
    }

    /// Instances matching the filters (every page, every reservation).
    pub fn instances(
        &self,
        filter: &[(String, Vec<String>)],
    ) -> Result<Vec<InstanceInfo>, AwsError> {
        let pages: Vec<_> = self.block(
            self.ec2
                .describe_instances()
                .set_filters(Some(filters(filter)))
                .into_paginator()
                .send()
                .collect(),
        );
        let mut out = Vec::new();
        for page in pages {
            let page = page.map_err(|e| AwsError::api("DescribeInstances", e))?;
            out.extend(
                page.reservations()
                    .iter()
                    .flat_map(|r| r.instances().iter().map(instance_info)),
            );
        }
        Ok(out)
    }

    /// One instance by id; `None` when AWS does not know it.
    pub fn instance(&self, id: &str) -> Result<Option<InstanceInfo>, AwsError> {
        let out = self.block(self.ec2.describe_instances().instance_ids(id).send());
        match out.map_err(|e| AwsError::api("DescribeInstances", e)) {
            Ok(o) => Ok(o
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .next()
                .map(instance_info)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stops an instance (its EBS volumes stay).
    pub fn stop_instance(&self, id: &str) -> Result<(), AwsError> {
        self.block(self.ec2.stop_instances().instance_ids(id).send())
            .map_err(|e| AwsError::api("StopInstances", e))?;
        Ok(())
    }

    /// Terminates instances.
    pub fn terminate_instances(&self, ids: &[String]) -> Result<(), AwsError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.block(
            self.ec2
                .terminate_instances()
                .set_instance_ids(Some(ids.to_vec()))
                .send(),
        )
        .map_err(|e| AwsError::api("TerminateInstances", e))?;
        Ok(())
    }

    /// Waits until an instance is in `state` (`running`, `stopped`, `terminated`). An instance
    /// that ends `terminated` (or `stopped` while waiting for `running`) fails the wait with
    /// its state reason.
    pub fn wait_instance(
        &self,
        id: &str,
        state: &str,
        policy: WaitPolicy,
        stop: &dyn Fn() -> bool,
    ) -> Result<InstanceInfo, AwsError> {
        let mut last = None;
        let waiting = Waiting {
            what: "instance",
            id,
            state,
        };
        wait::until(waiting, policy, stop, || {
            let Some(i) = self.instance(id)? else {
                return Ok(if state == "terminated" {
                    Seen::Done
                } else {
                    Seen::Pending("not yet known".into())
                });
            };
            let now = i.state.clone();
            let reason = i.state_reason.clone().unwrap_or_default();
            last = Some(i);
            Ok(if now == state {
                Seen::Done
            } else if now == InstanceStateName::Terminated.as_str()
                || (state == "running" && now == InstanceStateName::Stopped.as_str())
            {
                Seen::Failed { state: now, reason }
            } else {
                Seen::Pending(now)
            })
        })?;
        Ok(last.unwrap_or(InstanceInfo {
            id: id.to_string(),
            state: state.to_string(),
            public_ip: None,
            private_ip: None,
            state_reason: None,
            image: String::new(),
            tags: Tagged::new(),
        }))
    }

    /// Creates an AMI from a (stopped) instance, the image tagged; returns its id. (Its
    /// snapshots exist only once it is available: tag them then.)
    pub fn create_image(
        &self,
        instance: &str,
        name: &str,
        description: &str,
        tags: &Tagged,
    ) -> Result<String, AwsError> {
        let out = self
            .block(
                self.ec2
                    .create_image()
                    .instance_id(instance)
                    .name(name)
                    .description(description)
                    .tag_specifications(spec(ResourceType::Image, tags))
                    .send(),
            )
            .map_err(|e| AwsError::api("CreateImage", e))?;
        Ok(out.image_id().unwrap_or_default().to_string())
    }

    /// Waits until an image is `available`; `failed` fails the wait.
    pub fn wait_image(
        &self,
        id: &str,
        policy: WaitPolicy,
        stop: &dyn Fn() -> bool,
    ) -> Result<ImageInfo, AwsError> {
        let mut last = None;
        let waiting = Waiting {
            what: "image",
            id,
            state: "available",
        };
        wait::until(waiting, policy, stop, || {
            let Some(i) = self.image(id)? else {
                return Ok(Seen::Pending("not yet known".into()));
            };
            let now = i.state.clone();
            last = Some(i);
            Ok(if now == ImageState::Available.as_str() {
                Seen::Done
            } else if now == ImageState::Failed.as_str() || now == ImageState::Error.as_str() {
                Seen::Failed {
                    state: now,
                    reason: String::new(),
                }
            } else {
                Seen::Pending(now)
            })
        })?;
        Ok(last.expect("seen available"))
    }

    /// Copies `source` (an AMI in `source_region`) into this client's region as `name`,
    /// tagged at creation; encrypted with `kms_key` when given. Idempotent per `name` (the
    /// client token). Returns the copy's id; its snapshots exist once it is available.
    pub fn copy_image(
        &self,
        source_region: &str,
        source: &str,
        name: &str,
        description: &str,
        kms_key: Option<&str>,
        tags: &Tagged,
    ) -> Result<String, AwsError> {
        let out = self
            .block(
                self.ec2
                    .copy_image()
                    .source_region(source_region)
                    .source_image_id(source)
                    .name(name)
                    .description(description)
                    .client_token(name)
                    .set_encrypted(kms_key.map(|_| true))
                    .set_kms_key_id(kms_key.map(str::to_string))
                    .tag_specifications(spec(ResourceType::Image, tags))
                    .send(),
            )
            .map_err(|e| AwsError::api("CopyImage", e))?;
        Ok(out.image_id().unwrap_or_default().to_string())
    }

    /// Deregisters an image and deletes its snapshots; false when there was no image.
    pub fn delete_image(&self, id: &str) -> Result<bool, AwsError> {
        let Some(image) = self.image(id)? else {
            return Ok(false);
        };
        self.deregister_image(id)?;
        for snap in &image.snapshots {
            self.delete_snapshot(snap)?;
        }
        Ok(true)
    }

    /// Deregisters an image (its snapshots stay); false when it was already gone.
    pub fn deregister_image(&self, id: &str) -> Result<bool, AwsError> {
        match self
            .block(self.ec2.deregister_image().image_id(id).send())
            .map_err(|e| AwsError::api("DeregisterImage", e))
        {
            Ok(_) => Ok(true),
            // Deregistered already, still listed for a while.
            Err(e) if e.is_not_found() || e.code() == Some("InvalidAMIID.Unavailable") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes a snapshot; false when it was already gone.
    pub fn delete_snapshot(&self, id: &str) -> Result<bool, AwsError> {
        match self
            .block(self.ec2.delete_snapshot().snapshot_id(id).send())
            .map_err(|e| AwsError::api("DeleteSnapshot", e))
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The ids of this account's snapshots matching the filters (every page).
    pub fn snapshots(&self, filter: &[(String, Vec<String>)]) -> Result<Vec<String>, AwsError> {
        let pages: Vec<_> = self.block(
            self.ec2
                .describe_snapshots()
                .owner_ids("self")
                .set_filters(Some(filters(filter)))
                .into_paginator()
                .send()
                .collect(),
        );
        let mut out = Vec::new();
        for page in pages {
            let page = page.map_err(|e| AwsError::api("DescribeSnapshots", e))?;
            out.extend(
                page.snapshots()
                    .iter()
                    .filter_map(|s| s.snapshot_id().map(str::to_string)),
            );
        }
        Ok(out)
    }

    /// Adds tags to resources.
    pub fn create_tags(&self, ids: &[String], tags: &Tagged) -> Result<(), AwsError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.block(
            self.ec2
                .create_tags()
                .set_resources(Some(ids.to_vec()))
                .set_tags(Some(sdk_tags(tags)))
                .send(),
        )
        .map_err(|e| AwsError::api("CreateTags", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_endpoints_are_the_local_ec2() {
        assert!(is_loopback_endpoint("http://127.0.0.1:41234"));
        assert!(is_loopback_endpoint("http://localhost:5000/"));
        assert!(is_loopback_endpoint("http://[::1]:5000"));
        assert!(!is_loopback_endpoint("https://ec2.us-east-1.amazonaws.com"));
    }
}
