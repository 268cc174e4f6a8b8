//! The ec2 target behind [`crate::targets::Target`]: layers are AMIs found by their tags
//! (`pipe:pipeline`, `pipe:layer`, `pipe:digest`), build and verify machines are instances
//! reached over SSH, each with its own temporary key pair and security group.
//!
//! - [`launch`]: a machine is a folder in `.pipe/ec2/<name>/` (the private key, 0600, and
//!   known_hosts), a key pair pipe imports, a security group that lets only TCP 22 in from
//!   this host's /32, and an instance with IMDSv2 required, all tagged `pipe:run`; each is
//!   journaled before it is created, by name (an instance by its `Name` tag, which is also its
//!   launch's client token: the id is only known once it exists).
//! - [`image`]: a build machine is sealed, stopped and made an AMI, journaled until it is
//!   available (an interrupted one is deregistered with its snapshots), then kept.
//! - [`copies`]: the app AMI copied to `ami_regions` in parallel, each copy journaled until
//!   it is available; copies made for the same digest before are reused.
//! - [`prune`]: a release's AMIs and snapshots removed in every region (`pipe prune`).
//! - [`sweep`]: what dead runs left, by the `pipe:run` tag, in the pipeline's regions.
//!
//! - [`promote`]: an environment's Auto Scaling group moved to a release's AMI (launch
//!   template version, instance refresh with auto-rollback, SSM parameter), as the target's
//!   [`crate::targets::fleet::Fleet`].
//! - [`share`]: an environment in another account gets the AMI shared before a promotion
//!   names it there; the promotion's calls in that account assume its role.
//!   [`crate::targets::fleet::Fleet`]; [`bluegreen`]: the other strategy, a new group per
//!   promotion, the old one scaled to zero and kept for rollback.

pub mod bluegreen;
mod copies;
mod drift;
mod image;
mod launch;
pub mod promote;
mod prune;
mod share;
mod sweep;
mod target;

use crate::engine::aws::AwsError;
use crate::error::Error;

pub use target::Ec2Target;

/// An AWS failure while doing something to a resource: the message names the resource (and
/// keeps AWS's call, code and message), the hint says what to do; Ctrl-C stays an interrupt.
fn failed(what: impl std::fmt::Display) -> impl FnOnce(AwsError) -> Error {
    move |e| match e {
        AwsError::Interrupted => Error::Interrupted,
        e => {
            let hint = match &e {
                AwsError::WaitTimeout { .. } => Some(
                    "AWS may just be slow: raise the environment's `wait_timeout` (seconds; by default 600 for instances, 1800 for AMIs)".to_string(),
                ),
                e => e.hint(),
            };
            Error::runtime(format!("{what}: {e}"), hint).caused_by(e)
        }
    }
}

/// The user pipe logs in as when `ssh_username` is not set (Debian's AMIs).
pub const DEFAULT_SSH_USERNAME: &str = "admin";
/// The instance type when `instance_type` is not set.
pub const DEFAULT_INSTANCE_TYPE: &str = "t3.micro";
