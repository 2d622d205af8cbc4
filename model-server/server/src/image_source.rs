//! Where an invocation's image comes from: the request body, or, for images
//! over SageMaker's 6 MB real-time payload limit, an S3 object the request
//! names (`Content-Type: application/json`, `{"s3_uri": "s3://bucket/key"}`).
//! The server reads the object with its own role, after checking its size
//! from the object's metadata (no larger than a body could be).

use std::sync::Arc;

use axum::body::Bytes;
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::problem::ApiError;

/// The JSON body that points at an image in S3.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3Reference {
    s3_uri: String,
}

/// An S3 client made on first use (most servers never need one).
#[derive(Clone, Default)]
pub struct S3Images {
    client: Arc<OnceCell<aws_sdk_s3::Client>>,
}

impl S3Images {
    /// Uses this client instead of one from the environment.
    pub fn with_client(client: aws_sdk_s3::Client) -> Self {
        Self { client: Arc::new(OnceCell::new_with(Some(client))) }
    }

    async fn client(&self) -> &aws_sdk_s3::Client {
        self.client.get_or_init(crate::model_source::s3_client).await
    }

    /// The image bytes: `body` itself, or the object a JSON body names.
    pub async fn resolve(&self, content_type: Option<&str>, body: Bytes, max_bytes: usize) -> Result<Bytes, ApiError> {
        let is_json = content_type.is_some_and(|c| c.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
        if !is_json {
            return Ok(body);
        }
        let reference: S3Reference =
            serde_json::from_slice(&body).map_err(|e| ApiError::BadReference(format!("a JSON body must be {{\"s3_uri\": \"s3://bucket/key\"}}: {e}")))?;
        let (bucket, key) = reference
            .s3_uri
            .strip_prefix("s3://")
            .and_then(|rest| rest.split_once('/'))
            .filter(|(b, k)| !b.is_empty() && !k.is_empty())
            .ok_or_else(|| ApiError::BadReference(format!("{:?} is not s3://bucket/key", reference.s3_uri)))?;
        let object = self.client().await.get_object().bucket(bucket).key(key).send().await.map_err(|e| {
            let status = e.raw_response().map(|r| r.status().as_u16());
            let message = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
            match status {
                Some(403 | 404) => ApiError::BadReference(format!("s3://{bucket}/{key} cannot be read: {message}")),
                _ => ApiError::Storage(message),
            }
        })?;
        let size = object.content_length.and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
        if size > max_bytes {
            return Err(ApiError::Decode(cxr_inference::decode::DecodeError::TooManyBytes { bytes: size, limit: max_bytes }));
        }
        let bytes = object.body.collect().await.map_err(|e| ApiError::Storage(e.to_string()))?.into_bytes();
        if bytes.len() > max_bytes {
            return Err(ApiError::Decode(cxr_inference::decode::DecodeError::TooManyBytes { bytes: bytes.len(), limit: max_bytes }));
        }
        Ok(bytes)
    }
}
