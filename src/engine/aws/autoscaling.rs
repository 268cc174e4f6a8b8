//! The Auto Scaling calls a promotion makes: the group as it runs now, and its instance
//! refreshes (start, look, roll back, cancel).

use aws_sdk_autoscaling::types::{
    DesiredConfiguration, LaunchTemplateSpecification, RefreshPreferences,
};

use super::client::AwsClient;
use super::error::AwsError;

/// A launch template as a group names it: by id or name, and a version (`$Default`,
/// `$Latest` or a number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRef {
    pub id: Option<String>,
    pub name: Option<String>,
    pub version: Option<String>,
}

/// One instance of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInstance {
    pub id: String,
    /// `Pending`, `InService`, `Terminating`, ...
    pub lifecycle: String,
    /// `Healthy` or `Unhealthy`.
    pub health: String,
    /// The template version it was launched from, when it was launched from one.
    pub template: Option<TemplateRef>,
}

/// An Auto Scaling group, as far as a promotion needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub name: String,
    pub desired: i32,
    pub min: i32,
    pub max: i32,
    /// `None`: a launch configuration or a mixed instances policy (not refreshed by pipe).
    pub template: Option<TemplateRef>,
    pub target_groups: Vec<String>,
    pub instances: Vec<GroupInstance>,
    /// Subnets, comma-separated (`VPCZoneIdentifier`), when the group names them.
    pub subnets: Option<String>,
    pub zones: Vec<String>,
    /// `EC2` or `ELB`.
    pub health_check_type: Option<String>,
    pub health_check_grace: Option<i32>,
    /// The group's tags: key, value, and whether instances launched by it get the tag.
    pub tags: Vec<(String, String, bool)>,
    /// When the group was made, seconds since the epoch.
    pub created: i64,
}

impl GroupInfo {
    /// The value of the group's tag `key`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, _)| v.as_str())
    }
}

/// An instance refresh, as DescribeInstanceRefreshes shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshInfo {
    pub id: String,
    /// `Pending`, `InProgress`, `Successful`, `Failed`, `Cancelling`, `Cancelled`,
    /// `RollbackInProgress`, `RollbackSuccessful`, `RollbackFailed`, `Baking`.
    pub status: String,
    pub reason: Option<String>,
    pub percent: Option<i32>,
    pub instances_to_update: Option<i32>,
    /// Why it rolled back, when it did.
    pub rollback_reason: Option<String>,
}

impl RefreshInfo {
    /// True once the refresh will not change anything any more.
    pub fn ended(&self) -> bool {
        matches!(
            self.status.as_str(),
            "Successful" | "Failed" | "Cancelled" | "RollbackSuccessful" | "RollbackFailed"
        )
    }
}

/// What a refresh is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshStart {
    pub group: String,
    /// The launch template (by id) and the explicit version the group is to run.
    pub template_id: String,
    pub version: String,
    pub min_healthy_percentage: i32,
    pub max_healthy_percentage: Option<i32>,
    /// Seconds a new instance warms up before it counts.
    pub instance_warmup: Option<i32>,
    pub checkpoints: Vec<i32>,
    /// CloudWatch alarms that fail the refresh.
    pub alarms: Vec<String>,
}

fn template_ref(t: &aws_sdk_autoscaling::types::LaunchTemplateSpecification) -> TemplateRef {
    TemplateRef {
        id: t.launch_template_id().map(str::to_string),
        name: t.launch_template_name().map(str::to_string),
        version: t.version().map(str::to_string),
    }
}

fn refresh_info(r: &aws_sdk_autoscaling::types::InstanceRefresh) -> RefreshInfo {
    RefreshInfo {
        id: r.instance_refresh_id().unwrap_or_default().to_string(),
        status: r
            .status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        reason: r.status_reason().map(str::to_string),
        percent: r.percentage_complete(),
        instances_to_update: r.instances_to_update(),
        rollback_reason: r
            .rollback_details()
            .and_then(|d| d.rollback_reason())
            .map(str::to_string),
    }
}

fn group_info(g: &aws_sdk_autoscaling::types::AutoScalingGroup) -> GroupInfo {
    GroupInfo {
        name: g.auto_scaling_group_name().unwrap_or_default().to_string(),
        desired: g.desired_capacity().unwrap_or_default(),
        min: g.min_size().unwrap_or_default(),
        max: g.max_size().unwrap_or_default(),
        template: g.launch_template().map(template_ref),
        target_groups: g.target_group_arns().to_vec(),
        instances: g
            .instances()
            .iter()
            .map(|i| GroupInstance {
                id: i.instance_id().unwrap_or_default().to_string(),
                lifecycle: i
                    .lifecycle_state()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                health: i.health_status().unwrap_or_default().to_string(),
                template: i.launch_template().map(template_ref),
            })
            .collect(),
        subnets: g
            .vpc_zone_identifier()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        zones: g.availability_zones().to_vec(),
        health_check_type: g.health_check_type().map(str::to_string),
        health_check_grace: g.health_check_grace_period(),
        tags: g
            .tags()
            .iter()
            .map(|t| {
                (
                    t.key().unwrap_or_default().to_string(),
                    t.value().unwrap_or_default().to_string(),
                    t.propagate_at_launch().unwrap_or(false),
                )
            })
            .collect(),
        created: g.created_time().map_or(0, |t| t.secs()),
    }
}

impl AwsClient {
    /// The group named `name`; `None` when there is none.
    pub fn group(&self, name: &str) -> Result<Option<GroupInfo>, AwsError> {
        let out = self
            .block(
                self.autoscaling
                    .describe_auto_scaling_groups()
                    .auto_scaling_group_names(name)
                    .send(),
            )
            .map_err(|e| AwsError::api("DescribeAutoScalingGroups", e))?;
        Ok(out.auto_scaling_groups().first().map(group_info))
    }

