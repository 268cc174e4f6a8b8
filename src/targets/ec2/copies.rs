//! The app AMI in other regions (`ami_regions`): a copy per region made in parallel (a thread
//! and an AWS client per region, through the same endpoint), encrypted with the region's key
//! from `region_kms_key_ids` when there is one, tagged like the app AMI (its snapshots too), and
//! waited for until available. Each copy is journaled before it is asked for, so an
//! interrupted or failed copy is deregistered and its snapshots deleted by the one destroy of
//! `Resource::Ec2Image`; an available copy is a result and kept. A copy already made for the
//! same app digest (found by its tags) is reused.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::engine::aws::wait::WaitPolicy;
use crate::engine::aws::{AwsClient, ImageInfo, Tagged, filter_tags};
use crate::error::{Error, Result};
use crate::runner::{Resource, Runner};
use crate::targets::resource::{self, Destroyer};
use crate::ui::Printer;

/// What the copies are made from and called.
pub struct CopyPlan<'a> {
    /// The app AMI, in the client's region.
    pub source: &'a ImageInfo,
    pub pipeline: &'a str,
    /// The app layer's digest (`pipe:digest`), by which copies are found again.
    pub digest: &'a str,
    /// The name of a copy made now (unique per run, as the app AMI's is).
    pub name: String,
    pub regions: &'a [String],
    pub kms_keys: &'a BTreeMap<String, String>,
    pub wait: Duration,
}

/// An app AMI in one region, made or found.
#[derive(Debug, Clone)]
pub struct Copy {
    pub region: String,
    pub image: ImageInfo,
}

/// The app AMI in every region of `plan.regions`: found by digest, or copied now.
pub fn copy_to_regions(
    runner: &mut Runner<'_>,
    client: &AwsClient,
    plan: &CopyPlan<'_>,
    printer: &Printer,
) -> Result<Vec<Copy>> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for region in plan.regions {
        let rc = client.in_region(region)?;
        match find(&rc, plan.pipeline, plan.digest)? {
            Some(image) => {
                printer.info(format!(
                    "app AMI in {region}: reusing {} ({}, digest unchanged)",
                    image.id, image.name
                ));
                out.push(Copy {
                    region: region.clone(),
                    image,
                });
            }
            None => missing.push((region.clone(), rc)),
        }
    }
    if missing.is_empty() {
        return Ok(out);
    }
    // Every copy is in the journal before any is asked for: the copies then run at once.
    let mut journaled = Vec::new();
    for (region, rc) in &missing {
        let res = Resource::Ec2Image {
            region: region.clone(),
            endpoint: rc.endpoint().map(str::to_string),
            name: plan.name.clone(),
        };
        resource::create(runner, Destroyer::with_aws(rc.clone()), &res, || Ok(()))?;
        journaled.push(res);
    }
    let mut tags = plan.source.tags.clone();
    tags.insert("pipe:source-ami".into(), plan.source.id.clone());
    tags.insert("pipe:source-region".into(), client.region().to_string());
    let source_region = client.region().to_string();
    let results: Vec<(String, Result<ImageInfo>)> = std::thread::scope(|s| {
        let handles: Vec<_> = missing
            .iter()
            .map(|(region, rc)| {
                let tags = &tags;
                let source_region = &source_region;
                let h = s.spawn(move || {
                    let kms = plan.kms_keys.get(region).map(String::as_str);
                    copy_one(rc, source_region, plan, kms, tags)
                });
                (region.clone(), h)
            })
            .collect();
        handles
            .into_iter()
            .map(|(region, h)| {
                let r = h.join().unwrap_or_else(|_| {
                    Err(Error::runtime(
                        format!("copying the app AMI to {region}: the copy's thread panicked"),
                        None,
                    ))
                });
                (region, r)
            })
            .collect()
    });
    let mut first = None;
    for ((region, result), res) in results.into_iter().zip(journaled) {
        match result {
            Ok(image) => {
                runner.keep(&res)?;
                printer.info(format!(
                    "app AMI in {region}: {} copied from {} in {source_region}{}",
                    image.id,
                    plan.source.id,
                    if plan.kms_keys.contains_key(&region) {
                        " (encrypted)"
                    } else {
                        ""
                    }
                ));
                out.push(Copy { region, image });
            }
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The available copy of this pipeline's app AMI with `digest` in the client's region.
pub fn find(client: &AwsClient, pipeline: &str, digest: &str) -> Result<Option<ImageInfo>> {
    let mut images: Vec<ImageInfo> = client
        .describe_images(
            &["self".into()],
            &filter_tags(&[
                ("pipe:pipeline", pipeline),
                ("pipe:layer", "app"),
                ("pipe:digest", digest),
            ]),
        )?
        .into_iter()
        .filter(|i| i.state == "available")
        .collect();
    images.sort_by(|a, b| a.creation_date.cmp(&b.creation_date));
    Ok(images.pop())
}

/// CopyImage into `rc`'s region, tagged, waited for, its snapshots tagged. Errors name the
/// region and the step.
fn copy_one(
    rc: &AwsClient,
    source_region: &str,
    plan: &CopyPlan<'_>,
    kms: Option<&str>,
    tags: &Tagged,
) -> Result<ImageInfo> {
    let region = rc.region();
    let failed = |step: &str, e: crate::engine::aws::AwsError| -> Error {
        if matches!(e, crate::engine::aws::AwsError::Interrupted) {
            return Error::Interrupted;
        }
        let hint = e.hint().unwrap_or_else(|| match kms {
            Some(k) => format!(
                "the copy is encrypted with {k}: the key must exist in {region} and allow kms:CreateGrant, kms:Encrypt, kms:Decrypt and kms:GenerateDataKey* to this role; `pipe clean` removes a half-made copy"
            ),
            None => format!(
                "is {region} enabled for the account, and is ec2:CopyImage allowed there? `pipe clean` removes a half-made copy"
            ),
        });
        Error::runtime(
            format!(
                "{step} the app AMI {} from {source_region} to {region}: {e}",
                plan.source.id
            ),
            Some(hint),
        )
    };
    let description = format!(
        "pipe {} app layer {} (copy of {} in {source_region})",
        plan.pipeline, plan.digest, plan.source.id
    );
    let id = rc
        .copy_image(
            source_region,
            &plan.source.id,
            &plan.name,
            &description,
            kms,
            tags,
        )
        .map_err(|e| failed("copying", e))?;
    // Tagged at creation; tagged again for implementations that ignore the tag
    // specification of CopyImage, so the copy is found by digest either way.
    rc.create_tags(std::slice::from_ref(&id), tags)
        .map_err(|e| failed("tagging the copy of", e))?;
    let image = rc
        .wait_image(
            &id,
            WaitPolicy::up_to(plan.wait),
            &crate::interrupt::requested,
        )
        .map_err(|e| failed("waiting for the copy of", e))?;
    rc.create_tags(&image.snapshots, tags)
        .map_err(|e| failed("tagging the snapshots of the copy of", e))?;
    Ok(image)
}
