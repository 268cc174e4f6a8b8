//! `.pipe/journal/<run-id>.json`: what an in-flight run has created (or is about to), written
//! before each resource is created, so that a crash leaks nothing `pipe clean` can't find.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A resource a run creates and must clean up unless it is the run's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resource {
    /// A Docker container, by name.
    Container { name: String },
    /// A Docker image, by reference.
    Image { reference: String },
    /// A QEMU process, by pid, with its pidfile and disk overlay.
    QemuMachine { pidfile: PathBuf, overlay: PathBuf },
    /// A QEMU process on a disk the run did not create (a halted machine booted again):
    /// cleanup stops it and keeps the disk.
    QemuProcess { pidfile: PathBuf },
    /// A file or folder on the host.
    Path { path: PathBuf },
    /// An EC2 key pair, by name.
    Ec2KeyPair {
        region: String,
        /// The endpoint it was created through, when not AWS's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        name: String,
    },
    /// An EC2 security group, by name (its id is only known once it exists).
    Ec2SecurityGroup {
        region: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        name: String,
    },
    /// An EC2 instance, by its `Name` tag, unique per run (its id is only known once it
    /// exists; the same name is its launch's client token).
    Ec2Instance {
        region: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        name: String,
    },
    /// An AMI being made, by name (unique per account and region), with its snapshots.
    Ec2Image {
        region: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        name: String,
    },
    /// A launch template version a promotion made, by the run id in its description (its
    /// number is only known once it exists). Cleanup deletes it unless it is the default.
    Ec2TemplateVersion {
        region: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        template_id: String,
        run: String,
        /// The role its account is reached through (an environment in another account).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
    },
    /// An instance refresh of a group. Cleanup rolls a refresh still in progress back and
    /// waits until the group runs what it ran before.
    Ec2Refresh {
        region: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        group: String,
        /// The role its account is reached through (an environment in another account).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
    },
    /// An Auto Scaling group a blue/green promotion brings in (made, or a kept one scaled
    /// back up), by name. Cleanup brings back the group it was to replace (its capacity and
    /// target groups, as the incoming group's tags say) and waits until that serves, then
    /// detaches the incoming group and deletes it (a kept one is scaled to zero again).
    Ec2Group {
        region: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        name: String,
        /// The role its account is reached through (an environment in another account).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
    },
    /// An environment's promotion lock (an SSM parameter written only if absent). Cleanup
    /// deletes it only while it still names this run.
    PromotionLock {
        region: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        name: String,
        run: String,
        /// The role its account is reached through (an environment in another account).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
    },
    /// An environment's promotion lock in the shared ledger (an S3 object created only if
    /// absent). Cleanup deletes it only while it still names this run.
    LedgerLock {
        bucket: String,
        key: String,
        /// As the Pipelinefile's `[ledger]` says (`None`: the SDK's region chain).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        run: String,
    },
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Container { name } => write!(f, "container {name}"),
            Resource::Image { reference } => write!(f, "image {reference}"),
            Resource::QemuMachine { pidfile, .. } => {
                write!(f, "qemu machine ({})", pidfile.display())
            }
            Resource::QemuProcess { pidfile } => {
                write!(f, "qemu process ({})", pidfile.display())
            }
            Resource::Path { path } => write!(f, "{}", path.display()),
            Resource::Ec2KeyPair { region, name, .. } => {
                write!(f, "ec2 key pair {name} ({region})")
            }
            Resource::Ec2SecurityGroup { region, name, .. } => {
                write!(f, "ec2 security group {name} ({region})")
            }
            Resource::Ec2Instance { region, name, .. } => {
                write!(f, "ec2 instance {name} ({region})")
            }
            Resource::Ec2Image { region, name, .. } => write!(f, "ec2 image {name} ({region})"),
            Resource::Ec2TemplateVersion {
                region,
                template_id,
                run,
                ..
            } => write!(
                f,
                "launch template version of {template_id} made by run {run} ({region})"
            ),
            Resource::Ec2Refresh { region, group, .. } => {
                write!(f, "instance refresh of group {group} ({region})")
            }
            Resource::Ec2Group { region, name, .. } => {
                write!(f, "Auto Scaling group {name} ({region})")
            }
            Resource::PromotionLock { region, name, .. } => {
                write!(f, "promotion lock {name} ({region})")
            }
            Resource::LedgerLock { bucket, key, .. } => {
                write!(f, "promotion lock s3://{bucket}/{key}")
            }
        }
    }
}

/// The journal file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalFile {
    pub run_id: String,
    pub pid: u32,
    pub command: String,
    pub pipeline: String,
    pub started: String,
    pub resources: Vec<Resource>,
}

/// An open journal for the current run.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: JournalFile,
}

/// The journal folder under a state folder (`.pipe`).
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("journal")
}

