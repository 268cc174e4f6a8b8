//! The Auto Scaling and load balancer calls a blue/green promotion makes: groups made, sized,
//! attached to and detached from target groups, tagged and deleted; and what the target
//! groups think of their members.

use aws_sdk_autoscaling::types::{LaunchTemplateSpecification, Tag};

use super::client::AwsClient;
use super::error::AwsError;

/// A group to make: the launch template version it runs explicitly, and the rest copied from
/// the group serving now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    pub name: String,
    pub template_id: String,
    pub version: String,
    pub min: i32,
    pub max: i32,
    pub desired: i32,
    pub subnets: Option<String>,
    pub zones: Vec<String>,
    pub target_groups: Vec<String>,
    pub health_check_type: Option<String>,
    pub health_check_grace: Option<i32>,
    /// Key, value, propagate at launch.
    pub tags: Vec<(String, String, bool)>,
}

fn tag(group: &str, key: &str, value: &str, propagate: bool) -> Tag {
    Tag::builder()
        .resource_id(group)
        .resource_type("auto-scaling-group")
        .key(key)
        .value(value)
        .propagate_at_launch(propagate)
        .build()
}

impl AwsClient {
    /// Makes the group; AWS starts launching its instances at once.
    pub fn create_group(&self, s: &GroupSpec) -> Result<(), AwsError> {
        let template = LaunchTemplateSpecification::builder()
            .launch_template_id(&s.template_id)
            .version(&s.version)
            .build();
        let mut call = self
            .autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(&s.name)
            .launch_template(template)
            .min_size(s.min)
            .max_size(s.max)
            .desired_capacity(s.desired)
            .set_vpc_zone_identifier(s.subnets.clone())
            .set_health_check_type(s.health_check_type.clone())
            .set_health_check_grace_period(s.health_check_grace)
            .set_tags(Some(
                s.tags
                    .iter()
                    .map(|(k, v, p)| tag(&s.name, k, v, *p))
                    .collect(),
            ));
        if s.subnets.is_none() {
            call = call.set_availability_zones(Some(s.zones.clone()));
        }
        if !s.target_groups.is_empty() {
            call = call.set_target_group_arns(Some(s.target_groups.clone()));
        }
        self.block(call.send())
            .map_err(|e| AwsError::api("CreateAutoScalingGroup", e))?;
        Ok(())
    }

    /// Sets the group's minimum, maximum and desired capacity.
    pub fn set_capacity(
        &self,
        group: &str,
        min: i32,
        max: i32,
        desired: i32,
    ) -> Result<(), AwsError> {
        self.block(
            self.autoscaling
                .update_auto_scaling_group()
                .auto_scaling_group_name(group)
                .min_size(min)
                .max_size(max)
                .desired_capacity(desired)
                .send(),
        )
        .map_err(|e| AwsError::api("UpdateAutoScalingGroup", e))?;
        Ok(())
    }

    /// Attaches the target groups: the group's in-service instances are registered with them.
    pub fn attach_target_groups(&self, group: &str, arns: &[String]) -> Result<(), AwsError> {
        if arns.is_empty() {
            return Ok(());
        }
        self.block(
            self.autoscaling
                .attach_load_balancer_target_groups()
                .auto_scaling_group_name(group)
                .set_target_group_arns(Some(arns.to_vec()))
                .send(),
        )
        .map_err(|e| AwsError::api("AttachLoadBalancerTargetGroups", e))?;
        Ok(())
    }

    /// Detaches the target groups: the group's instances are deregistered from them and drain
    /// for each target group's deregistration delay.
    pub fn detach_target_groups(&self, group: &str, arns: &[String]) -> Result<(), AwsError> {
        if arns.is_empty() {
            return Ok(());
        }
        self.block(
            self.autoscaling
                .detach_load_balancer_target_groups()
                .auto_scaling_group_name(group)
                .set_target_group_arns(Some(arns.to_vec()))
                .send(),
        )
        .map_err(|e| AwsError::api("DetachLoadBalancerTargetGroups", e))?;
        Ok(())
    }

    /// Sets tags on the group (replacing a tag of the same key).
    pub fn tag_group(&self, group: &str, tags: &[(&str, &str)]) -> Result<(), AwsError> {
        self.block(
            self.autoscaling
                .create_or_update_tags()
                .set_tags(Some(
                    tags.iter().map(|(k, v)| tag(group, k, v, false)).collect(),
                ))
                .send(),
        )
        .map_err(|e| AwsError::api("CreateOrUpdateTags", e))?;
        Ok(())
    }

    /// Deletes the group, terminating its instances; false when there was none.
    pub fn delete_group(&self, group: &str) -> Result<bool, AwsError> {
        match self.block(
            self.autoscaling
                .delete_auto_scaling_group()
                .auto_scaling_group_name(group)
                .force_delete(true)
                .send(),
        ) {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = AwsError::api("DeleteAutoScalingGroup", e);
                if e.code() == Some("ValidationError") && e.to_string().contains("not found") {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Each registered target of the target group with its state (`initial`, `healthy`,
    /// `unhealthy`, `draining`, `unused`, `unavailable`).
    pub fn target_health(&self, target_group: &str) -> Result<Vec<(String, String)>, AwsError> {
        let out = self
            .block(
                self.elbv2
                    .describe_target_health()
                    .target_group_arn(target_group)
                    .send(),
            )
            .map_err(|e| AwsError::api("DescribeTargetHealth", e))?;
        Ok(out
            .target_health_descriptions()
            .iter()
            .map(|d| {
                (
                    d.target()
                        .and_then(|t| t.id())
                        .unwrap_or_default()
                        .to_string(),
                    d.target_health()
                        .and_then(|h| h.state())
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                )
            })
            .collect())
    }
}