    /// Every group of the region (paged).
    pub fn groups(&self) -> Result<Vec<GroupInfo>, AwsError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .block(
                    self.autoscaling
                        .describe_auto_scaling_groups()
                        .set_next_token(token.take())
                        .send(),
                )
                .map_err(|e| AwsError::api("DescribeAutoScalingGroups", e))?;
            out.extend(page.auto_scaling_groups().iter().map(group_info));
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    /// Starts an instance refresh to the explicit template version, with auto-rollback;
    /// returns its id. AWS refuses a second one while one runs (`InstanceRefreshInProgress`).
    pub fn start_refresh(&self, s: &RefreshStart) -> Result<String, AwsError> {
        let mut prefs = RefreshPreferences::builder()
            .min_healthy_percentage(s.min_healthy_percentage)
            .auto_rollback(true)
            .skip_matching(false)
            .set_max_healthy_percentage(s.max_healthy_percentage)
            .set_instance_warmup(s.instance_warmup);
        if !s.checkpoints.is_empty() {
            prefs = prefs.set_checkpoint_percentages(Some(s.checkpoints.clone()));
        }
        if !s.alarms.is_empty() {
            prefs = prefs.alarm_specification(
                aws_sdk_autoscaling::types::AlarmSpecification::builder()
                    .set_alarms(Some(s.alarms.clone()))
                    .build(),
            );
        }
        let desired = DesiredConfiguration::builder()
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_id(&s.template_id)
                    .version(&s.version)
                    .build(),
            )
            .build();
        let out = self
            .block(
                self.autoscaling
                    .start_instance_refresh()
                    .auto_scaling_group_name(&s.group)
                    .desired_configuration(desired)
                    .preferences(prefs.build())
                    .send(),
            )
            .map_err(|e| AwsError::api("StartInstanceRefresh", e))?;
        Ok(out.instance_refresh_id().unwrap_or_default().to_string())
    }

    /// The group's refreshes, newest first.
    pub fn refreshes(&self, group: &str) -> Result<Vec<RefreshInfo>, AwsError> {
        let out = self
            .block(
                self.autoscaling
                    .describe_instance_refreshes()
                    .auto_scaling_group_name(group)
                    .send(),
            )
            .map_err(|e| AwsError::api("DescribeInstanceRefreshes", e))?;
        Ok(out.instance_refreshes().iter().map(refresh_info).collect())
    }

    /// One refresh of the group; `None` when AWS no longer lists it.
    pub fn refresh(&self, group: &str, id: &str) -> Result<Option<RefreshInfo>, AwsError> {
        let out = self
            .block(
                self.autoscaling
                    .describe_instance_refreshes()
                    .auto_scaling_group_name(group)
                    .instance_refresh_ids(id)
                    .send(),
            )
            .map_err(|e| AwsError::api("DescribeInstanceRefreshes", e))?;
        Ok(out.instance_refreshes().first().map(refresh_info))
    }

    /// Rolls the group's refresh in progress back to the configuration it had before.
    pub fn rollback_refresh(&self, group: &str) -> Result<(), AwsError> {
        self.block(
            self.autoscaling
                .rollback_instance_refresh()
                .auto_scaling_group_name(group)
                .send(),
        )
        .map_err(|e| AwsError::api("RollbackInstanceRefresh", e))?;
        Ok(())
    }

    /// Cancels the group's refresh in progress (instances already replaced stay).
    pub fn cancel_refresh(&self, group: &str) -> Result<(), AwsError> {
        self.block(
            self.autoscaling
                .cancel_instance_refresh()
                .auto_scaling_group_name(group)
                .send(),
        )
        .map_err(|e| AwsError::api("CancelInstanceRefresh", e))?;
        Ok(())
    }
}

/// Statuses of a refresh that is still changing the group.
const RUNNING: &[&str] = &[
    "Pending",
    "InProgress",
    "Baking",
    "Cancelling",
    "RollbackInProgress",
];

impl AwsClient {
    /// The group's refresh that still runs, if any.
    pub fn running_refresh(&self, group: &str) -> Result<Option<RefreshInfo>, AwsError> {
        Ok(self
            .refreshes(group)?
            .into_iter()
            .find(|r| RUNNING.contains(&r.status.as_str())))
    }

    /// Rolls back the group's refresh in progress, if one is, and waits until it ended (up to
    /// `limit`, or until `stop`); true when there was one to roll back. A refresh already
    /// rolling back or cancelling is only waited for.
    pub fn roll_back_refresh(
        &self,
        group: &str,
        limit: std::time::Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<bool, AwsError> {
        let Some(running) = self.running_refresh(group)? else {
            return Ok(false);
        };
        if matches!(running.status.as_str(), "Pending" | "InProgress" | "Baking") {
            match self.rollback_refresh(group) {
                Ok(()) => {}
                // It ended (or began rolling back by itself) between the look and the call.
                Err(e) if e.code() == Some("ActiveInstanceRefreshNotFound") => {}
                Err(e) => return Err(e),
            }
        }
        let id = running.id.clone();
        super::wait::until(
            super::wait::Waiting {
                what: "instance refresh",
                id: &id,
                state: "rolled back",
            },
            super::wait::WaitPolicy::up_to(limit),
            stop,
            || {
                Ok(match self.refresh(group, &id)? {
                    Some(r) if !r.ended() => super::wait::Seen::Pending(r.status),
                    _ => super::wait::Seen::Done,
                })
            },
        )?;
        Ok(true)
    }
}
