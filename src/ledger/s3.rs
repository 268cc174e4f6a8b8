//! The shared ledger's store on S3 ([`super::shared::ObjectStore`] over the AWS client).

use crate::engine::aws::{AwsClient, AwsError, S3Listed, S3Object};

use super::shared::ObjectStore;

/// One bucket of S3, through a connected client.
pub struct S3Store {
    pub client: AwsClient,
    pub bucket: String,
}

impl ObjectStore for S3Store {
    fn get(&self, key: &str) -> Result<Option<S3Object>, AwsError> {
        self.client.s3_get(&self.bucket, key)
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<S3Object>>, AwsError> {
        self.client.s3_get_many(&self.bucket, keys)
    }

    fn create(&self, key: &str, body: &[u8]) -> Result<Option<String>, AwsError> {
        self.client.s3_create(&self.bucket, key, body)
    }

    fn replace(&self, key: &str, body: &[u8], etag: &str) -> Result<Option<String>, AwsError> {
        self.client.s3_replace(&self.bucket, key, body, etag)
    }

    fn delete_if(&self, key: &str, etag: &str) -> Result<bool, AwsError> {
        self.client.s3_delete_if(&self.bucket, key, etag)
    }

    fn list(&self, prefix: &str) -> Result<Vec<S3Listed>, AwsError> {
        self.client.s3_list(&self.bucket, prefix)
    }
}
