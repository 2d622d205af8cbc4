//! Images in S3: put, get, head, list, delete and presigned URLs.

use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_s3::presigning::{PresignedRequest, PresigningConfig};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use bytes::Bytes;

use super::SdkFailure;
use crate::config::S3Settings;

/// Keys are domain types (validated on construction, the layout in `cxr-domain`).
pub use crate::domain::{InvalidKey, ObjectKey};

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("object {key} does not exist")]
    NotFound { key: String },
    /// A write that may only create refused: the object is there already
    /// (S3's `412 PreconditionFailed` to `If-None-Match: *`, or `409
    /// ConditionalRequestConflict` when another such write is under way).
    #[error("object {key} exists already and is never overwritten")]
    AlreadyExists { key: String },
    #[error("object {key} is {size} bytes, more than the {limit}-byte limit")]
    TooLarge { key: String, size: u64, limit: u64 },
    #[error("S3 is unreachable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    InvalidKey(#[from] InvalidKey),
    #[error("presigned URL cannot be made: {0}")]
    Presign(String),
    #[error("S3 answered {status} {code}: {message}")]
    Service { status: u16, code: String, message: String },
    #[error("S3 request failed: {0}")]
    Other(String),
}

impl S3Error {
    fn from_failure(failure: SdkFailure, key: Option<&str>) -> Self {
        match failure {
            SdkFailure::Unreachable(m) => Self::Unavailable(m),
            SdkFailure::Service { status, code, message } => {
                let missing = status == 404 || matches!(code.as_deref(), Some("NoSuchKey" | "NotFound"));
                let exists = status == 412 || matches!(code.as_deref(), Some("PreconditionFailed" | "ConditionalRequestConflict"));
                match (missing, exists, key) {
                    (true, _, Some(key)) => Self::NotFound { key: key.to_owned() },
                    (_, true, Some(key)) => Self::AlreadyExists { key: key.to_owned() },
                    _ => Self::Service { status, code: code.unwrap_or_default(), message },
                }
            }
            SdkFailure::Other(m) => Self::Other(m),
        }
    }
}

/// What S3 knows about an object without reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub content_type: Option<String>,
    pub e_tag: Option<String>,
}

/// An object read back whole.
#[derive(Clone, Debug)]
pub struct StoredObject {
    pub bytes: Bytes,
    pub content_type: Option<String>,
    pub e_tag: Option<String>,
}

/// A URL a client can use without credentials, for one method on one key.
/// Every header listed must be sent exactly as given: they are signed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PresignedUrl {
    pub method: String,
    pub url: String,
    /// `[name, value]` pairs to send exactly as given.
    pub headers: Vec<(String, String)>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: time::OffsetDateTime,
}

/// S3 caps presigned URLs signed with SigV4 at seven days.
const MAX_PRESIGN: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a presigned GET URL is handed out again instead of signing a
/// new one. Signing through the SDK costs more CPU than the rest of a warm
/// study read (issue 15); a study polled while its inference runs gets the
/// same URLs for this long. Only URLs valid for at least ten times this are
/// reused, so a reused URL keeps 90% of its validity or more (its
/// `expires_at` is the original's, never extended).
const PRESIGNED_GET_REUSE: Duration = Duration::from_secs(30);
/// Entries kept (a URL is under 1 KB).
const PRESIGNED_GET_CACHE_ENTRIES: u64 = 10_000;

/// One bucket of objects.
#[derive(Clone)]
pub struct ObjectStore {
    client: aws_sdk_s3::Client,
    /// Signs the URLs handed to browsers and other clients: `client`
    /// unless they reach S3 at another address (see
    /// [`S3Settings::presign_endpoint`]).
    presigner: aws_sdk_s3::Client,
    bucket: String,
    /// Recently presigned GET URLs by (key, validity); see
    /// [`PRESIGNED_GET_REUSE`].
    presigned_gets: moka::sync::Cache<(ObjectKey, Duration), PresignedUrl>,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore").field("bucket", &self.bucket).finish_non_exhaustive()
    }
}

fn presigned_get_cache() -> moka::sync::Cache<(ObjectKey, Duration), PresignedUrl> {
    moka::sync::Cache::builder().max_capacity(PRESIGNED_GET_CACHE_ENTRIES).time_to_live(PRESIGNED_GET_REUSE).build()
}

impl ObjectStore {
    pub fn new(sdk: &SdkConfig, settings: &S3Settings) -> Self {
        let client = crate::aws::s3_client(sdk, settings.force_path_style, None);
        let presigner = match &settings.presign_endpoint {
            Some(endpoint) => crate::aws::s3_client(sdk, settings.force_path_style, Some(endpoint)),
            None => client.clone(),
        };
        Self { client, presigner, bucket: settings.images_bucket.clone(), presigned_gets: presigned_get_cache() }
    }