/// A new run id: UTC time plus random hex, sortable and unique.
pub fn new_run_id() -> String {
    let now = chrono::Utc::now();
    let nanos = now.timestamp_subsec_nanos() as u64;
    let mut x = nanos ^ ((std::process::id() as u64) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    // splitmix64, so runs started in the same second by different processes differ.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    format!("{}-{:06x}", now.format("%Y%m%d%H%M%S"), x & 0xff_ffff)
}

impl Journal {
    /// Starts a journal for a new run (the file exists from now on).
    pub fn start(state_dir: &Path, command: &str, pipeline: &str) -> std::io::Result<Self> {
        let run_id = new_run_id();
        let dir = dir(state_dir);
        std::fs::create_dir_all(&dir)?;
        let journal = Self {
            path: dir.join(format!("{run_id}.json")),
            file: JournalFile {
                run_id,
                pid: std::process::id(),
                command: command.to_string(),
                pipeline: pipeline.to_string(),
                started: chrono::Utc::now().to_rfc3339(),
                resources: Vec::new(),
            },
        };
        journal.write()?;
        Ok(journal)
    }

    pub fn run_id(&self) -> &str {
        &self.file.run_id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a resource about to be created. Call before creating it.
    pub fn intend(&mut self, resource: Resource) -> std::io::Result<()> {
        if !self.file.resources.contains(&resource) {
            self.file.resources.push(resource);
        }
        self.write()
    }

    /// Drops a resource: cleaned up, or kept as the run's result.
    pub fn release(&mut self, resource: &Resource) -> std::io::Result<()> {
        self.file.resources.retain(|r| r != resource);
        self.write()
    }

    /// What the journal still holds.
    pub fn resources(&self) -> &[Resource] {
        &self.file.resources
    }

    /// Ends the run: the file is removed when nothing is left in it, kept otherwise.
    pub fn finish(self) -> std::io::Result<()> {
        if self.file.resources.is_empty() {
            match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    fn write(&self) -> std::io::Result<()> {
        let data = serde_json::to_vec_pretty(&self.file).expect("journal serializes");
        crate::state::write_atomic(&self.path, &data)
    }
}

/// Every journal left in `state_dir`, with its path.
pub fn list(state_dir: &Path) -> std::io::Result<Vec<(PathBuf, JournalFile)>> {
    let dir = dir(state_dir);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let Ok(data) = std::fs::read(&path) else {
                continue;
            };
            if let Ok(file) = serde_json::from_slice::<JournalFile>(&data) {
                out.push((path, file));
            }
        }
    }
    out.sort_by(|a, b| a.1.run_id.cmp(&b.1.run_id));
    Ok(out)
}

/// True when the process that wrote a journal is still running pipe.
pub fn is_alive(file: &JournalFile) -> bool {
    if file.pid == std::process::id() {
        return true;
    }
    std::fs::read(format!("/proc/{}/cmdline", file.pid))
        .map(|cmd| {
            cmd.split(|b| *b == 0)
                .next()
                .is_some_and(|argv0| argv0.ends_with(b"pipe"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intends_releases_and_removes_an_empty_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::start(dir.path(), "bake", "p").unwrap();
        let c = Resource::Container { name: "c1".into() };
        j.intend(c.clone()).unwrap();
        let listed = list(dir.path()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].1.resources, vec![c.clone()]);
        j.release(&c).unwrap();
        let path = j.path().to_path_buf();
        j.finish().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn ec2_resources_round_trip_and_keep_an_absent_endpoint_out() {
        let with = Resource::Ec2Instance {
            region: "us-east-1".into(),
            endpoint: Some("http://127.0.0.1:5000".into()),
            name: "pipe-p-build-base-abcdef".into(),
        };
        let without = Resource::Ec2KeyPair {
            region: "eu-west-1".into(),
            endpoint: None,
            name: "pipe-p-verify-abcdef".into(),
        };
        for r in [&with, &without] {
            let text = serde_json::to_string(r).unwrap();
            assert_eq!(&serde_json::from_str::<Resource>(&text).unwrap(), r);
        }
        assert_eq!(
            serde_json::to_string(&without).unwrap(),
            r#"{"kind":"ec2_key_pair","region":"eu-west-1","name":"pipe-p-verify-abcdef"}"#
        );
        assert_eq!(
            with.to_string(),
            "ec2 instance pipe-p-build-base-abcdef (us-east-1)"
        );
    }

    #[test]
    fn a_promotion_resource_in_another_account_keeps_its_role() {
        let lock = Resource::PromotionLock {
            region: "us-west-2".into(),
            endpoint: None,
            name: "/pipe/p/production/promotion-lock".into(),
            run: "r1".into(),
            role: Some("arn:aws:iam::210987654321:role/pipe-promote".into()),
        };
        let text = serde_json::to_string(&lock).unwrap();
        assert!(text.contains(r#""role":"arn:aws:iam::210987654321:role/pipe-promote""#));
        assert_eq!(serde_json::from_str::<Resource>(&text).unwrap(), lock);
        // A journal written before roles existed still reads, without one.
        let old = r#"{"kind":"ec2_refresh","region":"us-east-1","group":"g"}"#;
        assert_eq!(
            serde_json::from_str::<Resource>(old).unwrap(),
            Resource::Ec2Refresh {
                region: "us-east-1".into(),
                endpoint: None,
                group: "g".into(),
                role: None,
            }
        );
    }

    #[test]
    fn run_ids_differ() {
        assert_ne!(new_run_id(), new_run_id());
    }
}
