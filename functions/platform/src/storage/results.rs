//! DynamoDB's two roles for results (the role Redis played in the seeds):
//!
//! - the **hot copy** of a finished study, which `GET /v1/studies/{id}`
//!   reads with one `GetItem` instead of three PostgreSQL queries;
//! - the **result cache**, keyed by image SHA-256 + model name + version,
//!   so the same image is never sent to the same model twice.
//!
//! PostgreSQL stays the system of record: both items are written only after
//! the inference transaction committed, and both are rebuilt from
//! PostgreSQL when missing (read-through). A lost DynamoDB write therefore
//! costs one slower read, never a result. Only finished studies (`done`,
//! `failed`) get a hot copy: they no longer change, so a copy cannot go
//! stale; and a newer copy is never replaced by an older one (`version`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::dynamodb::{DynamoError, DynamoTable, PutCondition};
use super::postgres::studies::{FindingRecord, InferenceRunRecord, StudyRecord};
use super::postgres::{Database, DbError};
use crate::domain::{MediaType, ObjectKey, Owner, Sha256Digest, StudyId, StudyStatus};

/// The model that produced a result.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelRef {
    pub name: String,
    pub version: String,
}

/// What `GET /v1/studies/{id}` shows of a finished study (presigned URLs
/// are made per request from the keys).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudySnapshot {
    pk: String,
    sk: String,
    /// `updated_at` in microseconds: orders copies of the same study.
    version: u64,
    pub id: StudyId,
    pub owner: Owner,
    pub status: StudyStatus,
    pub media_type: MediaType,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub failure: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub image_bucket: String,
    pub image_key: ObjectKey,
    pub model: Option<ModelRef>,
    pub findings: Vec<FindingRecord>,
    pub heatmap_key: Option<ObjectKey>,
    #[serde(default)]
    pub preview_key: Option<ObjectKey>,
    /// The latest run's decision threshold per label (a label it does not
    /// name is positive at 0.5).
    #[serde(default)]
    pub thresholds: BTreeMap<String, f32>,
    /// Whether the latest run's model was trained (`None`: not known).
    #[serde(default)]
    pub model_trained: Option<bool>,
}

impl StudySnapshot {
    /// The copy of a study and its latest run; `None` for a study that is
    /// not finished (its state still changes: read it from PostgreSQL).
    pub fn of(study: &StudyRecord, run: Option<&InferenceRunRecord>) -> Option<Self> {
        matches!(study.status, StudyStatus::Done | StudyStatus::Failed).then(|| Self::current(study, run))
    }

    /// The same view of any study, finished or not (not to be stored
    /// unless finished: see [`StudySnapshot::of`]).
    pub fn current(study: &StudyRecord, run: Option<&InferenceRunRecord>) -> Self {
        let (pk, sk) = snapshot_key(study.id);
        Self {
            pk,
            sk,
            version: u64::try_from(study.updated_at.unix_timestamp_nanos() / 1000).unwrap_or(0),
            id: study.id,
            owner: study.owner.clone(),
            status: study.status,
            media_type: study.media_type,
            width: study.width,
            height: study.height,
            failure: study.failure.clone(),
            created_at: study.created_at,
            updated_at: study.updated_at,
            image_bucket: study.s3_bucket.clone(),
            image_key: study.s3_key.clone(),
            model: run.map(|r| ModelRef { name: r.model_name.clone(), version: r.model_version.clone() }),
            findings: run.map(|r| r.findings.clone()).unwrap_or_default(),
            heatmap_key: run.and_then(|r| r.heatmap_key.clone()),
            preview_key: study.preview_key.clone(),
            thresholds: run.map(|r| r.thresholds.clone()).unwrap_or_default(),
            model_trained: run.and_then(|r| r.model_trained),
        }
    }

    /// `study` (as just read from PostgreSQL) with its latest run, read
    /// now; the run too, for callers that also write the cache entry.
    pub async fn read(db: &Database, study: &StudyRecord) -> Result<(Self, Option<InferenceRunRecord>), DbError> {
        let run = db.latest_inference(study.row_id).await?;
        Ok((Self::current(study, run.as_ref()), run))
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.status, StudyStatus::Done | StudyStatus::Failed)
    }
}

/// A model's answer for one image content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachedResult {
    pk: String,
    sk: String,
    pub model: ModelRef,
    pub findings: Vec<FindingRecord>,
    pub heatmap_key: Option<ObjectKey>,
    /// The image's preview (content-addressed, so any study with this
    /// content can show it).
    #[serde(default)]
    pub preview_key: Option<ObjectKey>,
    #[serde(default)]
    pub thresholds: BTreeMap<String, f32>,
    #[serde(default)]
    pub model_trained: Option<bool>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl CachedResult {
    pub fn of(sha256: &Sha256Digest, run: &InferenceRunRecord, preview_key: Option<ObjectKey>) -> Self {
        let model = ModelRef { name: run.model_name.clone(), version: run.model_version.clone() };
        let (pk, sk) = cache_key(sha256, &model);
        Self {
            pk,
            sk,
            model,
            findings: run.findings.clone(),
            heatmap_key: run.heatmap_key.clone(),
            preview_key,
            thresholds: run.thresholds.clone(),
            model_trained: run.model_trained,
            created_at: run.created_at,
        }
    }
}

fn snapshot_key(id: StudyId) -> (String, String) {
    (format!("study#{id}"), "snapshot".into())
}

fn cache_key(sha256: &Sha256Digest, model: &ModelRef) -> (String, String) {
    (format!("image#{}", sha256.to_hex()), format!("model#{}#{}", model.name, model.version))
}

/// The results table.
#[derive(Clone, Debug)]
pub struct ResultStore {
    table: DynamoTable,
}

impl ResultStore {
    pub fn new(table: DynamoTable) -> Self {
        Self { table }
    }

    /// The hot copy of a study, whoever owns it (the caller checks).
    pub async fn snapshot(&self, id: StudyId) -> Result<Option<StudySnapshot>, DynamoError> {
        let (pk, sk) = snapshot_key(id);
        self.table.get(&pk, &sk).await
    }

    /// Stores a hot copy unless a newer one is there already.
    pub async fn put_snapshot(&self, snapshot: &StudySnapshot) -> Result<(), DynamoError> {
        match self.table.put_if(snapshot, PutCondition::AbsentOrOlderThan(snapshot.version)).await {
            Ok(()) | Err(DynamoError::ConditionFailed) => Ok(()),
            Err(err) => Err(err),
        }
    }

    pub async fn cached(&self, sha256: &Sha256Digest, model: &ModelRef) -> Result<Option<CachedResult>, DynamoError> {
        let (pk, sk) = cache_key(sha256, model);
        self.table.get(&pk, &sk).await
    }

    pub fn table_name(&self) -> &str {
        self.table.name()
    }

    /// Checks the table exists and is active.
    pub async fn check(&self) -> Result<(), DynamoError> {
        self.table.check_table().await
    }

    pub async fn put_cached(&self, result: &CachedResult) -> Result<(), DynamoError> {
        self.table.put(result).await
    }
}
