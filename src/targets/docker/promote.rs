//! What serves an environment on Docker: containers labelled `pipe.role=serving` (see
//! [`super::DockerTarget`]; the switch itself is [`crate::targets::switch`]).

use crate::engine::docker::{ContainerInfo, DockerClient};
use crate::error::Result;

/// `pipe/<pipeline>` and `<env>`: the tag of the image serving an environment.
pub fn env_tag(pipeline: &str, env: &str) -> (String, String) {
    (format!("pipe/{pipeline}"), env.to_string())
}

/// The serving containers of an environment (normally one), running or not.
pub fn find_serving(
    client: &DockerClient,
    pipeline: &str,
    project: &str,
    env: &str,
) -> Result<Vec<ContainerInfo>> {
    super::machine::find_by_role(client, pipeline, project, "serving", Some(env))
}
