//! One inference, shared by both ways an image arrives (the S3 upload event
//! and `POST /v1/predict`): result cache first, then the model endpoint,
//! then one PostgreSQL transaction, then the DynamoDB copies.
//!
//! Order of writes, and why nothing is lost:
//! 1. the heatmap and preview PNGs to S3 (content-addressed, so rewriting
//!    them is harmless);
//! 2. the run, its findings and status `done` in one PostgreSQL transaction
//!    (the system of record: the result exists once this commits);
//! 3. the study's hot copy and the cache entry in DynamoDB, best effort.
//!
//! A failure before 2 leaves the study retryable (`uploaded`); a failure in
//! 3 is logged and repaired by read-through: `GET /v1/studies/{id}` falls
//! back to PostgreSQL and rewrites the hot copy, and a cache miss asks
//! PostgreSQL for a run of the same model on the same content before it
//! calls the endpoint (and rewrites the cache entry).

use std::sync::RwLock;

use bytes::Bytes;
use cxr_platform::domain::invocation::{InvocationResponse, decode_png};
use cxr_platform::domain::{PixelBox, Sha256Digest, StudyStatus};
use cxr_platform::domain::{heatmap_key, preview_key};
use cxr_platform::storage::postgres::studies::{FindingSource, ImageFacts, NewFinding, NewInferenceRun, StudyRecord};
use cxr_platform::storage::postgres::{Database, DbError};
use cxr_platform::storage::results::{CachedResult, ModelRef, ResultStore, StudySnapshot};
use cxr_platform::storage::s3::{ObjectKey, ObjectStore, S3Error};

use crate::endpoint::{EndpointError, ModelEndpoint};

/// The `event` field of every log line that says DynamoDB could not be
/// read or written (results stay correct through PostgreSQL); the SAM
/// template counts these lines into a metric with an alarm.
pub const DYNAMODB_DEGRADED: &str = "dynamodb_degraded";

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("{0}; the study stays uploaded and will be retried")]
    Endpoint(EndpointError),
    #[error("the study is being processed by another invocation (claimed less than the lease ago); retry later")]
    InFlight,
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("storage: {0}")]
    Storage(S3Error),
}

/// How an inference ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Findings stored; `cached` when no model call was needed. `snapshot`
    /// is the study as stored (read back for the DynamoDB copy; `None` if
    /// that read failed).
    Done { cached: bool, snapshot: Option<Box<StudySnapshot>> },
    /// The study was marked failed, with this reason.
    Failed(String),
}

pub struct Inference {
    pub db: Database,
    pub results: ResultStore,
    pub endpoint: ModelEndpoint,
    /// The model the endpoint serves: configured, or learned from answers.
    model: RwLock<Option<ModelRef>>,
}

impl Inference {
    pub fn new(db: Database, results: ResultStore, endpoint: ModelEndpoint, model: Option<ModelRef>) -> Self {
        Self { db, results, endpoint, model: RwLock::new(model) }
    }

    fn current_model(&self) -> Option<ModelRef> {
        self.model.read().map(|m| m.clone()).unwrap_or_default()
    }

    fn learn_model(&self, model: &ModelRef) {
        if let Ok(mut current) = self.model.write()
            && current.as_ref() != Some(model)
        {
            if let Some(old) = current.as_ref() {
                tracing::warn!(configured = ?old, answered = ?model, "the endpoint serves another model than configured; using its answer");
            }
            *current = Some(model.clone());
        }
    }

    /// Runs inference for a study this caller has claimed (`processing`),
    /// whose image is `image` (already in `images` under the study's key).
    pub async fn run(&self, study: &StudyRecord, image: &Bytes, facts: &ImageFacts, images: &ObjectStore) -> Result<Outcome, InferError> {
        if let Some(model) = self.current_model()
            && let Some(hit) = self.cached(&facts.sha256, &model).await?
        {
            let findings = hit.findings.iter().filter_map(|f| NewFinding::new(f.label.clone(), f.probability, f.bbox, f.source).ok()).collect::<Vec<_>>();
            let run = NewInferenceRun {
                model_name: model.name,
                model_version: model.version,
                heatmap_key: hit.heatmap_key,
                preview_key: hit.preview_key,
                thresholds: hit.thresholds,
                model_trained: hit.model_trained,
                ..Default::default()
            };
            self.db.record_inference(study.row_id, &run, &findings).await?;
            tracing::info!(study = %study.id, "result cache hit: no model call");
            let snapshot = self.publish(study, Some(&facts.sha256)).await;
            return Ok(Outcome::Done { cached: true, snapshot });
        }

        let answer = match self.endpoint.invoke(image, study.media_type, &study.s3_bucket, study.s3_key.as_str()).await {
            Ok(answer) => answer,
            Err(EndpointError::Refused(reason)) => {
                return self.fail(study, &format!("the model refused the image: {reason}")).await;
            }
            Err(err) => {
                self.db.set_study_status(study.row_id, StudyStatus::Uploaded, None).await?;
                return Err(InferError::Endpoint(err));
            }
        };
        let model = ModelRef { name: answer.model.name.clone(), version: answer.model.version.clone() };
        self.learn_model(&model);
        let (heatmap_key, preview_key) = match self.store_pictures(&answer, &facts.sha256, &model, images).await {
            Ok(keys) => keys,
            Err(err) => {
                self.db.set_study_status(study.row_id, StudyStatus::Uploaded, None).await?;
                return Err(err);
            }
        };
        let run = NewInferenceRun {
            model_name: model.name,
            model_version: model.version,
            heatmap_key,
            preview_key,
            thresholds: answer.findings.iter().filter_map(|f| f.threshold.map(|t| (f.label.clone(), t))).collect(),
            timings_ms: answer.timings_ms.clone(),
            model_trained: answer.model.trained,
        };
        let findings = findings_of(&answer, facts);
        // The run, its findings and status `done`: one transaction.
        self.db.record_inference(study.row_id, &run, &findings).await?;
        tracing::info!(study = %study.id, findings = findings.len(), "inference stored");
        let snapshot = self.publish(study, Some(&facts.sha256)).await;
        Ok(Outcome::Done { cached: false, snapshot })
    }