    pub fn from_client(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self { presigner: client.clone(), client, bucket: bucket.into(), presigned_gets: presigned_get_cache() }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket if it does not exist yet. In AWS the SAM template
    /// owns the bucket; this is for provisioning a fresh local stack.
    pub async fn create_bucket_if_absent(&self) -> Result<(), S3Error> {
        let region = self.client.config().region().map(|r| r.as_ref().to_owned());
        let mut request = self.client.create_bucket().bucket(&self.bucket);
        // us-east-1 is the one region that must not be named as a constraint.
        if let Some(region) = region.filter(|r| r != "us-east-1") {
            request = request
                .create_bucket_configuration(CreateBucketConfiguration::builder().location_constraint(BucketLocationConstraint::from(region.as_str())).build());
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(err) => match SdkFailure::from_sdk(err) {
                SdkFailure::Service { code: Some(code), .. } if code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" => Ok(()),
                failure => Err(S3Error::from_failure(failure, None)),
            },
        }
    }

    /// Checks the bucket exists and these credentials may use it.
    pub async fn check_bucket(&self) -> Result<(), S3Error> {
        self.client.head_bucket().bucket(&self.bucket).send().await.map_err(|e| S3Error::from_failure(SdkFailure::from_sdk(e), None))?;
        Ok(())
    }

    pub async fn put(&self, key: &ObjectKey, body: impl Into<Bytes>, content_type: &str) -> Result<ObjectMeta, S3Error> {
        self.put_object(key, body.into(), content_type, false).await
    }

    /// Writes an object that must not exist yet (`If-None-Match: *`): the
    /// original of a study is written once and never replaced.
    pub async fn put_new(&self, key: &ObjectKey, body: impl Into<Bytes>, content_type: &str) -> Result<ObjectMeta, S3Error> {
        self.put_object(key, body.into(), content_type, true).await
    }

    async fn put_object(&self, key: &ObjectKey, body: Bytes, content_type: &str, create_only: bool) -> Result<ObjectMeta, S3Error> {
        let size = body.len() as u64;
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_type(content_type)
            .set_if_none_match(create_only.then(|| "*".to_owned()))
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| S3Error::from_failure(SdkFailure::from_sdk(e), Some(key.as_str())))?;
        Ok(ObjectMeta { key: key.to_string(), size, content_type: Some(content_type.to_owned()), e_tag: out.e_tag })
    }

