//! Building the SDK client: credentials, region, endpoint, HTTPS and retries.
//!
//! Every method blocks the calling thread on the client's own runtime; do not call them from
//! inside another tokio runtime (pipe's commands are synchronous).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ec2::config::ProvideCredentials;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use super::error::AwsError;

/// How long looking for credentials may take before pipe says there are none (the chain's
/// last link asks the instance metadata service, which does not answer off EC2).
const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsSettings {
    /// `None`: the SDK's region chain (`AWS_REGION`, the profile).
    pub region: Option<String>,
    /// `None`: `AWS_PROFILE` or `default`.
    pub profile: Option<String>,
    /// Overrides the endpoint (and `AWS_ENDPOINT_URL`); `None` keeps the SDK's choice.
    pub endpoint_url: Option<String>,
    /// Attempts per call, the first included, in the SDK's standard retry mode; `None`: the
    /// SDK's own (`AWS_MAX_ATTEMPTS`, the profile's `max_attempts`, else 3).
    pub max_attempts: Option<u32>,
    /// A role to assume (STS AssumeRole, with the credentials found as above) for every call:
    /// an environment in another account. `None`: the credentials as found.
    pub role: Option<AssumedRole>,
}

/// A role in another account and the session name its calls show in that account's
/// CloudTrail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssumedRole {
    pub arn: String,
    pub session_name: String,
}

/// A connected client for one region. Cheap to clone; clones share the runtime.
#[derive(Clone)]
pub struct AwsClient {
    pub(super) ec2: aws_sdk_ec2::Client,
    pub(super) autoscaling: aws_sdk_autoscaling::Client,
    pub(super) ssm: aws_sdk_ssm::Client,
    pub(super) sns: aws_sdk_sns::Client,
    pub(super) s3: aws_sdk_s3::Client,
    pub(super) elbv2: aws_sdk_elasticloadbalancingv2::Client,
    rt: Arc<tokio::runtime::Runtime>,
    region: String,
    endpoint: Option<String>,
    /// With an assumed role: the client with the credentials it was assumed with (the account
    /// that owns the AMIs).
    home: Option<Box<AwsClient>>,
    role: Option<String>,
}

impl std::fmt::Debug for AwsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsClient")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("role", &self.role)
            .finish()
    }
}