    /// Marks the study failed (a bad image: retrying cannot help) and
    /// writes its hot copy.
    pub async fn fail(&self, study: &StudyRecord, reason: &str) -> Result<Outcome, InferError> {
        tracing::warn!(study = %study.id, reason, "study failed");
        self.db.set_study_status(study.row_id, StudyStatus::Failed, Some(reason)).await?;
        self.publish(study, None).await;
        Ok(Outcome::Failed(reason.to_owned()))
    }

    /// The cache: DynamoDB, else PostgreSQL (and then DynamoDB is repaired).
    async fn cached(&self, sha256: &Sha256Digest, model: &ModelRef) -> Result<Option<CachedResult>, InferError> {
        match self.results.cached(sha256, model).await {
            Ok(Some(hit)) => return Ok(Some(hit)),
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(event = DYNAMODB_DEGRADED, error = %err, "result cache unreadable; asking PostgreSQL")
            }
        }
        let Some((run, preview_key)) = self.db.inference_for_content(sha256, &model.name, &model.version).await? else {
            return Ok(None);
        };
        let entry = CachedResult::of(sha256, &run, preview_key);
        if let Err(err) = self.results.put_cached(&entry).await {
            tracing::warn!(event = DYNAMODB_DEGRADED, error = %err, "result cache not repaired");
        }
        Ok(Some(entry))
    }

    /// Stores the heatmap and the preview the endpoint drew; their keys.
    async fn store_pictures(
        &self,
        answer: &InvocationResponse,
        sha256: &Sha256Digest,
        model: &ModelRef,
        images: &ObjectStore,
    ) -> Result<(Option<ObjectKey>, Option<ObjectKey>), InferError> {
        let heatmap = answer.heatmap.as_ref().map(|h| (decode_png(&h.png_base64), heatmap_key(sha256, &model.name, &model.version)));
        let preview = answer.preview.as_ref().map(|p| (decode_png(&p.png_base64), preview_key(sha256)));
        let mut keys = [None, None];
        for (slot, picture) in keys.iter_mut().zip([heatmap, preview]) {
            let Some((png, key)) = picture else { continue };
            let Ok(png) = png else {
                tracing::warn!(%key, "the endpoint's PNG is not base64; stored without it");
                continue;
            };
            images.put(&key, png, "image/png").await.map_err(InferError::Storage)?;
            *slot = Some(key);
        }
        let [heatmap, preview] = keys;
        Ok((heatmap, preview))
    }

    /// Writes the DynamoDB copies of what PostgreSQL now holds, and returns
    /// that state. Best effort: a failure here is repaired by read-through
    /// (module docs).
    pub async fn publish(&self, study: &StudyRecord, sha256: Option<&Sha256Digest>) -> Option<Box<StudySnapshot>> {
        let mut stored = None;
        let copies = async {
            let Some(study) = self.db.find_study(&study.owner, study.id).await? else {
                return Ok::<_, anyhow::Error>(());
            };
            let (snapshot, run) = StudySnapshot::read(&self.db, &study).await?;
            let snapshot = stored.insert(Box::new(snapshot));
            if snapshot.is_finished() {
                self.results.put_snapshot(snapshot).await?;
            }
            if let (Some(run), Some(sha256)) = (&run, sha256) {
                self.results.put_cached(&CachedResult::of(sha256, run, study.preview_key.clone())).await?;
            }
            Ok(())
        };
        if let Err(err) = copies.await {
            tracing::warn!(event = DYNAMODB_DEGRADED, study = %study.id, error = %err, "DynamoDB copies not written; reads fall back to PostgreSQL");
        }
        stored
    }
}

/// The model's per-label probabilities, and its CAM boxes clipped to the image.
fn findings_of(answer: &InvocationResponse, facts: &ImageFacts) -> Vec<NewFinding> {
    let mut findings = Vec::with_capacity(answer.findings.len() + answer.boxes.len());
    for finding in &answer.findings {
        if let Ok(finding) = NewFinding::new(finding.label.clone(), finding.probability.clamp(0.0, 1.0), None, FindingSource::Model) {
            findings.push(finding);
        }
    }
    for b in &answer.boxes {
        let Ok(bbox) = PixelBox::new(b.x_min, b.y_min, b.width, b.height).and_then(|bx| bx.within(facts.width, facts.height)) else {
            continue;
        };
        if let Ok(finding) = NewFinding::new(b.label.clone(), b.score.clamp(0.0, 1.0), Some(bbox), FindingSource::Cam) {
            findings.push(finding);
        }
    }
    findings
}
