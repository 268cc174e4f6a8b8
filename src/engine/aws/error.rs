//! Errors of AWS calls: which call, AWS's code and message, and what to do.

use std::time::Duration;

/// What went wrong talking to AWS.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// No credentials in the standard chain (environment, profile, SSO, instance role).
    #[error("no AWS credentials found ({0})")]
    NoCredentials(String),
    /// STS did not give pipe the credentials of a role (AssumeRole failed).
    #[error("assuming role {role} failed: {detail}")]
    AssumeRole { role: String, detail: String },
    /// An API call failed (after the SDK's retries).
    #[error("{operation} failed: {detail}")]
    Api {
        operation: &'static str,
        /// AWS's error code (`InvalidAMIID.NotFound`), when it sent one.
        code: Option<String>,
        detail: String,
    },
    /// A wait gave up.
    #[error("{what} {id} was not {state} after {:.0}s (last seen: {last})", .waited.as_secs_f64())]
    WaitTimeout {
        what: &'static str,
        id: String,
        state: String,
        last: String,
        waited: Duration,
    },
    /// A wait saw a state it cannot leave for the one it waits for.
    #[error("{what} {id} became {last} while waiting for it to be {state}{reason}")]
    WaitFailed {
        what: &'static str,
        id: String,
        state: String,
        last: String,
        reason: String,
    },
    /// Ctrl-C during a wait.
    #[error("interrupted")]
    Interrupted,
}

impl AwsError {
    /// What to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            AwsError::NoCredentials(_) => Some(
                "set AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or run `aws configure`; for the local EC2 any dummy keys do".into(),
            ),
            AwsError::AssumeRole { role, .. } => Some(format!(
                "the role's trust policy must let this account's credentials assume it (sts:AssumeRole), and {role} must exist: see the README (\"Cross-account promotion\")"
            )),
            AwsError::Api { code: Some(c), .. } if c.contains("AuthFailure") || c.contains("UnauthorizedOperation") => {
                Some("check the credentials and the IAM permissions listed in the README (\"Baking on EC2\")".into())
            }
            AwsError::Api { code: None, detail, .. } if detail.starts_with("no answer") => Some(
                "is the endpoint reachable? AWS_ENDPOINT_URL or the environment's `endpoint_url` picks another one".into(),
            ),
            AwsError::Api { code: Some(c), .. } if c == "InsufficientInstanceCapacity" => Some(
                "AWS has no capacity for this instance type there right now: try again later, another `instance_type`, or a `subnet_id` in another availability zone".into(),
            ),
            AwsError::Api { code: Some(c), .. } if is_transient(c) => Some(
                "AWS kept answering this through the retries with back-off: try again later, or allow more attempts with AWS_MAX_ATTEMPTS".into(),
            ),
            AwsError::WaitTimeout { .. } => Some("it may still get there: look in the EC2 console, then `pipe clean`".into()),
            _ => None,
        }
    }

    /// The AWS error code, if the call failed with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// True for "not found" codes (the resource is already gone).
    pub fn is_not_found(&self) -> bool {
        self.code()
            .is_some_and(|c| c.contains("NotFound") || c.contains(".Unknown"))
    }

    /// True when the call failed with throttling or a server error, which the SDK retries
    /// (and a waiter's next look may get past).
    pub fn is_transient(&self) -> bool {
        self.code().is_some_and(is_transient)
    }

    pub(crate) fn api<E>(operation: &'static str, err: aws_sdk_ec2::error::SdkError<E>) -> Self
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
        let code = err.code().map(str::to_string);
        let detail = match (&err, err.code(), err.message()) {
            (_, Some(code), Some(msg)) => format!("{code}: {msg}"),
            (_, Some(code), None) => code.to_string(),
            (SdkError::DispatchFailure(_) | SdkError::TimeoutError(_), _, _) => format!(
                "no answer from the endpoint: {}",
                aws_sdk_ec2::error::DisplayErrorContext(&err)
            ),
            (SdkError::ServiceError(_) | SdkError::ResponseError(_), _, _)
                if err.raw_response().is_some() =>
            {
                let raw = err.raw_response().expect("checked");
                let body = raw.body().bytes().unwrap_or_default();
                let body = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                format!(
                    "HTTP {} without an AWS error (body: {})",
                    raw.status().as_u16(),
                    body.trim()
                )
            }
            _ => aws_sdk_ec2::error::DisplayErrorContext(&err).to_string(),
        };
        AwsError::Api {
            operation,
            code,
            detail,
        }
    }
}

/// AWS's throttling and server-error codes: worth another try later.
fn is_transient(code: &str) -> bool {
    matches!(
        code,
        "RequestLimitExceeded"
            | "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "TooManyRequestsException"
            | "EC2ThrottledException"
            | "SlowDown"
            | "InternalError"
            | "InternalFailure"
            | "ServiceUnavailable"
            | "Unavailable"
    )
}
