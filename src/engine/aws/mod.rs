//! A synchronous AWS client (the AWS SDK for Rust on a small tokio runtime it owns), with just
//! the EC2 (and Auto Scaling, SSM, SNS, and the shared ledger's S3) calls pipe makes, as
//! [`super::docker::DockerClient`] is for the Docker engine.
//!
//! - **Connect** ([`AwsClient::connect`]): the standard credential chain, profile and region,
//!   `AWS_ENDPOINT_URL` (read by the SDK) or an explicit endpoint, an HTTPS client on rustls
//!   with ring, and the SDK's standard retry mode (throttling and 5xx are retried with
//!   jittered exponential back-off, up to [`AwsSettings::max_attempts`]). Missing credentials
//!   fail at once, with a hint, not at the first call.
//! - **Waits** ([`wait`]): polls from about a second, growing, with jitter, up to a limit;
//!   giving up names the resource, the state waited for and how long it was waited for.
//! - Every resource pipe creates is tagged (`pipe:*`), so it can be found and swept by tag.

mod autoscaling;
mod client;
mod ec2;
mod error;
mod groups;
mod s3;
mod share;
mod sns;
mod ssm;
pub mod switch;
mod templates;
pub mod wait;

pub use autoscaling::{GroupInfo, GroupInstance, RefreshInfo, RefreshStart, TemplateRef};
pub use client::{AssumedRole, AwsClient, AwsSettings};
pub use ec2::{
    ImageInfo, InstanceInfo, InstanceLaunch, RootVolumeSpec, Tagged, filter_tags,
    is_loopback_endpoint,
};
pub use error::AwsError;
pub use groups::GroupSpec;
pub use s3::{S3Listed, S3Object};
pub use ssm::{IMAGE_DATA_TYPE, ParameterInfo};
pub use templates::{TemplateInfo, TemplateVersion};
