//! The S3 calls the shared ledger makes: objects read with their ETag, created only if absent
//! (`If-None-Match: *`), replaced or deleted only if unchanged (`If-Match: <etag>`), and listed
//! under a prefix. A precondition that does not hold is an answer (`Ok(None)`/`Ok(false)`),
//! not an error: it is how two writers learn that the other one was first.

use aws_sdk_s3::primitives::ByteStream;
use futures_util::StreamExt;

use super::client::AwsClient;
use super::error::AwsError;

/// How many objects are read at once.
const PARALLEL_GETS: usize = 16;

/// An object's content and ETag (as S3 sends it, quotes included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Object {
    pub body: Vec<u8>,
    pub etag: String,
}

/// A key and its ETag (as S3 sends it, quotes included), as a listing gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Listed {
    pub key: String,
    pub etag: String,
}

/// S3's answers to a conditional write whose condition did not hold: `PreconditionFailed`
/// (412), and `ConditionalRequestConflict` (409) when another conditional write to the same key
/// was in flight.
fn lost_race(e: &AwsError) -> bool {
    matches!(
        e.code(),
        Some("PreconditionFailed" | "ConditionalRequestConflict")
    )
}

impl AwsClient {
    /// The object `key` of `bucket`; `None` when there is none.
    pub fn s3_get(&self, bucket: &str, key: &str) -> Result<Option<S3Object>, AwsError> {
        self.block(get(&self.s3, bucket, key))
    }

    /// The objects `keys` of `bucket`, in the same order (`None` for one that does not exist),
    /// several requests at a time.
    pub fn s3_get_many(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<Option<S3Object>>, AwsError> {
        self.block(async {
            futures_util::stream::iter(keys)
                .map(|k| get(&self.s3, bucket, k))
                .buffered(PARALLEL_GETS)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect()
        })
    }

    /// Creates `key` with `body` only if no object has that key (`If-None-Match: *`); its
    /// ETag, or `None` when one exists (someone else created it first).
    pub fn s3_create(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
    ) -> Result<Option<String>, AwsError> {
        let req = self
            .s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .if_none_match("*")
            .body(ByteStream::from(body.to_vec()));
        match self.block(req.send()) {
            Ok(out) => Ok(Some(out.e_tag().unwrap_or_default().to_string())),
            Err(e) => {
                let e = AwsError::api("PutObject", e);
                if lost_race(&e) { Ok(None) } else { Err(e) }
            }
        }
    }

    /// Replaces `key` with `body` only if its ETag is still `etag` (`If-Match`); the new ETag,
    /// or `None` when it changed or is gone meanwhile.
    pub fn s3_replace(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
        etag: &str,
    ) -> Result<Option<String>, AwsError> {
        let req = self
            .s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .if_match(etag)
            .body(ByteStream::from(body.to_vec()));
        match self.block(req.send()) {
            Ok(out) => Ok(Some(out.e_tag().unwrap_or_default().to_string())),
            Err(e) => {
                let e = AwsError::api("PutObject", e);
                if lost_race(&e) || e.code() == Some("NoSuchKey") {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Deletes `key` only if its ETag is still `etag` (`If-Match`); false when it changed or
    /// is gone meanwhile.
    pub fn s3_delete_if(&self, bucket: &str, key: &str, etag: &str) -> Result<bool, AwsError> {
        let req = self
            .s3
            .delete_object()
            .bucket(bucket)
            .key(key)
            .if_match(etag);
        match self.block(req.send()) {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = AwsError::api("DeleteObject", e);
                if lost_race(&e) || e.code() == Some("NoSuchKey") {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Every key under `prefix` in `bucket` with its ETag, in S3's order (lexicographic).
    pub fn s3_list(&self, bucket: &str, prefix: &str) -> Result<Vec<S3Listed>, AwsError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let req = self
                .s3
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token.take());
            let out = self
                .block(req.send())
                .map_err(|e| AwsError::api("ListObjectsV2", e))?;
            keys.extend(out.contents().iter().filter_map(|o| {
                Some(S3Listed {
                    key: o.key()?.to_string(),
                    etag: o.e_tag().unwrap_or_default().to_string(),
                })
            }));
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return Ok(keys),
            }
        }
    }
}

async fn get(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Option<S3Object>, AwsError> {
    match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => {
            let etag = out.e_tag().unwrap_or_default().to_string();
            let body = out.body.collect().await.map_err(|e| AwsError::Api {
                operation: "GetObject",
                code: None,
                detail: format!("reading s3://{bucket}/{key}: {e}"),
            })?;
            Ok(Some(S3Object {
                body: body.into_bytes().to_vec(),
                etag,
            }))
        }
        Err(e) => {
            let e = AwsError::api("GetObject", e);
            if e.code() == Some("NoSuchKey") {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}
