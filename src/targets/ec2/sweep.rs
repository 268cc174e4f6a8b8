//! Leftovers of dead runs on EC2, by the `pipe:run` tag: instances, then security groups
//! (free once their instances are gone), then key pairs, in every region an environment of the
//! pipeline bakes in or copies its app AMI to (`ami_regions`). AMIs are results, never swept
//! (a copy that a killed run left half-made is in its journal).

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Ec2Settings, Pipelinefile};
use crate::engine::aws::{AwsClient, AwsSettings, Tagged};
use crate::error::Result;
use crate::runner::Resource;
use crate::targets::Swept;
use crate::targets::resource::Destroyer;

/// Sweeps every region of the pipeline's ec2 environments; nothing when no AWS configuration
/// is visible (see [`aws_configured`]).
pub fn sweep(
    pf: &Pipelinefile,
    envs: &BTreeMap<String, Ec2Settings>,
    live: &BTreeSet<String>,
    dry_run: bool,
) -> Result<Vec<Swept>> {
    if !aws_configured(envs) {
        return Ok(Vec::new());
    }
    // Where each environment bakes, and where its app AMI is copied to.
    let places: BTreeSet<(Option<String>, Option<String>)> = envs
        .values()
        .flat_map(|s| {
            std::iter::once(s.region.clone())
                .chain(s.ami_regions.iter().cloned().map(Some))
                .map(|r| (r, s.endpoint_url.clone()))
        })
        .collect();
    let pipeline = pf.pipeline.name.value.as_str();
    let mut out = Vec::new();
    for (region, endpoint_url) in places {
        let client = AwsClient::connect(&AwsSettings {
            region,
            endpoint_url,
            ..AwsSettings::default()
        })?;
        out.extend(sweep_region(&client, pipeline, live, dry_run)?);
    }
    // The key folder of a swept machine (a kept build machine, a run whose journal is gone)
    // goes with it: the private key is useless without its key pair.
    if !dry_run {
        for swept in &out {
            if let (Resource::Ec2KeyPair { name, .. }, None) = (&swept.resource, &swept.error) {
                let _ = crate::targets::resource::remove_path(&super::launch::machine_dir(
                    &pf.root, name,
                ));
            }
        }
    }
    Ok(out)
}

/// True when AWS credentials or an endpoint are configured where pipe can see them without
/// asking the network: keys, a profile, a web identity, a container role, config files, an
/// endpoint. Without any, `pipe clean` does not go looking (the credential chain would end
/// at the instance metadata service).
pub fn aws_configured(envs: &BTreeMap<String, Ec2Settings>) -> bool {
    let env_set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let keys = [
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_EC2",
    ];
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let files = [
        std::env::var_os("AWS_SHARED_CREDENTIALS_FILE").map(std::path::PathBuf::from),
        std::env::var_os("AWS_CONFIG_FILE").map(std::path::PathBuf::from),
        home.as_ref().map(|h| h.join(".aws/credentials")),
        home.as_ref().map(|h| h.join(".aws/config")),
    ];
    keys.iter().any(|k| env_set(k))
        || files.iter().flatten().any(|f| f.is_file())
        || envs.values().any(|s| s.endpoint_url.is_some())
}

fn sweep_region(
    client: &AwsClient,
    pipeline: &str,
    live: &BTreeSet<String>,
    dry_run: bool,
) -> Result<Vec<Swept>> {
    let mine = vec![
        ("tag:pipe:pipeline".to_string(), vec![pipeline.to_string()]),
        ("tag-key".to_string(), vec!["pipe:run".to_string()]),
    ];
    let dead = |tags: &Tagged| -> Option<String> {
        let run = tags.get("pipe:run")?;
        (!live.contains(run)).then(|| run.clone())
    };
    let region = client.region().to_string();
    let endpoint = client.endpoint().map(str::to_string);
    let mut found = Vec::new();
    let mut states = mine.clone();
    states.push((
        "instance-state-name".into(),
        ["pending", "running", "stopping", "stopped", "shutting-down"]
            .map(String::from)
            .to_vec(),
    ));
    let mut names = BTreeSet::new();
    for i in client.instances(&states)? {
        if let (Some(run), Some(name)) = (dead(&i.tags), i.tags.get("Name"))
            && names.insert(name.clone())
        {
            let resource = Resource::Ec2Instance {
                region: region.clone(),
                endpoint: endpoint.clone(),
                name: name.clone(),
            };
            found.push((resource, run));
        }
    }
    for (_, name, tags) in client.security_groups(&mine)? {
        if let Some(run) = dead(&tags) {
            let resource = Resource::Ec2SecurityGroup {
                region: region.clone(),
                endpoint: endpoint.clone(),
                name,
            };
            found.push((resource, run));
        }
    }
    for (name, tags) in client.key_pairs(&mine)? {
        if let Some(run) = dead(&tags) {
            let resource = Resource::Ec2KeyPair {
                region: region.clone(),
                endpoint: endpoint.clone(),
                name,
            };
            found.push((resource, run));
        }
    }
    let destroyer = Destroyer::with_aws(client.clone());
    Ok(found
        .into_iter()
        .map(|(resource, run)| {
            let error = if dry_run {
                None
            } else {
                destroyer.destroy(&resource).err()
            };
            Swept {
                resource,
                run,
                label: "pipe.run",
                error,
            }
        })
        .collect())
}
