//! Launch templates (an EC2 API): the template a group runs, its versions, a new version that
//! changes only the image, the default version; and deregistration protection for the AMI an
//! environment serves.

use aws_sdk_ec2::types::RequestLaunchTemplateData;

use super::client::AwsClient;
use super::error::AwsError;

/// A launch template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateInfo {
    pub id: String,
    pub name: String,
    pub default_version: i64,
    pub latest_version: i64,
}

/// One version of a launch template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateVersion {
    pub number: i64,
    pub description: Option<String>,
    /// As written in the version: an AMI id, or `resolve:ssm:...` (never resolved here, so
    /// that drift can show it).
    pub image: Option<String>,
    pub default: bool,
}

impl AwsClient {
    /// The template named `name`; `None` when there is none.
    pub fn launch_template(&self, name: &str) -> Result<Option<TemplateInfo>, AwsError> {
        match self.block(
            self.ec2
                .describe_launch_templates()
                .launch_template_names(name)
                .send(),
        ) {
            Ok(out) => Ok(out.launch_templates().first().map(|t| TemplateInfo {
                id: t.launch_template_id().unwrap_or_default().to_string(),
                name: t.launch_template_name().unwrap_or_default().to_string(),
                default_version: t.default_version_number().unwrap_or_default(),
                latest_version: t.latest_version_number().unwrap_or_default(),
            })),
            Err(e) => {
                let e = AwsError::api("DescribeLaunchTemplates", e);
                if e.code().is_some_and(|c| c.contains("NotFound")) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// One version of the template (`$Default`, `$Latest` or a number), as written.
    pub fn template_version(
        &self,
        template_id: &str,
        version: &str,
    ) -> Result<Option<TemplateVersion>, AwsError> {
        let out = self
            .block(
                self.ec2
                    .describe_launch_template_versions()
                    .launch_template_id(template_id)
                    .versions(version)
                    .send(),
            )
            .map_err(|e| AwsError::api("DescribeLaunchTemplateVersions", e))?;
        Ok(out.launch_template_versions().first().map(version_info))
    }

    /// A new version of the template made from `source` with only the image changed, as an
    /// explicit AMI id: AWS carries every other field of the source version over
    /// (SourceVersion), including fields pipe does not know. Returns its number.
    pub fn create_template_version(
        &self,
        template_id: &str,
        source: i64,
        image: &str,
        description: &str,
    ) -> Result<i64, AwsError> {
        let out = self
            .block(
                self.ec2
                    .create_launch_template_version()
                    .launch_template_id(template_id)
                    .source_version(source.to_string())
                    .version_description(description)
                    .launch_template_data(
                        RequestLaunchTemplateData::builder().image_id(image).build(),
                    )
                    .send(),
            )
            .map_err(|e| AwsError::api("CreateLaunchTemplateVersion", e))?;
        Ok(out
            .launch_template_version()
            .and_then(|v| v.version_number())
            .unwrap_or_default())
    }

    /// Makes `version` the template's default.
    pub fn set_default_version(&self, template_id: &str, version: i64) -> Result<(), AwsError> {
        self.block(
            self.ec2
                .modify_launch_template()
                .launch_template_id(template_id)
                .default_version(version.to_string())
                .send(),
        )
        .map_err(|e| AwsError::api("ModifyLaunchTemplate", e))?;
        Ok(())
    }

    /// Deletes one version (never the default: AWS refuses); false when it was gone.
    pub fn delete_template_version(
        &self,
        template_id: &str,
        version: i64,
    ) -> Result<bool, AwsError> {
        let out = self
            .block(
                self.ec2
                    .delete_launch_template_versions()
                    .launch_template_id(template_id)
                    .versions(version.to_string())
                    .send(),
            )
            .map_err(|e| AwsError::api("DeleteLaunchTemplateVersions", e))?;
        if let Some(f) = out
            .unsuccessfully_deleted_launch_template_versions()
            .first()
        {
            let code = f
                .response_error()
                .and_then(|r| r.code())
                .map(|c| c.as_str().to_string());
            if code.as_deref() == Some("launchTemplateVersionDoesNotExist") {
                return Ok(false);
            }
            return Err(AwsError::Api {
                operation: "DeleteLaunchTemplateVersions",
                code: code.clone(),
                detail: format!(
                    "version {version}: {}",
                    f.response_error()
                        .and_then(|r| r.message())
                        .unwrap_or_else(|| code.as_deref().unwrap_or("refused"))
                ),
            });
        }
        Ok(true)
    }

    /// Turns deregistration protection on for the AMI that serves (it cannot be deregistered
    /// by accident, `pipe prune` included, until it is turned off).
    pub fn protect_image(&self, image: &str) -> Result<(), AwsError> {
        self.block(
            self.ec2
                .enable_image_deregistration_protection()
                .image_id(image)
                .send(),
        )
        .map_err(|e| AwsError::api("EnableImageDeregistrationProtection", e))?;
        Ok(())
    }
}

impl AwsClient {
    /// Every version of the template (every page), oldest first.
    pub fn template_versions(&self, template_id: &str) -> Result<Vec<TemplateVersion>, AwsError> {
        let pages: Vec<_> = self.block(
            self.ec2
                .describe_launch_template_versions()
                .launch_template_id(template_id)
                .into_paginator()
                .send()
                .collect(),
        );
        let mut out = Vec::new();
        for page in pages {
            let page = page.map_err(|e| AwsError::api("DescribeLaunchTemplateVersions", e))?;
            out.extend(page.launch_template_versions().iter().map(version_info));
        }
        out.sort_by_key(|v| v.number);
        Ok(out)
    }
}

fn version_info(v: &aws_sdk_ec2::types::LaunchTemplateVersion) -> TemplateVersion {
    TemplateVersion {
        number: v.version_number().unwrap_or_default(),
        description: v.version_description().map(str::to_string),
        image: v
            .launch_template_data()
            .and_then(|d| d.image_id())
            .map(str::to_string),
        default: v.default_version().unwrap_or(false),
    }
}
