//! The SSM Parameter Store calls pipe makes: the parameter that names the AMI an environment
//! runs (data type `aws:ec2:image`, so AWS checks that it is one), and plain parameters written
//! only if absent, which make a lock every host sees.

use aws_sdk_ssm::types::ParameterType;

use super::client::AwsClient;
use super::error::AwsError;

/// A parameter's value and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterInfo {
    pub value: String,
    pub version: i64,
}

/// The data type of a parameter that holds an AMI id.
pub const IMAGE_DATA_TYPE: &str = "aws:ec2:image";

impl AwsClient {
    /// The parameter `name`; `None` when it does not exist.
    pub fn parameter(&self, name: &str) -> Result<Option<ParameterInfo>, AwsError> {
        match self.block(self.ssm.get_parameter().name(name).send()) {
            Ok(out) => Ok(out.parameter().map(|p| ParameterInfo {
                value: p.value().unwrap_or_default().to_string(),
                version: p.version(),
            })),
            Err(e) => {
                let e = AwsError::api("GetParameter", e);
                if e.code() == Some("ParameterNotFound") {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Writes `name` = `value` (a String parameter, `data_type` when given, e.g.
    /// [`IMAGE_DATA_TYPE`]). With `overwrite` false an existing parameter is an error
    /// (`ParameterAlreadyExists`), which is what makes it a lock. Returns the new version.
    pub fn put_parameter(
        &self,
        name: &str,
        value: &str,
        data_type: Option<&str>,
        description: &str,
        overwrite: bool,
    ) -> Result<i64, AwsError> {
        let mut req = self
            .ssm
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(ParameterType::String)
            .description(description)
            .overwrite(overwrite);
        if let Some(t) = data_type {
            req = req.data_type(t);
        }
        let out = self
            .block(req.send())
            .map_err(|e| AwsError::api("PutParameter", e))?;
        Ok(out.version())
    }

    /// Deletes the parameter; false when it was already gone.
    pub fn delete_parameter(&self, name: &str) -> Result<bool, AwsError> {
        match self.block(self.ssm.delete_parameter().name(name).send()) {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = AwsError::api("DeleteParameter", e);
                if e.code() == Some("ParameterNotFound") {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }
}
