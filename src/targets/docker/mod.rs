//! The docker target. This module holds the synchronous Engine API client ([`DockerClient`]) that
//! boxes, the docker-exec communicator and the target's machines and layers are built on.
//!
//! Conventions every user of the client follows:
//! - resources pipe creates carry labels (`pipe.*`), so they can be found and swept by label;
//! - ports are published on 127.0.0.1 only;
//! - nothing sensitive goes into a container's or an image's config (env, labels, cmd): secrets
//!   are passed per exec, where they live only as long as the process.

pub mod build;
mod client;
mod error;
pub mod machine;
pub mod promote;
mod stream;
pub mod verify;

pub use client::{
    ContainerInfo, ContainerSpec, DockerClient, ImageConfig, ImageInfo, PortSpec, PublishedPort,
};
pub use error::DockerError;
