//! The inference path after an upload: S3 reports the new object, this
//! handler finds its study, reads and describes the image (headers only),
//! sends it to the model endpoint through `aws-sdk-sagemakerruntime`, and
//! stores the findings in one transaction.
//!
//! Failure handling: a bad image (unknown type, not what was declared,
//! unreadable, too large, refused by the model) marks the study `failed`
//! with the reason; an unavailable endpoint leaves the study `uploaded` and
//! fails the invocation, so Lambda's retry (and then the dead-letter
//! queue) runs it again: nothing is lost. Events for objects that belong to
//! no study are ignored; repeated events for a finished study do nothing.

use aws_lambda_events::s3::S3Event;
use aws_sdk_sagemakerruntime::primitives::Blob;
use cxr_platform::config::{ConfigError, Env, PostgresSettings};
use cxr_platform::domain::{StudyStatus, PixelBox};
use cxr_platform::imaging::describe;
use cxr_platform::storage::postgres::studies::{FindingSource, NewFinding, NewInferenceRun, StudyRecord};
use cxr_platform::storage::postgres::{Database, DbError};
use cxr_platform::storage::s3::{ObjectKey, ObjectStore, S3Error};
use serde::{Deserialize, Serialize};

/// Largest image read (the model server's own limit is the same).
pub const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct InferSettings {
    /// `MODEL_ENDPOINT_NAME`: the SageMaker endpoint (any name locally).
    pub endpoint_name: String,
}

impl InferSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self { endpoint_name: env.required("MODEL_ENDPOINT_NAME", "SageMaker endpoint that serves the model")? })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("the model endpoint is unavailable ({0}); the study stays uploaded and the event will be retried")]
    EndpointUnavailable(String),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("reading the upload: {0}")]
    Storage(S3Error),
}

/// What happened to each record of an event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InferReport {
    pub done: u64,
    pub failed: u64,
    pub ignored: u64,
}

pub struct InferHandler {
    pub db: Database,
    pub s3: aws_sdk_s3::Client,
    pub runtime: aws_sdk_sagemakerruntime::Client,
    pub settings: InferSettings,
}

/// The model server's answer (the fields used here).
#[derive(Debug, Deserialize)]
struct ModelAnswer {
    model: ModelInfo,
    findings: Vec<Finding>,
    #[serde(default)]
    boxes: Vec<CamBox>,
    #[serde(default)]
    timings_ms: std::collections::BTreeMap<String, f64>,
}

#[derive(Debug, Deserialize)]
struct ModelInfo {
    name: String,
    version: String,
}

#[derive(Debug, Deserialize)]
struct Finding {
    label: String,
    probability: f32,
}

#[derive(Debug, Deserialize)]
struct CamBox {
    label: String,
    x_min: f32,
    y_min: f32,
    width: f32,
    height: f32,
    score: f32,
}

enum Outcome {
    Done,
    Failed,
    Ignored,
}

