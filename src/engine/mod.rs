//! Engine clients, the bottom of the module tree: the Docker Engine API (bollard), QEMU
//! processes with their QMP sockets, and AWS (the SDK, EC2 calls). They know nothing of
//! Pipelinefiles, targets or runs; everything above them may use them.

pub mod aws;
pub mod docker;
pub mod qemu;