impl AwsClient {
    /// Loads the configuration (credential chain, profile, region, endpoint) and checks that
    /// credentials exist. Makes no API call.
    pub fn connect(settings: &AwsSettings) -> Result<Self, AwsError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| AwsError::Api {
                operation: "starting the AWS client",
                code: None,
                detail: e.to_string(),
            })?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
        if let Some(n) = settings.max_attempts {
            loader = loader.retry_config(RetryConfig::standard().with_max_attempts(n.max(1)));
        }
        if let Some(r) = &settings.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(p) = &settings.profile {
            loader = loader.profile_name(p);
        }
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let config = rt.block_on(loader.load());
        let region = config
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| AwsError::Api {
                operation: "choosing the region",
                code: None,
                detail: "no region: set `region` in the environment or AWS_REGION".into(),
            })?;
        check_credentials(&rt, &config, None)?;
        let endpoint = settings
            .endpoint_url
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL_EC2").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        // An endpoint of its own (the local EC2, MinIO) answers on one host name: buckets go in
        // the path, not in a `bucket.host` name it could not resolve.
        let own_endpoint = settings.endpoint_url.is_some()
            || std::env::var_os("AWS_ENDPOINT_URL").is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        let home = Self {
            ec2: aws_sdk_ec2::Client::new(&config),
            autoscaling: aws_sdk_autoscaling::Client::new(&config),
            ssm: aws_sdk_ssm::Client::new(&config),
            sns: aws_sdk_sns::Client::new(&config),
            s3: s3_client(&config, own_endpoint),
            elbv2: aws_sdk_elasticloadbalancingv2::Client::new(&config),
            rt: Arc::new(rt),
            region,
            endpoint,
            home: None,
            role: None,
        };
        match &settings.role {
            None => Ok(home),
            Some(role) => home.assume(&config, role, own_endpoint),
        }
    }

    /// A client whose calls go with `role`'s credentials, assumed with this client's; asks
    /// STS once now, so a role that cannot be assumed fails here, naming it.
    fn assume(
        self,
        config: &aws_config::SdkConfig,
        role: &AssumedRole,
        path_style: bool,
    ) -> Result<Self, AwsError> {
        let provider = self.rt.block_on(
            aws_config::sts::AssumeRoleProvider::builder(&role.arn)
                .session_name(&role.session_name)
                .configure(config)
                .build(),
        );
        let config = config
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build();
        check_credentials(&self.rt, &config, Some(&role.arn))?;
        Ok(Self {
            ec2: aws_sdk_ec2::Client::new(&config),
            autoscaling: aws_sdk_autoscaling::Client::new(&config),
            ssm: aws_sdk_ssm::Client::new(&config),
            sns: aws_sdk_sns::Client::new(&config),
            s3: s3_client(&config, path_style),
            elbv2: aws_sdk_elasticloadbalancingv2::Client::new(&config),
            rt: self.rt.clone(),
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            role: Some(role.arn.clone()),
            home: Some(Box::new(self)),
        })
    }

    /// The client with the credentials as found, not an assumed role's: the account that
    /// bakes and owns the AMIs (this client itself when it assumed no role).
    pub fn home(&self) -> &AwsClient {
        self.home.as_deref().unwrap_or(self)
    }

    /// The role this client's calls assume, if any.
    pub fn role(&self) -> Option<&str> {
        self.role.as_deref()
    }

    /// A client for `region` through the same endpoint (copies to other regions), with the
    /// credentials as found (not an assumed role).
    pub fn in_region(&self, region: &str) -> Result<AwsClient, AwsError> {
        AwsClient::connect(&AwsSettings {
            region: Some(region.to_string()),
            endpoint_url: self.endpoint.clone(),
            ..AwsSettings::default()
        })
    }

    /// The region every call goes to.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The endpoint override in use, if any (else AWS's own endpoint for the region).
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    pub(super) fn block<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

/// The S3 client: path-style requests for an endpoint of its own; checksums only where S3
/// requires them, which every S3-compatible store understands.
fn s3_client(config: &aws_config::SdkConfig, path_style: bool) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(path_style)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build(),
    )
}

/// Asks `config`'s credential provider for credentials (with `role`, that is STS
/// AssumeRole), so that missing ones fail before the first call, with a hint.
fn check_credentials(
    rt: &tokio::runtime::Runtime,
    config: &aws_config::SdkConfig,
    role: Option<&str>,
) -> Result<(), AwsError> {
    let provider = config
        .credentials_provider()
        .ok_or_else(|| AwsError::NoCredentials("no credential provider".into()))?;
    let found = rt.block_on(async {
        tokio::time::timeout(CREDENTIALS_TIMEOUT, provider.provide_credentials()).await
    });
    match (found, role) {
        (Ok(Ok(_)), _) => Ok(()),
        (Ok(Err(e)), Some(role)) => Err(AwsError::AssumeRole {
            role: role.to_string(),
            detail: aws_sdk_ec2::error::DisplayErrorContext(&e).to_string(),
        }),
        (Ok(Err(CredentialsError::CredentialsNotLoaded(_))), None) => Err(AwsError::NoCredentials(
            "looked in the environment, the profile files, web identity, the container and the instance metadata".into(),
        )),
        (Ok(Err(e)), None) => Err(AwsError::NoCredentials(
            aws_sdk_ec2::error::DisplayErrorContext(&e).to_string(),
        )),
        (Err(_), _) => Err(AwsError::NoCredentials(format!(
            "none answered within {}s",
            CREDENTIALS_TIMEOUT.as_secs()
        ))),
    }
}
