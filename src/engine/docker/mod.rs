//! The synchronous Docker Engine API client ([`DockerClient`]) that boxes, the docker-exec
//! communicator and the docker target are built on.
//!
//! Conventions every user of the client follows:
//! - resources pipe creates carry labels (`pipe.*`), so they can be found and swept by label;
//! - ports are published on 127.0.0.1 only;
//! - nothing sensitive goes into a container's or an image's config (env, labels, cmd): secrets
//!   are passed per exec, where they live only as long as the process.

mod client;
mod error;
mod stream;

pub use client::{
    ContainerInfo, ContainerSpec, DockerClient, ImageConfig, ImageInfo, PortSpec, PublishedPort,
};
pub use error::DockerError;
