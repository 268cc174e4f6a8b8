//! `pipe prune` on EC2: a release's app AMIs in every region (the one recorded per region,
//! and copies a promotion made into another region, found by their `pipe:digest` tag) are
//! deregistered and their snapshots deleted. Snapshots are found three ways (the image's
//! own, the ledger's record, and by tag), so a prune interrupted between deregistering an
//! AMI and deleting its snapshots is finished by the next run. Base AMIs are never pruned:
//! they are layers every later bake with the same base digest reuses.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Pipelinefile, TargetKind};
use crate::engine::aws::{AwsClient, AwsError, AwsSettings, ImageInfo, filter_tags};
use crate::error::{Error, Result};
use crate::ledger::{PrunedImage, Release, artifact_key};
use crate::targets::PrunePlan;

/// Every region the pipeline's ec2 environments bake, copy or run in, and the release's own,
/// each with a client through the environment's endpoint.
fn clients(pf: &Pipelinefile, release: &Release) -> Result<BTreeMap<String, AwsClient>> {
    let mut out = BTreeMap::new();
    let home = AwsClient::connect(&crate::plan::aws_settings(pf, &release.env))?;
    let mut regions: BTreeSet<String> = release
        .artifacts_on(TargetKind::Ec2)
        .iter()
        .filter_map(|a| a.region.map(str::to_string))
        .collect();
    for (name, env) in &pf.envs {
        if let crate::config::TargetSettings::Ec2(s) = &env.settings {
            let c = AwsClient::connect(&crate::plan::aws_settings(pf, name))?;
            regions.insert(c.region().to_string());
            regions.extend(s.ami_regions.iter().cloned());
        }
    }
    for region in regions {
        let c = AwsClient::connect(&AwsSettings {
            region: Some(region.clone()),
            endpoint_url: home.endpoint().map(str::to_string),
            ..AwsSettings::default()
        })?;
        out.insert(region, c);
    }
    Ok(out)
}

fn failed(what: String, hint: &str) -> impl FnOnce(AwsError) -> Error + '_ {
    move |e| match e {
        AwsError::Interrupted => Error::Interrupted,
        e => {
            // AWS's own hint (permissions, throttling) first, then what pipe suggests.
            let hint = match e.hint() {
                Some(aws) => format!("{aws}; {hint}"),
                None => hint.to_string(),
            };
            Error::runtime(format!("{what}: {e}"), Some(hint)).caused_by(e)
        }
    }
}

/// What pruning `release` removes, region by region; a protected AMI, or one in `in_use`
/// (a copy a launch template version in another region refers to), keeps the release.
pub fn plan(
    pf: &Pipelinefile,
    release: &Release,
    in_use: &BTreeMap<String, String>,
) -> Result<PrunePlan> {
    let pipeline = &pf.pipeline.name.value;
    let tags = filter_tags(&[
        ("pipe:pipeline", pipeline),
        ("pipe:layer", "app"),
        ("pipe:digest", &release.app_digest),
    ]);
    let hint = "is ec2:DescribeImages and ec2:DescribeSnapshots allowed in that region?";
    let mut out = Vec::new();
    for (region, client) in clients(pf, release)? {
        let key = artifact_key(TargetKind::Ec2, Some(&region));
        let look = || format!("listing release {}'s AMIs in {region}", release.alias);
        let mut images: Vec<ImageInfo> = client
            .describe_images(&["self".into()], &tags)
            .map_err(failed(look(), hint))?;
        if let Some(id) = release.artifacts.get(&key)
            && !images.iter().any(|i| &i.id == id)
            && let Some(i) = client.image(id).map_err(failed(look(), hint))?
        {
            images.push(i);
        }
        if let Some(i) = images.iter().find(|i| i.protected) {
            return Ok(PrunePlan::Keep(format!(
                "its AMI {0} in {region} is protected from deregistration (after `aws ec2 disable-image-deregistration-protection --image-id {0} --region {region}` the next prune removes it)",
                i.id
            )));
        }
        if let Some((i, why)) = images
            .iter()
            .find_map(|i| in_use.get(&i.id).map(|why| (i, why)))
        {
            return Ok(PrunePlan::Keep(format!(
                "its AMI {} in {region}: {why}",
                i.id
            )));
        }
        let mut loose: BTreeSet<String> = release
            .snapshots
            .get(&key)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect();
        loose.extend(client.snapshots(&tags).map_err(failed(look(), hint))?);
        images.sort_by(|a, b| a.id.cmp(&b.id));
        for i in &images {
            for s in &i.snapshots {
                loose.remove(s);
            }
            out.push(PrunedImage {
                region: Some(region.clone()),
                id: i.id.clone(),
                snapshots: i.snapshots.clone(),
            });
        }
        // Snapshots whose AMI is already gone (an interrupted prune): under the recorded id.
        if !loose.is_empty() {
            match out
                .iter_mut()
                .find(|p| p.region.as_deref() == Some(&region))
            {
                Some(p) => p.snapshots.extend(loose),
                None => out.push(PrunedImage {
                    region: Some(region.clone()),
                    id: release.artifacts.get(&key).cloned().unwrap_or_default(),
                    snapshots: loose.into_iter().collect(),
                }),
            }
        }
    }
    Ok(PrunePlan::Remove(out))
}