    /// Reads a whole object, refusing (before reading the body) one larger
    /// than `limit` bytes, so an oversized upload cannot exhaust memory.
    pub async fn get(&self, key: &ObjectKey, limit: u64) -> Result<StoredObject, S3Error> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| S3Error::from_failure(SdkFailure::from_sdk(e), Some(key.as_str())))?;
        let size = out.content_length.and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
        if size > limit {
            return Err(S3Error::TooLarge { key: key.to_string(), size, limit });
        }
        let bytes = out.body.collect().await.map_err(|e| S3Error::Unavailable(format!("reading {key}: {e}")))?.into_bytes();
        // The length header can be absent (chunked answers): check again.
        if bytes.len() as u64 > limit {
            return Err(S3Error::TooLarge { key: key.to_string(), size: bytes.len() as u64, limit });
        }
        Ok(StoredObject { bytes, content_type: out.content_type, e_tag: out.e_tag })
    }

    /// The object's metadata, or `None` if there is no such object.
    pub async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, S3Error> {
        match self.client.head_object().bucket(&self.bucket).key(key.as_str()).send().await {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: out.content_length.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                content_type: out.content_type,
                e_tag: out.e_tag,
            })),
            Err(err) => match S3Error::from_failure(SdkFailure::from_sdk(err), Some(key.as_str())) {
                S3Error::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Every object under `prefix`, in key order, following continuation
    /// tokens through all pages.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, S3Error> {
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| S3Error::from_failure(SdkFailure::from_sdk(e), None))?;
            objects.extend(page.contents.unwrap_or_default().into_iter().filter_map(|o| {
                Some(ObjectMeta { key: o.key?, size: o.size.and_then(|n| u64::try_from(n).ok()).unwrap_or(0), content_type: None, e_tag: o.e_tag })
            }));
        }
        Ok(objects)
    }

    /// Deletes the object; deleting a missing object is not an error (S3's
    /// own semantics), so retries are safe.
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), S3Error> {
        self.client.delete_object().bucket(&self.bucket).key(key.as_str()).send().await.map_err(|e| S3Error::from_failure(SdkFailure::from_sdk(e), None))?;
        Ok(())
    }

    /// A URL that lets a client upload exactly one object of exactly this
    /// content type and length. Content-Type and Content-Length are signed,
    /// so S3 rejects an upload that differs in either.
    pub async fn presign_put(&self, key: &ObjectKey, content_type: &str, content_length: u64, expires_in: Duration) -> Result<PresignedUrl, S3Error> {
        let length = i64::try_from(content_length).map_err(|_| S3Error::Presign("content length too large".into()))?;
        let request = self
            .presigner
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_type(content_type)
            .content_length(length)
            // Signed, so the client must send it: S3 then refuses (412) a
            // second PUT to the same key, and a study's original, once
            // uploaded, is the image its findings describe for good.
            .if_none_match("*")
            .presigned(presigning_config(expires_in)?)
            .await
            .map_err(presign_failed)?;
        Ok(to_presigned_url(&request, expires_in))
    }

    /// Starts a multipart upload (for objects over the single-PUT limit);
    /// returns its upload id.
    pub async fn create_multipart_upload(&self, key: &ObjectKey, content_type: &str) -> Result<String, S3Error> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| S3Error::from_failure(SdkFailure::from_sdk(e), Some(key.as_str())))?;
        out.upload_id.ok_or_else(|| S3Error::Presign("S3 returned no upload id".into()))
    }

    /// A URL for one part of a multipart upload, bound to its exact length.
    pub async fn presign_upload_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        part_number: i32,
        content_length: u64,
        expires_in: Duration,
    ) -> Result<PresignedUrl, S3Error> {
        let length = i64::try_from(content_length).map_err(|_| S3Error::Presign("part length too large".into()))?;
        let request = self
            .presigner
            .upload_part()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .part_number(part_number)
            .content_length(length)
            .presigned(presigning_config(expires_in)?)
            .await
            .map_err(presign_failed)?;
        Ok(to_presigned_url(&request, expires_in))
    }

    /// Assembles the uploaded parts (`(part number, ETag)`, in order) into
    /// the object; S3 refuses a list that does not match what was uploaded.
    pub async fn complete_multipart_upload(&self, key: &ObjectKey, upload_id: &str, parts: &[(i32, String)]) -> Result<(), S3Error> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        let parts = parts.iter().map(|(n, etag)| CompletedPart::builder().part_number(*n).e_tag(etag).build()).collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            // As for single PUTs: the parts may make the object, never replace it.
            .if_none_match("*")
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| S3Error::from_failure(SdkFailure::from_sdk(e), Some(key.as_str())))?;
        Ok(())
    }

    /// A URL that lets a client read one object for `expires_in`; one signed in the last
    /// [`PRESIGNED_GET_REUSE`] for the same key and validity is handed out
    /// again when that validity is at least ten times the reuse window.
    pub async fn presign_get(&self, key: &ObjectKey, expires_in: Duration) -> Result<PresignedUrl, S3Error> {
        let reusable = expires_in >= PRESIGNED_GET_REUSE * 10;
        let cache_key = (key.clone(), expires_in);
        if reusable && let Some(url) = self.presigned_gets.get(&cache_key) {
            return Ok(url);
        }
        let request =
            self.presigner.get_object().bucket(&self.bucket).key(key.as_str()).presigned(presigning_config(expires_in)?).await.map_err(presign_failed)?;
        let url = to_presigned_url(&request, expires_in);
        if reusable {
            self.presigned_gets.insert(cache_key, url.clone());
        }
        Ok(url)
    }
}

fn presign_failed<E: std::error::Error>(err: E) -> S3Error {
    S3Error::Presign(aws_sdk_s3::error::DisplayErrorContext(&err).to_string())
}

fn presigning_config(expires_in: Duration) -> Result<PresigningConfig, S3Error> {
    if expires_in.is_zero() || expires_in > MAX_PRESIGN {
        return Err(S3Error::Presign(format!("expiry {expires_in:?} must be between 1 s and 7 days")));
    }
    PresigningConfig::builder().start_time(SystemTime::now()).expires_in(expires_in).build().map_err(|e| S3Error::Presign(e.to_string()))
}

fn to_presigned_url(request: &PresignedRequest, expires_in: Duration) -> PresignedUrl {
    PresignedUrl {
        method: request.method().to_owned(),
        url: request.uri().to_owned(),
        headers: request.headers().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        expires_at: time::OffsetDateTime::now_utc() + expires_in,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_are_validated() {
        assert!(ObjectKey::new("studies/0a1b/original.png").is_ok());
        for bad in ["", "/abs", "a//b", "a/../b", "./a", "trailing/", "ctl\u{7}"] {
            assert!(ObjectKey::new(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(ObjectKey::new("k".repeat(1025)).is_err());
    }

    #[test]
    fn presign_expiry_is_bounded() {
        assert!(presigning_config(Duration::ZERO).is_err());
        assert!(presigning_config(MAX_PRESIGN + Duration::from_secs(1)).is_err());
        assert!(presigning_config(Duration::from_secs(300)).is_ok());
    }
}
