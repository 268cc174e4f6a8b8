//! Sharing an AMI with another account: launch permission on the image and create-volume
//! permission on each of its snapshots (an instance in that account needs both), read back
//! through the attribute calls.

use aws_sdk_ec2::types::{
    ImageAttributeName, LaunchPermission, LaunchPermissionModifications, OperationType,
    SnapshotAttributeName,
};

use super::client::AwsClient;
use super::error::AwsError;

impl AwsClient {
    /// The accounts that may launch image `id` (its launch permissions by user id).
    pub fn image_launch_accounts(&self, id: &str) -> Result<Vec<String>, AwsError> {
        let out = self
            .block(
                self.ec2
                    .describe_image_attribute()
                    .image_id(id)
                    .attribute(ImageAttributeName::LaunchPermission)
                    .send(),
            )
            .map_err(|e| AwsError::api("DescribeImageAttribute", e))?;
        Ok(out
            .launch_permissions()
            .iter()
            .filter_map(|p| p.user_id().map(str::to_string))
            .collect())
    }

    /// Lets `account` launch image `id`.
    pub fn grant_image_launch(&self, id: &str, account: &str) -> Result<(), AwsError> {
        let add = LaunchPermissionModifications::builder()
            .add(LaunchPermission::builder().user_id(account).build())
            .build();
        self.block(
            self.ec2
                .modify_image_attribute()
                .image_id(id)
                .launch_permission(add)
                .send(),
        )
        .map_err(|e| AwsError::api("ModifyImageAttribute", e))?;
        Ok(())
    }

    /// The accounts that may create volumes from snapshot `id`.
    pub fn snapshot_volume_accounts(&self, id: &str) -> Result<Vec<String>, AwsError> {
        let out = self
            .block(
                self.ec2
                    .describe_snapshot_attribute()
                    .snapshot_id(id)
                    .attribute(SnapshotAttributeName::CreateVolumePermission)
                    .send(),
            )
            .map_err(|e| AwsError::api("DescribeSnapshotAttribute", e))?;
        Ok(out
            .create_volume_permissions()
            .iter()
            .filter_map(|p| p.user_id().map(str::to_string))
            .collect())
    }

    /// Lets `account` create volumes from snapshot `id` (what launching a shared AMI does).
    pub fn grant_snapshot_volume(&self, id: &str, account: &str) -> Result<(), AwsError> {
        self.block(
            self.ec2
                .modify_snapshot_attribute()
                .snapshot_id(id)
                .attribute(SnapshotAttributeName::CreateVolumePermission)
                .operation_type(OperationType::Add)
                .user_ids(account)
                .send(),
        )
        .map_err(|e| AwsError::api("ModifySnapshotAttribute", e))?;
        Ok(())
    }
}
