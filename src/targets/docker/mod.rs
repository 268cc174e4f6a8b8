//! The docker target: layers as images, machines as containers with their services supervised
//! inside, reached through docker exec. The Engine client itself is [`crate::engine::docker`].

pub mod build;
mod local;
pub mod machine;
pub mod promote;
mod target;

pub use target::DockerTarget;

use crate::config::{Pipelinefile, TargetKind};
use crate::engine::docker::DockerClient;
use crate::error::{Error, Result};

/// The image a docker environment's base layer starts from: the built box, or the named image.
pub fn box_image(
    client: &DockerClient,
    pf: &Pipelinefile,
    printer: &crate::ui::Printer,
) -> Result<String> {
    use crate::config::BoxSource;
    let Some(b) = pf.boxes.get(TargetKind::Docker) else {
        return Err(Error::usage(
            "[box] has no docker entry",
            Some("add `docker = { box = \"debian-12\" }` under [box]".to_string()),
        ));
    };
    match &b.value {
        BoxSource::Recipe(name) => {
            // Built on first use (and rebuilt when the recipe changed), with progress.
            let recipe = crate::boxes::recipe::Recipe::load(
                &pf.root.join("boxes").join(format!("{name}.toml")),
            )?;
            let built = crate::boxes::docker::build_docker_box(client, &recipe, printer, false)?;
            Ok(built.id)
        }
        BoxSource::Image(image) => match client.inspect_image(image)? {
            Some(img) => Ok(img.id),
            None => {
                let step = printer.step(format!("pull {image}"));
                let id = client.pull_image(image, &mut |status| step.set_detail(status))?;
                step.done(None);
                Ok(id)
            }
        },
        other => Err(Error::usage(format!("{other:?} is not a docker box"), None)),
    }
}
