//! The one SNS call pipe makes: publishing a `[notify]` message to a topic.

use super::client::AwsClient;
use super::error::AwsError;

impl AwsClient {
    /// Publishes `message` with `subject` to `topic` (an ARN in this client's region); the
    /// message id SNS gave it.
    pub fn publish(&self, topic: &str, subject: &str, message: &str) -> Result<String, AwsError> {
        let out = self
            .block(
                self.sns
                    .publish()
                    .topic_arn(topic)
                    .subject(subject)
                    .message(message)
                    .send(),
            )
            .map_err(|e| AwsError::api("Publish", e))?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }
}