/// Deregisters each AMI, then deletes its snapshots; what is gone already is skipped.
pub fn remove(pf: &Pipelinefile, release: &Release, images: &[PrunedImage]) -> Result<()> {
    let clients = clients(pf, release)?;
    for image in images {
        let region = image.region.as_deref().unwrap_or_default();
        let client = clients.get(region).ok_or_else(|| {
            Error::runtime(
                format!("pruning AMI {}: no client for region `{region}`", image.id),
                None,
            )
        })?;
        if crate::interrupt::requested() {
            return Err(Error::Interrupted);
        }
        if !image.id.is_empty() {
            client.deregister_image(&image.id).map_err(failed(
                format!("deregistering AMI {} in {region}", image.id),
                "a protected AMI is deregistered only after `aws ec2 disable-image-deregistration-protection`; run `pipe prune` again to finish",
            ))?;
        }
        for snap in &image.snapshots {
            client.delete_snapshot(snap).map_err(failed(
                format!("deleting snapshot {snap} of AMI {} in {region}", image.id),
                "is ec2:DeleteSnapshot allowed? `pipe prune` again finishes what is left (the release is not recorded as pruned until it is)",
            ))?;
        }
    }
    Ok(())
}

/// The AMI of every version of each environment's launch template (in the environment's
/// account), with the version.
pub fn images_in_use(pf: &Pipelinefile) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (name, env) in &pf.envs {
        let crate::config::TargetSettings::Ec2(s) = &env.settings else {
            continue;
        };
        let Some(template) = &s.launch_template else {
            continue;
        };
        // An environment in another account has its template there.
        let mut settings = crate::plan::aws_settings(pf, name);
        settings.role = super::share::role(&pf.pipeline.name.value, name, s);
        let client = AwsClient::connect(&settings)?;
        let what = || format!("reading launch template {template} of env `{name}`");
        let hint = "is ec2:DescribeLaunchTemplateVersions allowed? pipe prune leaves every AMI a version refers to";
        // A blue/green group, serving or kept for rollback, runs its AMI whatever its
        // template version says.
        if s.strategy == crate::config::Strategy::BlueGreen {
            let r = super::promote::Rollout::of(name, s)?;
            let groups = super::bluegreen::family(&client, &pf.pipeline.name.value, &r)
                .map_err(|e| {
                    Error::runtime(
                        format!("reading the Auto Scaling groups of env `{name}`: {e}"),
                        Some("is autoscaling:DescribeAutoScalingGroups allowed? pipe prune leaves every AMI a blue/green group runs".into()),
                    )
                })?;
            for g in &groups {
                if let Some(image) = g.tag(super::bluegreen::TAG_IMAGE) {
                    out.entry(image.to_string()).or_insert_with(|| {
                        format!("blue/green group {} (env `{name}`) runs it", g.name)
                    });
                }
            }
        }
        let Some(t) = client
            .launch_template(template)
            .map_err(failed(what(), hint))?
        else {
            continue;
        };
        for v in client
            .template_versions(&t.id)
            .map_err(failed(what(), hint))?
        {
            if let Some(image) = v.image {
                out.entry(image).or_insert_with(|| {
                    format!(
                        "launch template {template} version {} (env `{name}`) refers to it",
                        v.number
                    )
                });
            }
        }
    }
    Ok(out)
}