impl InferHandler {
    pub async fn from_env(env: &Env) -> anyhow::Result<Self> {
        let settings = InferSettings::from_env(env)?;
        let db = Database::connect(&PostgresSettings::from_env(env)?).await?;
        let sdk = cxr_platform::aws::load_sdk_config().await?;
        let force_path_style = env.flag_or("S3_FORCE_PATH_STYLE", false)?;
        let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(force_path_style).build());
        Ok(Self { db, s3, runtime: aws_sdk_sagemakerruntime::Client::new(&sdk), settings })
    }

    /// Handles every record; the first retryable error fails the whole
    /// invocation after the other records were handled.
    pub async fn handle(&self, event: &S3Event) -> Result<InferReport, InferError> {
        let mut report = InferReport::default();
        let mut retry = None;
        for record in &event.records {
            let (Some(bucket), Some(raw_key)) = (record.s3.bucket.name.as_deref(), record.s3.object.key.as_deref()) else {
                report.ignored += 1;
                continue;
            };
            // Keys in S3 events are URL-encoded, spaces as '+'.
            let key = percent_encoding::percent_decode_str(&raw_key.replace('+', " ")).decode_utf8_lossy().into_owned();
            match self.handle_object(bucket, &key).await {
                Ok(Outcome::Done) => report.done += 1,
                Ok(Outcome::Failed) => report.failed += 1,
                Ok(Outcome::Ignored) => report.ignored += 1,
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

    async fn handle_object(&self, bucket: &str, key: &str) -> Result<Outcome, InferError> {
        let Some(study) = self.db.find_study_by_object(bucket, key).await? else {
            tracing::warn!(bucket, key, "object belongs to no study; ignored");
            return Ok(Outcome::Ignored);
        };
        if matches!(study.status, StudyStatus::Done | StudyStatus::Failed) {
            return Ok(Outcome::Ignored); // a repeated event
        }
        let store = ObjectStore::from_client(self.s3.clone(), bucket.to_owned());
        let object_key = ObjectKey::new(key).map_err(|e| InferError::Storage(e.into()))?;
        let bytes = match store.get(&object_key, MAX_IMAGE_BYTES).await {
            Ok(object) => object.bytes,
            Err(err @ S3Error::TooLarge { .. }) => return self.fail(&study, &err.to_string()).await,
            Err(err) => return Err(InferError::Storage(err)),
        };
        let facts = match describe(&bytes, study.media_type) {
            Ok(facts) => facts,
            Err(err) => return self.fail(&study, &err.to_string()).await,
        };
        let study = self.db.record_upload(study.row_id, &facts).await?;
        self.db.set_study_status(study.row_id, StudyStatus::Processing, None).await?;

        let answer = self
            .runtime
            .invoke_endpoint()
            .endpoint_name(&self.settings.endpoint_name)
            .content_type(study.media_type.as_str())
            .accept("application/json")
            .custom_attributes("explain=top")
            .body(Blob::new(bytes.to_vec()))
            .send()
            .await;
        let body = match answer {
            Ok(output) => output.body.map(|b| b.into_inner()).unwrap_or_default(),
            Err(err) => {
                // The model refused the image (a 4xx with a reason): final.
                // Anything else (throttled, 5xx, unreachable): retry later.
                let refused = err.raw_response().map(|r| r.status().as_u16()).filter(|s| (400..500).contains(s) && *s != 429);
                let message = aws_sdk_sagemakerruntime::error::DisplayErrorContext(&err).to_string();
                if refused.is_some() {
                    return self.fail(&study, &format!("the model refused the image: {message}")).await;
                }
                self.db.set_study_status(study.row_id, StudyStatus::Uploaded, None).await?;
                return Err(InferError::EndpointUnavailable(message));
            }
        };
        let answer: ModelAnswer = match serde_json::from_slice(&body) {
            Ok(answer) => answer,
            Err(e) => {
                self.db.set_study_status(study.row_id, StudyStatus::Uploaded, None).await?;
                return Err(InferError::EndpointUnavailable(format!("unexpected answer from the model endpoint: {e}")));
            }
        };
        let mut findings = Vec::with_capacity(answer.findings.len() + answer.boxes.len());
        for finding in &answer.findings {
            if let Ok(finding) = NewFinding::new(finding.label.clone(), finding.probability.clamp(0.0, 1.0), None, FindingSource::Model) {
                findings.push(finding);
            }
        }
        for b in &answer.boxes {
            let Ok(bbox) = PixelBox::new(b.x_min, b.y_min, b.width, b.height).and_then(|bx| bx.within(facts.width, facts.height)) else { continue };
            if let Ok(finding) = NewFinding::new(b.label.clone(), b.score.clamp(0.0, 1.0), Some(bbox), FindingSource::Cam) {
                findings.push(finding);
            }
        }
        let run = NewInferenceRun {
            model_name: answer.model.name,
            model_version: answer.model.version,
            thresholds: Default::default(),
            timings_ms: answer.timings_ms,
        };
        // The run, its findings and status `done`: one transaction.
        self.db.record_inference(study.row_id, &run, &findings).await?;
        tracing::info!(study = %study.id, findings = findings.len(), "inference stored");
        Ok(Outcome::Done)
    }

    async fn fail(&self, study: &StudyRecord, reason: &str) -> Result<Outcome, InferError> {
        tracing::warn!(study = %study.id, reason, "study failed");
        self.db.set_study_status(study.row_id, StudyStatus::Failed, Some(reason)).await?;
        Ok(Outcome::Failed)
    }
}
