//! The docker target: layers as images, machines as containers with their services supervised
//! inside, reached through docker exec. The Engine client itself is [`crate::engine::docker`].

pub mod build;
pub mod machine;
pub mod promote;
pub mod verify;
