//! Engine clients, the bottom of the module tree: the Docker Engine API (bollard) and QEMU
//! processes with their QMP sockets. They know
//! nothing of Pipelinefiles, targets or runs; everything above them may use them.

pub mod docker;
pub mod qemu;
