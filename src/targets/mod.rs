//! Where layers are built and machines run: `docker` (bollard), later `qemu` and `ec2`.

pub mod docker;
pub mod qemu;
pub mod ready;
