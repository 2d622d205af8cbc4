//! The S3 ObjectCreated handler: S3 reports a new object, this finds its
//! study, reads and describes the image (headers only), claims the study
//! and runs the [`pipeline`](crate::pipeline).
//!
//! Failure handling: a bad image (unknown type, not what was declared,
//! unreadable, too large, refused by the model) marks the study `failed`
//! with the reason; an unavailable endpoint leaves the study `uploaded` and
//! fails the invocation, so Lambda's retry (and then the dead-letter queue)
//! runs it again: nothing is lost. Events for objects that belong to no
//! study are ignored; repeated events for a finished study do nothing; an
//! event for a study another invocation is processing (e.g. `POST
//! /v1/predict`, whose own upload fires this event) fails and is retried
//! after that one finished, or took over once its lease ran out.

use std::sync::Arc;

use aws_lambda_events::s3::{S3Event, S3EventRecord};
use cxr_platform::config::{DynamoSettings, Env, PostgresSettings};
use cxr_platform::domain::StudyStatus;
use cxr_platform::imaging::describe;
use cxr_platform::storage::dynamodb::DynamoTable;
use cxr_platform::storage::postgres::Database;
use cxr_platform::storage::postgres::studies::StudyRecord;
use cxr_platform::storage::results::ResultStore;
use cxr_platform::storage::s3::{ObjectKey, ObjectStore, S3Error};
use serde::Serialize;
use time::OffsetDateTime;

use crate::endpoint::ModelEndpoint;
use crate::pipeline::{InferError, Inference, Outcome};
use crate::settings::InferSettings;

/// Largest image read (the model server's own limit is the same).
pub use cxr_platform::domain::MAX_IMAGE_BYTES;

/// What happened to each record of an event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InferReport {
    pub done: u64,
    /// Of `done`: answered from the result cache, without a model call.
    pub cached: u64,
    pub failed: u64,
    pub ignored: u64,
}

pub struct InferHandler {
    pub inference: Arc<Inference>,
    pub s3: aws_sdk_s3::Client,
    pub settings: InferSettings,
}

/// The bucket and the (decoded) key an S3 event record names; `None` for a
/// record without them. Keys in S3 events are URL-encoded, spaces as '+'.
pub fn object_of(record: &S3EventRecord) -> Option<(&str, String)> {
    let (bucket, raw_key) = (record.s3.bucket.name.as_deref()?, record.s3.object.key.as_deref()?);
    Some((bucket, percent_encoding::percent_decode_str(&raw_key.replace('+', " ")).decode_utf8_lossy().into_owned()))
}

enum Handled {
    Outcome(Outcome),
    Ignored,
}

impl InferHandler {
    pub fn new(db: Database, results: ResultStore, s3: aws_sdk_s3::Client, runtime: aws_sdk_sagemakerruntime::Client, settings: InferSettings) -> Self {
        let endpoint = ModelEndpoint::new(runtime, settings.endpoint_name.clone(), settings.inline_max_bytes);
        Self { inference: Arc::new(Inference::new(db, results, endpoint, settings.model.clone())), s3, settings }
    }

    pub async fn from_env(env: &Env) -> anyhow::Result<Self> {
        let settings = InferSettings::from_env(env)?;
        let db = Database::connect(&PostgresSettings::from_env(env)?).await?;
        let sdk = cxr_platform::aws::load_sdk_config().await?;
        let s3 = cxr_platform::aws::s3_client(&sdk, cxr_platform::config::S3Settings::force_path_style(env)?, None);
        let results = ResultStore::new(DynamoTable::new(&sdk, &DynamoSettings::from_env(env)?));
        Ok(Self::new(db, results, s3, aws_sdk_sagemakerruntime::Client::new(&sdk), settings))
    }

    /// Handles every record; the first retryable error fails the whole
    /// invocation after the other records were handled.
    pub async fn handle(&self, event: &S3Event) -> Result<InferReport, InferError> {
        let mut report = InferReport::default();
        let mut retry = None;
        for record in &event.records {
            let Some((bucket, key)) = object_of(record) else {
                report.ignored += 1;
                continue;
            };
            match self.handle_object(bucket, &key).await {
                Ok(Handled::Outcome(Outcome::Done { cached, .. })) => {
                    report.done += 1;
                    report.cached += u64::from(cached);
                }
                Ok(Handled::Outcome(Outcome::Failed(_))) => report.failed += 1,
                Ok(Handled::Ignored) => report.ignored += 1,
                Err(err) => {
                    tracing::error!(bucket, key, error = %err, "upload not processed; will be retried");
                    retry.get_or_insert(err);
                }
            }
        }
        match retry {
            Some(err) => Err(err),
            None => Ok(report),
        }
    }

    fn in_flight(&self, study: &StudyRecord) -> bool {
        study.status == StudyStatus::Processing && OffsetDateTime::now_utc() - study.updated_at < self.settings.lease
    }

    async fn handle_object(&self, bucket: &str, key: &str) -> Result<Handled, InferError> {
        let db = &self.inference.db;
        let Some(study) = db.find_study_by_object(bucket, key).await? else {
            tracing::warn!(bucket, key, "object belongs to no study; ignored");
            return Ok(Handled::Ignored);
        };
        if matches!(study.status, StudyStatus::Done | StudyStatus::Failed) {
            return Ok(Handled::Ignored); // a repeated event
        }
        if self.in_flight(&study) {
            return Err(InferError::InFlight);
        }
        let store = ObjectStore::from_client(self.s3.clone(), bucket.to_owned());
        let object_key = ObjectKey::new(key).map_err(|e| InferError::Storage(e.into()))?;
        let bytes = match store.get(&object_key, MAX_IMAGE_BYTES).await {
            Ok(object) => object.bytes,
            Err(err @ S3Error::TooLarge { .. }) => return self.inference.fail(&study, &err.to_string()).await.map(Handled::Outcome),
            Err(err) => return Err(InferError::Storage(err)),
        };
        let facts = match describe(&bytes, study.media_type) {
            Ok(facts) => facts,
            Err(err) => return self.inference.fail(&study, &err.to_string()).await.map(Handled::Outcome),
        };
        let study = db.record_upload(study.row_id, &facts).await?;
        let Some(claimed) = db.claim_for_inference(study.row_id, self.settings.lease).await? else {
            // Someone else got there first: finished (nothing to do) or
            // still at it (retry later, in case it dies).
            let now = db.find_study_by_object(bucket, key).await?;
            return match now.map(|s| s.status) {
                Some(StudyStatus::Done | StudyStatus::Failed) | None => Ok(Handled::Ignored),
                _ => Err(InferError::InFlight),
            };
        };
        self.inference.run(&claimed, &bytes, &facts, &store).await.map(Handled::Outcome)
    }
}
