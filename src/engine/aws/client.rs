//! Building the SDK client: credentials, region, endpoint, HTTPS and retries.
//!
//! Every method blocks the calling thread on the client's own runtime; do not call them from
//! inside another tokio runtime (pipe's commands are synchronous).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
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
}

/// A connected client for one region. Cheap to clone; clones share the runtime.
#[derive(Clone)]
pub struct AwsClient {
    pub(super) ec2: aws_sdk_ec2::Client,
    pub(super) autoscaling: aws_sdk_autoscaling::Client,
    pub(super) ssm: aws_sdk_ssm::Client,
    pub(super) elbv2: aws_sdk_elasticloadbalancingv2::Client,
    rt: Arc<tokio::runtime::Runtime>,
    region: String,
    endpoint: Option<String>,
}

impl std::fmt::Debug for AwsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsClient")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
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
        let provider = config
            .credentials_provider()
            .ok_or_else(|| AwsError::NoCredentials("no credential provider".into()))?;
        let found = rt.block_on(async {
            tokio::time::timeout(CREDENTIALS_TIMEOUT, provider.provide_credentials()).await
        });
        match found {
            Ok(Ok(_)) => {}
            Ok(Err(CredentialsError::CredentialsNotLoaded(_))) => {
                return Err(AwsError::NoCredentials(
                    "looked in the environment, the profile files, web identity, the container and the instance metadata".into(),
                ));
            }
            Ok(Err(e)) => {
                return Err(AwsError::NoCredentials(
                    aws_sdk_ec2::error::DisplayErrorContext(&e).to_string(),
                ));
            }
            Err(_) => {
                return Err(AwsError::NoCredentials(format!(
                    "none answered within {}s",
                    CREDENTIALS_TIMEOUT.as_secs()
                )));
            }
        }
        let endpoint = settings
            .endpoint_url
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL_EC2").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        Ok(Self {
            ec2: aws_sdk_ec2::Client::new(&config),
            autoscaling: aws_sdk_autoscaling::Client::new(&config),
            ssm: aws_sdk_ssm::Client::new(&config),
            elbv2: aws_sdk_elasticloadbalancingv2::Client::new(&config),
            rt: Arc::new(rt),
            region,
            endpoint,
        })
    }

    /// A client for `region` through the same endpoint (copies to other regions).
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
