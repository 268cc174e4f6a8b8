//! Layers on Docker: images committed from build containers as
//! `pipe/<pipeline>-<layer>:<digest>`, found again by their labels. (The build itself is
//! [`crate::targets::layers`], over [`super::DockerTarget`].)

use crate::config::LayerName;
use crate::engine::docker::{DockerClient, ImageInfo};
use crate::error::Result;
use crate::layers::digest::Digest;

/// Labels pipe puts on what it creates.
pub mod label {
    pub const PIPELINE: &str = "pipe.pipeline";
    pub const LAYER: &str = "pipe.layer";
    pub const DIGEST: &str = "pipe.digest";
    pub const PARENT: &str = "pipe.parent";
    /// The run a temporary container (a verify machine) or image belongs to. Never on a
    /// build machine: Docker copies a container's labels into the image committed from it,
    /// and no label can be removed from an image or overridden away in a container made from
    /// it, so every dev and serving container would carry it.
    pub const RUN: &str = "pipe.run";
    /// The run a build machine belongs to; empty on the layer committed from it (and on
    /// every container made from that layer).
    pub const BUILD: &str = "pipe.build";
    pub const ROLE: &str = "pipe.role";
    pub const ENV: &str = "pipe.env";
    pub const RELEASE: &str = "pipe.release";
    /// The project folder a container belongs to (see `state::project_id`).
    pub const PROJECT: &str = "pipe.project";
    /// Where that folder is, for messages.
    pub const PROJECT_DIR: &str = "pipe.project.dir";
}

/// `pipe/<pipeline>-<layer>`.
pub fn image_repo(pipeline: &str, layer: LayerName) -> String {
    format!("pipe/{pipeline}-{layer}")
}

/// The image holding a layer with this digest, if one exists.
pub fn find_layer(
    client: &DockerClient,
    pipeline: &str,
    layer: LayerName,
    digest: &Digest,
) -> Result<Option<ImageInfo>> {
    let pipeline_f = format!("{}={pipeline}", label::PIPELINE);
    let layer_f = format!("{}={layer}", label::LAYER);
    let digest_f = format!("{}={digest}", label::DIGEST);
    let mut images = client.images_by_labels(&[&pipeline_f, &layer_f, &digest_f])?;
    images.sort_by_key(|i| std::cmp::Reverse(i.created));
    Ok(images.into_iter().next())
}
