//! Building layers on Docker: a build container from the parent image, provisioned through
//! docker exec, committed as `pipe/<pipeline>-<layer>:<digest>`. A layer whose digest already
//! has an image is reused, not rebuilt.

use std::collections::BTreeMap;

use crate::communicators::docker::DockerExec;
use crate::config::{Layer, LayerName};
use crate::error::{Error, Result};
use crate::layers::digest::Digest;
use crate::plan::Plan;
use crate::provisioners::{self, ProvisionContext};
use crate::runner::{Resource, Runner};
use crate::services;
use crate::ui::Printer;

use crate::engine::docker::{ContainerSpec, DockerClient, ImageConfig, ImageInfo};

/// Labels pipe puts on what it creates.
pub mod label {
    pub const PIPELINE: &str = "pipe.pipeline";
    pub const LAYER: &str = "pipe.layer";
    pub const DIGEST: &str = "pipe.digest";
    pub const PARENT: &str = "pipe.parent";
    pub const RUN: &str = "pipe.run";
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

/// Builds (or reuses) the base layer on the box, then the app layer on it; returns both.
pub fn build_layers(
    runner: &mut Runner<'_>,
    client: &DockerClient,
    plan: &Plan,
    parent: &str,
    keep_on_error: bool,
    printer: &Printer,
) -> Result<(String, String)> {
    let base = build_layer(
        runner,
        client,
        plan,
        LayerName::Base,
        parent,
        keep_on_error,
        printer,
    )?;
    let app = build_layer(
        runner,
        client,
        plan,
        LayerName::App,
        &base,
        keep_on_error,
        printer,
    )?;
    Ok((base, app))
}

/// Builds one layer on `parent` (an image reference) unless an image with its digest exists;
/// returns the layer's image id. With `keep_on_error` a failed build container is kept for a
/// look inside, and pipe says how to get in.
pub fn build_layer(
    runner: &mut Runner<'_>,
    client: &DockerClient,
    plan: &Plan,
    name: LayerName,
    parent: &str,
    keep_on_error: bool,
    printer: &Printer,
) -> Result<String> {
    let pipeline = plan.pf.pipeline.name.value.as_str();
    let (digest, layer): (Digest, &Layer) = match name {
        LayerName::Base => (plan.digests.base, &plan.pf.base),
        LayerName::App => (plan.digests.app, &plan.pf.app),
    };
    let repo = image_repo(pipeline, name);
    if let Some(img) = find_layer(client, pipeline, name, &digest)? {
        let step = printer.step(format!("{name} layer"));
        step.skipped(Some(format!(
            "reusing {repo}:{} (digest unchanged)",
            digest.short()
        )));
        return Ok(img.id);
    }
    let run_id = runner.run_id();
    runner.step(&format!("build {name} layer {}", digest.short()), |r| {
        let container = format!("pipe-{pipeline}-build-{name}-{}", suffix(&run_id));
        let container_res = Resource::Container {
            name: container.clone(),
        };
        let mut spec = ContainerSpec::new(parent);
        spec.name = Some(container.clone());
        spec.cmd = Some(services::container_command());
        spec.labels = BTreeMap::from([
            (label::RUN.into(), run_id.clone()),
            (label::PIPELINE.into(), pipeline.into()),
            (label::PROJECT.into(), crate::state::project_id(&plan.pf.root)),
            (label::ROLE.into(), "build".into()),
            (label::LAYER.into(), name.to_string()),
        ]);
        let c2 = client.clone();
        let cname = container.clone();
        r.create(
            container_res.clone(),
            || {
                let id = client.create_container(&spec)?;
                client.start_container(&id)?;
                Ok(id)
            },
            move || c2.remove_container(&cname).map(|_| ()).map_err(|e| e.to_string()),
        )?;
        let comm = DockerExec::new(client.clone(), container.clone());
        let pctx = ProvisionContext {
            comm: &comm,
            printer,
            root: &plan.pf.root,
            template: &plan.template,
            build_env: plan.trust.env(),
        };
        let provisioned = (|| {
            plan.trust.install(&pctx)?;
            provisioners::run_layer(name, layer, &pctx)?;
            plan.trust.remove(&pctx)
        })();
        if let Err(e) = provisioned {
            let err: Error = e.into();
            if keep_on_error && !matches!(err, Error::Interrupted) {
                r.keep(&container_res)?;
                printer.warn(
                    format!("kept the build container {container} (--keep-on-error)"),
                    Some(format!(
                        "look inside with `docker exec -it {container} bash`; remove it with `docker rm -f {container}`"
                    )),
                );
            }
            return Err(err);
        }
        let tag = digest.short();
        let image_res = Resource::Image {
            reference: format!("{repo}:{tag}"),
        };
        let config = ImageConfig {
            cmd: Some(services::container_command()),
            labels: BTreeMap::from([
                (label::PIPELINE.into(), pipeline.into()),
                (label::LAYER.into(), name.to_string()),
                (label::DIGEST.into(), digest.to_string()),
                (label::PARENT.into(), parent.into()),
                (label::ROLE.into(), "layer".into()),
                // Labels are inherited through commits: the build container's run label must
                // not mark the layer as temporary, and the box's labels must not make a layer
                // look like the box.
                (label::RUN.into(), String::new()),
                ("pipe.box".into(), String::new()),
                ("pipe.box.digest".into(), String::new()),
            ]),
            ..Default::default()
        };
        let c3 = client.clone();
        let reference = format!("{repo}:{tag}");
        let id = r.create(
            image_res.clone(),
            || Ok(client.commit_container(&container, &repo, &tag, &config)?),
            move || {
                c3.remove_image(&reference, true)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        )?;
        r.keep(&image_res)?;
        r.dispose(&container_res)?;
        Ok(id)
    })
}

/// The last six characters of a run id, for container names.
pub fn suffix(run_id: &str) -> &str {
    &run_id[run_id.len().saturating_sub(6)..]
}
