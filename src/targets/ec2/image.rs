//! Layers as AMIs: found by tags, made from a sealed, stopped build machine.

use std::time::Duration;

use crate::config::LayerName;
use crate::engine::aws::wait::WaitPolicy;
use crate::engine::aws::{AwsClient, ImageInfo, Tagged, filter_tags};
use crate::error::{Error, Result};
use crate::layers::digest::Digest;
use crate::runner::{Resource, Runner};
use crate::targets::resource::{self, Destroyer};
use crate::targets::{FoundLayer, Machine};

use super::failed;

/// How long a build instance may take to stop.
const STOP_WAIT: Duration = Duration::from_secs(600);

/// The available AMI of this pipeline's `layer` with `digest` (the newest, should there be
/// two).
pub fn find(
    client: &AwsClient,
    pipeline: &str,
    layer: LayerName,
    digest: &Digest,
) -> Result<Option<FoundLayer>> {
    let digest = digest.to_string();
    let layer = layer.to_string();
    let mut images: Vec<ImageInfo> = client
        .describe_images(
            &["self".into()],
            &filter_tags(&[
                ("pipe:pipeline", pipeline),
                ("pipe:layer", &layer),
                ("pipe:digest", &digest),
            ]),
        )?
        .into_iter()
        .filter(|i| i.state == "available")
        .collect();
    images.sort_by(|a, b| a.creation_date.cmp(&b.creation_date));
    Ok(images.pop().map(|i| FoundLayer {
        shown: format!("{} ({})", i.id, i.name),
        reference: i.id,
    }))
}

/// What an AMI of a layer is called and tagged.
pub struct ImageSpec {
    pub name: String,
    pub description: String,
    pub tags: Tagged,
    pub wait: Duration,
}

/// Seals the build machine, stops its instance and makes it the AMI of `spec` (journaled
/// until it is available: an interrupted or failed creation is deregistered with its
/// snapshots), its snapshots tagged too; returns the AMI id.
pub fn commit(
    runner: &mut Runner<'_>,
    client: &AwsClient,
    machine: &Machine,
    instance: &str,
    spec: &ImageSpec,
) -> Result<String> {
    let dir = machine
        .resources
        .iter()
        .find_map(|r| match r {
            Resource::Path { path } => Some(path.clone()),
            _ => None,
        })
        .expect("an ec2 machine has a folder");
    let public_key = std::fs::read_to_string(super::launch::key_path(&dir).with_extension("pub"))
        .map_err(|e| Error::runtime(format!("reading the build key: {e}"), None))?;
    crate::targets::guest::seal(&*machine.comm, true, Some(public_key.trim()))?;
    let on_instance = || failed(format!("{} ({instance})", machine.name));
    client.stop_instance(instance).map_err(on_instance())?;
    client
        .wait_instance(
            instance,
            "stopped",
            WaitPolicy::up_to(STOP_WAIT),
            &crate::interrupt::requested,
        )
        .map_err(on_instance())?;
    runner.pause_point(&format!("instance stopped {}", machine.name));
    if crate::interrupt::requested() {
        // No AMI is started after Ctrl-C only to be deregistered again.
        return Err(Error::Interrupted);
    }
    let res = Resource::Ec2Image {
        region: client.region().to_string(),
        endpoint: client.endpoint().map(str::to_string),
        name: spec.name.clone(),
    };
    let id = resource::create(runner, Destroyer::with_aws(client.clone()), &res, || {
        client
            .create_image(instance, &spec.name, &spec.description, &spec.tags)
            .map_err(failed(format!(
                "AMI {} from instance {instance}",
                spec.name
            )))
    })?;
    runner.pause_point(&format!("AMI requested {}", spec.name));
    let on_image = || failed(format!("AMI {} ({id})", spec.name));
    let image = client
        .wait_image(
            &id,
            WaitPolicy::up_to(spec.wait),
            &crate::interrupt::requested,
        )
        .map_err(on_image())?;
    // CreateImage tags the snapshots it makes; tagged again in case they were not (older
    // APIs, other implementations), so that they can be found by digest too.
    client
        .create_tags(&image.snapshots, &spec.tags)
        .map_err(on_image())?;
    runner.keep(&res)?;
    Ok(id)
}
