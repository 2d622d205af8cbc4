//! Studies and everything recorded about them: image facts, inference runs
//! with their findings, and radiologist annotations.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Row, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Database, DbError};
use crate::domain::{MediaType, ObjectKey, Owner, PixelBox, Sha256Digest, StudyId, StudyStatus};

/// A study as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StudyRecord {
    /// Database row id: for joins and jobs, never shown to API callers.
    #[serde(skip)]
    pub row_id: i64,
    pub id: StudyId,
    pub owner: Owner,
    pub status: StudyStatus,
    pub s3_bucket: String,
    pub s3_key: ObjectKey,
    pub media_type: MediaType,
    pub byte_size: Option<u64>,
    pub sha256: Option<Sha256Digest>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub bit_depth: Option<u8>,
    pub modality: Option<String>,
    pub dicom: Option<serde_json::Value>,
    pub failure: Option<String>,
    /// S3 key of the browser-viewable preview PNG, once inferred.
    pub preview_key: Option<ObjectKey>,
    /// Worklist priority: the highest probability among the latest run's
    /// positive findings (0 when none is positive; `None` before inference).
    pub priority: Option<f32>,
    /// The label of that probability (`None` when none is positive).
    pub priority_label: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// Which of an owner's studies a listing shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StudyFilter {
    pub status: Option<StudyStatus>,
    /// Annotated with this label, or predicted at `label_min_probability`.
    pub label: Option<String>,
    pub label_min_probability: f32,
    /// Created at or after.
    pub created_from: Option<OffsetDateTime>,
    /// Created before.
    pub created_before: Option<OffsetDateTime>,
}

/// How a listing is ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum StudyOrder {
    /// Newest first.
    #[default]
    Newest,
    /// Triage: studies not yet reviewed (no annotation) that have waited
    /// longer than `max_wait` first, oldest first, so no case is starved;
    /// then the rest by priority (highest first, not yet inferred last),
    /// oldest first among equals. `as_of` fixes "now" across pages.
    Priority { max_wait: std::time::Duration, as_of: OffsetDateTime },
}

/// Where the previous page of a listing ended, in the listing's order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StudyPosition {
    Newest { created_at: OffsetDateTime, row_id: i64 },
    Priority { rank: i32, score: f32, created_at: OffsetDateTime, row_id: i64 },
}

/// What a caller asks for when creating a study.
#[derive(Clone, Debug)]
pub struct NewStudy {
    pub owner: Owner,
    pub s3_bucket: String,
    pub media_type: MediaType,
}

/// What reading the uploaded object told us (a domain type: `imaging`
/// produces it without knowing about storage).
pub use crate::domain::ImageFacts;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingSource {
    /// Output of the model's head (probability; a box if the model has one).
    Model,
    /// A box derived from a class activation map.
    Cam,
}

impl FindingSource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Cam => "cam",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct NewFinding {
    pub label: String,
    probability: f32,
    pub bbox: Option<PixelBox>,
    pub source: FindingSource,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("probability {0} is not between 0 and 1")]
pub struct InvalidProbability(pub f32);

impl NewFinding {
    pub fn new(label: impl Into<String>, probability: f32, bbox: Option<PixelBox>, source: FindingSource) -> Result<Self, InvalidProbability> {
        if !(0.0..=1.0).contains(&probability) {
            return Err(InvalidProbability(probability));
        }
        Ok(Self { label: label.into(), probability, bbox, source })
    }

    pub fn probability(&self) -> f32 {
        self.probability
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewInferenceRun {
    pub model_name: String,
    pub model_version: String,
    pub thresholds: BTreeMap<String, f32>,
    pub timings_ms: BTreeMap<String, f64>,
    /// S3 key of the run's Grad-CAM heatmap PNG, when one was made.
    pub heatmap_key: Option<ObjectKey>,
    /// S3 key of the study's preview PNG made alongside the run (stored on
    /// the study; `None` keeps the one it has).
    pub preview_key: Option<ObjectKey>,
    /// Whether the model's weights were trained (`None`: not known).
    pub model_trained: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InferenceRunRecord {
    pub id: i64,
    pub model_name: String,
    pub model_version: String,
    pub thresholds: BTreeMap<String, f32>,
    pub timings_ms: BTreeMap<String, f64>,
    pub heatmap_key: Option<ObjectKey>,
    pub model_trained: Option<bool>,
    pub created_at: OffsetDateTime,
    pub findings: Vec<FindingRecord>,
}

/// One finding: a label's probability, or a box with its score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FindingRecord {
    pub label: String,
    /// The label's probability, or the score of the box.
    pub probability: f32,
    /// In original-image pixels, for CAM-derived (and box-predicting) findings.
    #[serde(rename = "box")]
    pub bbox: Option<PixelBox>,
    pub source: FindingSource,
}

#[derive(Clone, Debug)]
pub struct NewAnnotation {
    pub label_set: String,
    pub label: String,
    pub bbox: Option<PixelBox>,
    pub author: Owner,
}

/// A radiologist's label (and box) on a study.
#[derive(Clone, Debug, PartialEq)]
pub struct AnnotationRecord {
    pub id: i64,
    pub label_set: String,
    pub label: String,
    pub bbox: Option<PixelBox>,
    pub author: Owner,
    pub created_at: OffsetDateTime,
    /// Who changed it last and when (the author and `created_at` until it
    /// is edited).
    pub updated_by: Owner,
    pub updated_at: OffsetDateTime,
}

/// A change to one annotation: the label, the box, or both. `bbox`:
/// `None` leaves it, `Some(None)` removes it (an image-level label).
#[derive(Clone, Debug, Default)]
pub struct AnnotationChange {
    pub label: Option<String>,
    pub bbox: Option<Option<PixelBox>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "annotation_change", rename_all = "lowercase")]
pub enum AnnotationChangeKind {
    Created,
    Updated,
    Deleted,
}

/// One state of an annotation's history: what it was after `change`, who
/// made the change and when.
#[derive(Clone, Debug, PartialEq)]
pub struct AnnotationRevision {
    pub annotation_id: i64,
    pub change: AnnotationChangeKind,
    pub label_set: String,
    pub label: String,
    pub bbox: Option<PixelBox>,
    pub changed_by: Owner,
    pub changed_at: OffsetDateTime,
}

/// Every column of `studies`, in the order [`StudyRecord`]'s row mapping
/// reads them: jobs that read studies in their own snapshot transaction
/// select these (`SELECT {STUDY_COLUMNS} FROM studies s ...`) and map rows
/// with `sqlx::query_as::<_, StudyRecord>`, so the table is typed once.
pub const STUDY_COLUMNS: &str = "id, public_id, owner, status, s3_bucket, s3_key, media_type, byte_size, sha256, \
     width, height, bit_depth, modality, dicom, failure, preview_key, priority, priority_label, created_at, updated_at";

/// The one row mapping of `studies` (a hand-written `FromRow`, since the
/// derive cannot say that `byte_size`, `width` and `bit_depth` are stored
/// signed but never negative).
impl sqlx::FromRow<'_, sqlx::postgres::PgRow> for StudyRecord {
    fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        study_from_row(row).map_err(|e| sqlx::Error::Decode(e.to_string().into()))
    }
}

fn study_from_row(row: &sqlx::postgres::PgRow) -> Result<StudyRecord, DbError> {
    // Values were validated on the way in and by CHECK constraints; a value
    // that fails here means the table was changed outside this code.
    let corrupt = |column: &str, e: &dyn std::fmt::Display| DbError::Other(format!("studies.{column}: {e}"));
    let media_type: String = row.try_get("media_type")?;
    let sha256: Option<String> = row.try_get("sha256")?;
    let to_u32 = |v: Option<i32>, c: &str| v.map(|n| u32::try_from(n).map_err(|e| corrupt(c, &e))).transpose();
    Ok(StudyRecord {
        row_id: row.try_get("id")?,
        id: StudyId::from_uuid(row.try_get::<Uuid, _>("public_id")?),
        owner: Owner::new(row.try_get::<String, _>("owner")?).map_err(|e| corrupt("owner", &e))?,
        status: row.try_get("status")?,
        s3_bucket: row.try_get("s3_bucket")?,
        s3_key: row.try_get("s3_key")?,
        media_type: media_type.parse().map_err(|e| corrupt("media_type", &e))?,
        byte_size: row.try_get::<Option<i64>, _>("byte_size")?.map(|n| n.max(0) as u64),
        sha256: sha256.map(|s| s.parse()).transpose().map_err(|e| corrupt("sha256", &e))?,
        width: to_u32(row.try_get("width")?, "width")?,
        height: to_u32(row.try_get("height")?, "height")?,
        bit_depth: row.try_get::<Option<i16>, _>("bit_depth")?.map(|n| u8::try_from(n).map_err(|e| corrupt("bit_depth", &e))).transpose()?,
        modality: row.try_get("modality")?,
        dicom: row.try_get("dicom")?,
        failure: row.try_get("failure")?,
        preview_key: row.try_get("preview_key")?,
        priority: row.try_get("priority")?,
        priority_label: row.try_get("priority_label")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn box_from_columns(row: &sqlx::postgres::PgRow) -> Result<Option<PixelBox>, DbError> {
    let x: Option<f32> = row.try_get("x_min")?;
    let y: Option<f32> = row.try_get("y_min")?;
    let w: Option<f32> = row.try_get("width")?;
    let h: Option<f32> = row.try_get("height")?;
    match (x, y, w, h) {
        (Some(x), Some(y), Some(w), Some(h)) => PixelBox::new(x, y, w, h).map(Some).map_err(|e| DbError::Other(format!("stored box: {e}"))),
        _ => Ok(None),
    }
}

pub use crate::domain::image_key;

impl Database {
    /// Creates a study in status `created`; its image key is derived from
    /// the id the database generated.
    pub async fn create_study(&self, new: &NewStudy) -> Result<StudyRecord, DbError> {
        let public_id = Uuid::new_v4();
        let key = image_key(StudyId::from_uuid(public_id), new.media_type);
        let row = sqlx::query(&format!(
            "INSERT INTO studies (public_id, owner, s3_bucket, s3_key, media_type)
             VALUES ($1, $2, $3, $4, $5) RETURNING {STUDY_COLUMNS}"
        ))
        .bind(public_id)
        .bind(new.owner.as_str())
        .bind(&new.s3_bucket)
        .bind(&key)
        .bind(new.media_type.as_str())
        .fetch_one(self.pool())
        .await?;
        study_from_row(&row)
    }

    /// The study with this id if `owner` owns it. Another owner's study is
    /// indistinguishable from a missing one.
    pub async fn find_study(&self, owner: &Owner, id: StudyId) -> Result<Option<StudyRecord>, DbError> {
        let row = sqlx::query(&format!("SELECT {STUDY_COLUMNS} FROM studies WHERE public_id = $1 AND owner = $2"))
            .bind(id.as_uuid())
            .bind(owner.as_str())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(study_from_row).transpose()
    }

    /// A page of `owner`'s studies in `order`, after `after` (where the
    /// previous page ended; a position of another order is refused),
    /// narrowed by `filter`. Each study comes with its position.
    pub async fn list_studies(
        &self,
        owner: &Owner,
        filter: &StudyFilter,
        order: StudyOrder,
        after: Option<StudyPosition>,
        limit: u32,
    ) -> Result<Vec<(StudyRecord, StudyPosition)>, DbError> {
        // A label matches a radiologist annotation, or a model finding of
        // the study's latest run at or above `label_min_probability`.
        const FILTER: &str = "owner = $1 AND ($2::study_status IS NULL OR status = $2)
                AND ($3::timestamptz IS NULL OR created_at >= $3)
                AND ($4::timestamptz IS NULL OR created_at < $4)
                AND ($5::text IS NULL
                     OR EXISTS (SELECT 1 FROM annotations a WHERE a.study_id = s.id AND a.label = $5)
                     OR EXISTS (SELECT 1 FROM findings f
                                 WHERE f.inference_run_id = (SELECT r.id FROM inference_runs r WHERE r.study_id = s.id
                                                              ORDER BY r.created_at DESC, r.id DESC LIMIT 1)
                                   AND f.label = $5 AND f.source = 'model' AND f.probability >= $6))";
        let rows = match order {
            StudyOrder::Newest => {
                let (created_at, row_id) = match after {
                    None => (None, 0),
                    Some(StudyPosition::Newest { created_at, row_id }) => (Some(created_at), row_id),
                    Some(_) => return Err(DbError::Other("a cursor of another order".into())),
                };
                let sql = format!(
                    "SELECT {STUDY_COLUMNS}, 0 AS rank, 0::real AS score FROM studies s
                      WHERE {FILTER} AND ($7::timestamptz IS NULL OR (created_at, id) < ($7, $8))
                      ORDER BY created_at DESC, id DESC LIMIT $9"
                );
                sqlx::query(&sql)
                    .bind(owner.as_str())
                    .bind(filter.status)
                    .bind(filter.created_from)
                    .bind(filter.created_before)
                    .bind(&filter.label)
                    .bind(filter.label_min_probability)
                    .bind(created_at)
                    .bind(row_id)
                    .bind(i64::from(limit))
                    .fetch_all(self.pool())
                    .await?
            }
            StudyOrder::Priority { max_wait, as_of } => {
                let (rank, score, created_at, row_id) = match after {
                    None => (None, 0.0, None, 0),
                    Some(StudyPosition::Priority { rank, score, created_at, row_id }) => (Some(rank), score, Some(created_at), row_id),
                    Some(_) => return Err(DbError::Other("a cursor of another order".into())),
                };
                // rank 0: not yet reviewed (no annotation) and waiting longer
                // than max_wait, oldest first (key 0); rank 1: the rest by
                // priority (key = -priority ascending; not yet inferred
                // last), then oldest first. Studies created after `as_of`
                // wait for the next listing, so pages stay consistent.
                let sql = format!(
                    "SELECT * FROM (
                       SELECT {STUDY_COLUMNS},
                              CASE WHEN created_at < $7::timestamptz - make_interval(secs => $8)
                                    AND status <> 'failed'
                                    AND NOT EXISTS (SELECT 1 FROM annotations a WHERE a.study_id = s.id)
                                   THEN 0 ELSE 1 END AS rank,
                              -COALESCE(priority, -1)::real AS score
                         FROM studies s WHERE {FILTER} AND created_at <= $7) k
                      WHERE $9::int IS NULL
                         OR (rank, CASE WHEN rank = 0 THEN 0 ELSE score END, created_at, id) > ($9, $10::real, $11, $12)
                      ORDER BY rank, CASE WHEN rank = 0 THEN 0 ELSE score END, created_at, id LIMIT $13"
                );
                sqlx::query(&sql)
                    .bind(owner.as_str())
                    .bind(filter.status)
                    .bind(filter.created_from)
                    .bind(filter.created_before)
                    .bind(&filter.label)
                    .bind(filter.label_min_probability)
                    .bind(as_of)
                    .bind(max_wait.as_secs_f64())
                    .bind(rank)
                    .bind(if rank == Some(0) { 0.0 } else { score })
                    .bind(created_at)
                    .bind(row_id)
                    .bind(i64::from(limit))
                    .fetch_all(self.pool())
                    .await?
            }
        };
        rows.iter()
            .map(|row| {
                let study = study_from_row(row)?;
                let position = match order {
                    StudyOrder::Newest => StudyPosition::Newest { created_at: study.created_at, row_id: study.row_id },
                    StudyOrder::Priority { .. } => {
                        StudyPosition::Priority { rank: row.try_get("rank")?, score: row.try_get("score")?, created_at: study.created_at, row_id: study.row_id }
                    }
                };
                Ok((study, position))
            })
            .collect()
    }

    /// The study an uploaded object belongs to (for S3 event handlers).
    pub async fn find_study_by_object(&self, bucket: &str, key: &str) -> Result<Option<StudyRecord>, DbError> {
        let row = sqlx::query(&format!("SELECT {STUDY_COLUMNS} FROM studies WHERE s3_bucket = $1 AND s3_key = $2"))
            .bind(bucket)
            .bind(key)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(study_from_row).transpose()
    }

    /// Records what the uploaded image is and moves the study to `uploaded`.
    /// S3 may deliver an upload event more than once: a study already past
    /// `uploaded` (processing or done) is returned as it is, not set back.
    pub async fn record_upload(&self, study_row_id: i64, facts: &ImageFacts) -> Result<StudyRecord, DbError> {
        let byte_size = i64::try_from(facts.byte_size).map_err(|_| DbError::CheckViolation { constraint: "byte_size".into() })?;
        let to_i32 = |v: u32, c: &str| i32::try_from(v).map_err(|_| DbError::CheckViolation { constraint: c.into() });
        let updated = sqlx::query(&format!(
            "UPDATE studies SET status = 'uploaded', byte_size = $2, sha256 = $3, width = $4, height = $5,
                    bit_depth = $6, modality = $7, dicom = $8, failure = NULL
              WHERE id = $1 AND status IN ('created', 'uploaded', 'failed') RETURNING {STUDY_COLUMNS}"
        ))
        .bind(study_row_id)
        .bind(byte_size)
        .bind(facts.sha256.to_hex())
        .bind(to_i32(facts.width, "width")?)
        .bind(to_i32(facts.height, "height")?)
        .bind(i16::from(facts.bit_depth))
        .bind(&facts.modality)
        .bind(&facts.dicom)
        .fetch_optional(self.pool())
        .await?;
        let row = match updated {
            Some(row) => row,
            None => sqlx::query(&format!("SELECT {STUDY_COLUMNS} FROM studies WHERE id = $1"))
                .bind(study_row_id)
                .fetch_optional(self.pool())
                .await?
                .ok_or(DbError::NotFound)?,
        };
        study_from_row(&row)
    }

    /// Moves a study to another status, recording why when it failed.
    pub async fn set_study_status(&self, study_row_id: i64, status: StudyStatus, failure: Option<&str>) -> Result<(), DbError> {
        let done = sqlx::query("UPDATE studies SET status = $2, failure = $3 WHERE id = $1")
            .bind(study_row_id)
            .bind(status)
            .bind(failure)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 { Err(DbError::NotFound) } else { Ok(()) }
    }

    /// Stores one inference (the run, every finding, the study's new
    /// status) in a single transaction: all of it or none of it.
    pub async fn record_inference(&self, study_row_id: i64, run: &NewInferenceRun, findings: &[NewFinding]) -> Result<i64, DbError> {
        let mut tx = self.begin().await?;
        let run_id = insert_inference(&mut tx, study_row_id, run, findings).await?;
        // Priority: the highest probability among this run's positive
        // findings (at or above the label's threshold, 0.5 when the run
        // names none), 0 when none is positive.
        let updated = sqlx::query(
            "UPDATE studies s SET status = 'done', failure = NULL, preview_key = COALESCE($2, preview_key),
                    priority = COALESCE(top.probability, 0), priority_label = top.label
               FROM (SELECT NULL) one
               LEFT JOIN LATERAL (SELECT f.probability, f.label FROM findings f JOIN inference_runs r ON r.id = f.inference_run_id
                                   WHERE r.id = $3 AND f.source = 'model'
                                     AND f.probability >= COALESCE((r.thresholds ->> f.label)::real, 0.5)
                                   ORDER BY f.probability DESC, f.label LIMIT 1) top ON true
              WHERE s.id = $1",
        )
        .bind(study_row_id)
        .bind(&run.preview_key)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(DbError::NotFound);
        }
        tx.commit().await?;
        Ok(run_id)
    }

    /// The most recent inference run of a study, with its findings.
    pub async fn latest_inference(&self, study_row_id: i64) -> Result<Option<InferenceRunRecord>, DbError> {
        let run = sqlx::query(
            "SELECT id, model_name, model_version, thresholds, timings_ms, heatmap_key, model_trained, created_at
               FROM inference_runs WHERE study_id = $1 ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(study_row_id)
        .fetch_optional(self.pool())
        .await?;
        match run {
            Some(run) => self.run_with_findings(&run).await.map(Some),
            None => Ok(None),
        }
    }

    /// The most recent run of this model on any image with this content, and
    /// that study's preview key:
    /// the system-of-record side of the result cache (an image is never
    /// inferred twice by the same model, even when the DynamoDB copy of a
    /// result was lost).
    pub async fn inference_for_content(
        &self,
        sha256: &Sha256Digest,
        model_name: &str,
        model_version: &str,
    ) -> Result<Option<(InferenceRunRecord, Option<ObjectKey>)>, DbError> {
        let run = sqlx::query(
            "SELECT r.id, r.model_name, r.model_version, r.thresholds, r.timings_ms, r.heatmap_key, r.model_trained, r.created_at, s.preview_key
               FROM studies s JOIN inference_runs r ON r.study_id = s.id
              WHERE s.sha256 = $1 AND r.model_name = $2 AND r.model_version = $3
              ORDER BY r.created_at DESC, r.id DESC LIMIT 1",
        )
        .bind(sha256.to_hex())
        .bind(model_name)
        .bind(model_version)
        .fetch_optional(self.pool())
        .await?;
        match run {
            Some(run) => {
                let preview_key: Option<ObjectKey> = run.try_get("preview_key")?;
                Ok(Some((self.run_with_findings(&run).await?, preview_key)))
            }
            None => Ok(None),
        }
    }

    /// Takes a study for inference: `uploaded` (or `processing` whose
    /// claim is older than `lease`, i.e. whoever held it died) becomes
    /// `processing`. `None` when it is not claimable: someone else is
    /// processing it now, or it is already done or failed.
    pub async fn claim_for_inference(&self, study_row_id: i64, lease: std::time::Duration) -> Result<Option<StudyRecord>, DbError> {
        let row = sqlx::query(&format!(
            "UPDATE studies SET status = 'processing', failure = NULL
              WHERE id = $1 AND (status = 'uploaded' OR (status = 'processing' AND updated_at < now() - make_interval(secs => $2)))
              RETURNING {STUDY_COLUMNS}"
        ))
        .bind(study_row_id)
        .bind(lease.as_secs_f64())
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(study_from_row).transpose()
    }

    /// Studies whose upload may have arrived but whose inference has not
    /// finished, changed within `within`, most recently changed first.
    pub async fn awaiting_inference(&self, within: std::time::Duration, limit: u32) -> Result<Vec<StudyRecord>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {STUDY_COLUMNS} FROM studies
              WHERE status IN ('created', 'uploaded', 'processing') AND updated_at > now() - make_interval(secs => $1)
              ORDER BY updated_at DESC LIMIT $2"
        ))
        .bind(within.as_secs_f64())
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(study_from_row).collect()
    }

    async fn run_with_findings(&self, run: &sqlx::postgres::PgRow) -> Result<InferenceRunRecord, DbError> {
        let run_id: i64 = run.try_get("id")?;
        let rows = sqlx::query(
            "SELECT label, probability, x_min, y_min, width, height, source::text AS source
               FROM findings WHERE inference_run_id = $1 ORDER BY probability DESC, id",
        )
        .bind(run_id)
        .fetch_all(self.pool())
        .await?;
        let findings = rows
            .iter()
            .map(|row| {
                let source = match row.try_get::<String, _>("source")?.as_str() {
                    "cam" => FindingSource::Cam,
                    _ => FindingSource::Model,
                };
                Ok(FindingRecord { label: row.try_get("label")?, probability: row.try_get("probability")?, bbox: box_from_columns(row)?, source })
            })
            .collect::<Result<Vec<_>, DbError>>()?;
        let json_map = |column: &str| -> Result<serde_json::Value, DbError> { Ok(run.try_get(column)?) };
        Ok(InferenceRunRecord {
            id: run_id,
            model_name: run.try_get("model_name")?,
            model_version: run.try_get("model_version")?,
            thresholds: serde_json::from_value(json_map("thresholds")?).map_err(|e| DbError::Other(e.to_string()))?,
            timings_ms: serde_json::from_value(json_map("timings_ms")?).map_err(|e| DbError::Other(e.to_string()))?,
            heatmap_key: run.try_get("heatmap_key")?,
            model_trained: run.try_get("model_trained")?,
            created_at: run.try_get("created_at")?,
            findings,
        })
    }

    /// Adds a radiologist annotation and the first entry of its history,
    /// in one transaction. The label must belong to the label set
    /// ([`DbError::ForeignKeyViolation`] otherwise); the caller checks the box
    /// against the image bounds, which it knows.
    pub async fn add_annotation(&self, study_row_id: i64, annotation: &NewAnnotation) -> Result<AnnotationRecord, DbError> {
        let b = annotation.bbox;
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO annotations (study_id, label_set, label, x_min, y_min, width, height, author)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {ANNOTATION_COLUMNS}"
        ))
        .bind(study_row_id)
        .bind(&annotation.label_set)
        .bind(&annotation.label)
        .bind(b.map(|b| b.x_min()))
        .bind(b.map(|b| b.y_min()))
        .bind(b.map(|b| b.width()))
        .bind(b.map(|b| b.height()))
        .bind(annotation.author.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let record = annotation_from_row(&row, None)?;
        record_revision(&mut tx, study_row_id, &record, AnnotationChangeKind::Created, &annotation.author).await?;
        tx.commit().await?;
        Ok(AnnotationRecord { updated_at: record.created_at, ..record })
    }

    /// Changes one annotation of a study; the new state goes into its
    /// history with who changed it. `None` when the study has no such
    /// annotation. The row is locked for the change, so concurrent edits
    /// are applied one after the other.
    pub async fn update_annotation(
        &self,
        study_row_id: i64,
        annotation_id: i64,
        change: &AnnotationChange,
        by: &Owner,
    ) -> Result<Option<AnnotationRecord>, DbError> {
        let mut tx = self.begin().await?;
        let Some(current) = sqlx::query(&format!("SELECT {ANNOTATION_COLUMNS} FROM annotations WHERE study_id = $1 AND id = $2 FOR UPDATE"))
            .bind(study_row_id)
            .bind(annotation_id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let current = annotation_from_row(&current, None)?;
        let label = change.label.clone().unwrap_or(current.label);
        let b = change.bbox.unwrap_or(current.bbox);
        let row = sqlx::query(&format!(
            "UPDATE annotations SET label = $3, x_min = $4, y_min = $5, width = $6, height = $7
              WHERE study_id = $1 AND id = $2 RETURNING {ANNOTATION_COLUMNS}"
        ))
        .bind(study_row_id)
        .bind(annotation_id)
        .bind(&label)
        .bind(b.map(|b| b.x_min()))
        .bind(b.map(|b| b.y_min()))
        .bind(b.map(|b| b.width()))
        .bind(b.map(|b| b.height()))
        .fetch_one(&mut *tx)
        .await?;
        let record = annotation_from_row(&row, None)?;
        let changed_at = record_revision(&mut tx, study_row_id, &record, AnnotationChangeKind::Updated, by).await?;
        tx.commit().await?;
        Ok(Some(AnnotationRecord { updated_by: by.clone(), updated_at: changed_at, ..record }))
    }

    /// Deletes one annotation of a study, keeping what it was, who deleted
    /// it and when in its history. `false` when there was no such
    /// annotation.
    pub async fn delete_annotation(&self, study_row_id: i64, annotation_id: i64, by: &Owner) -> Result<bool, DbError> {
        let mut tx = self.begin().await?;
        let Some(row) = sqlx::query(&format!("DELETE FROM annotations WHERE study_id = $1 AND id = $2 RETURNING {ANNOTATION_COLUMNS}"))
            .bind(study_row_id)
            .bind(annotation_id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(false);
        };
        let record = annotation_from_row(&row, None)?;
        record_revision(&mut tx, study_row_id, &record, AnnotationChangeKind::Deleted, by).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The study's annotations, oldest first, each with its last change.
    pub async fn annotations(&self, study_row_id: i64) -> Result<Vec<AnnotationRecord>, DbError> {
        let rows = sqlx::query(
            "SELECT a.id, a.label_set, a.label, a.x_min, a.y_min, a.width, a.height, a.author, a.created_at,
                    last.changed_by, last.changed_at
               FROM annotations a
               LEFT JOIN LATERAL (SELECT changed_by, changed_at FROM annotation_revisions v
                                   WHERE v.study_id = a.study_id AND v.annotation_id = a.id
                                   ORDER BY v.id DESC LIMIT 1) last ON true
              WHERE a.study_id = $1 ORDER BY a.created_at, a.id",
        )
        .bind(study_row_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let last = match (row.try_get::<Option<String>, _>("changed_by")?, row.try_get::<Option<OffsetDateTime>, _>("changed_at")?) {
                    (Some(by), Some(at)) => Some((owner_column(by, "annotation_revisions.changed_by")?, at)),
                    _ => None,
                };
                annotation_from_row(row, last)
            })
            .collect()
    }

    /// Every change to the study's annotations, in the order made
    /// (deleted annotations included).
    pub async fn annotation_history(&self, study_row_id: i64) -> Result<Vec<AnnotationRevision>, DbError> {
        let rows = sqlx::query(
            "SELECT annotation_id, change, label_set, label, x_min, y_min, width, height, changed_by, changed_at
               FROM annotation_revisions WHERE study_id = $1 ORDER BY id",
        )
        .bind(study_row_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AnnotationRevision {
                    annotation_id: row.try_get("annotation_id")?,
                    change: row.try_get("change")?,
                    label_set: row.try_get("label_set")?,
                    label: row.try_get("label")?,
                    bbox: box_from_columns(row)?,
                    changed_by: owner_column(row.try_get("changed_by")?, "annotation_revisions.changed_by")?,
                    changed_at: row.try_get("changed_at")?,
                })
            })
            .collect()
    }
}

const ANNOTATION_COLUMNS: &str = "id, label_set, label, x_min, y_min, width, height, author, created_at";

fn owner_column(value: String, column: &str) -> Result<Owner, DbError> {
    Owner::new(value).map_err(|e| DbError::Other(format!("{column}: {e}")))
}

/// Appends the annotation's state after `change` to its history; answers
/// when the change was made.
async fn record_revision(
    tx: &mut Transaction<'static, Postgres>,
    study_row_id: i64,
    annotation: &AnnotationRecord,
    change: AnnotationChangeKind,
    by: &Owner,
) -> Result<OffsetDateTime, DbError> {
    let b = annotation.bbox;
    Ok(sqlx::query_scalar(
        "INSERT INTO annotation_revisions (annotation_id, study_id, change, label_set, label, x_min, y_min, width, height, changed_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING changed_at",
    )
    .bind(annotation.id)
    .bind(study_row_id)
    .bind(change)
    .bind(&annotation.label_set)
    .bind(&annotation.label)
    .bind(b.map(|b| b.x_min()))
    .bind(b.map(|b| b.y_min()))
    .bind(b.map(|b| b.width()))
    .bind(b.map(|b| b.height()))
    .bind(by.as_str())
    .fetch_one(&mut **tx)
    .await?)
}

/// An annotation row; `last` is its latest change (who, when), the author
/// and creation time when absent.
fn annotation_from_row(row: &sqlx::postgres::PgRow, last: Option<(Owner, OffsetDateTime)>) -> Result<AnnotationRecord, DbError> {
    let author = owner_column(row.try_get("author")?, "annotations.author")?;
    let created_at: OffsetDateTime = row.try_get("created_at")?;
    let (updated_by, updated_at) = last.unwrap_or_else(|| (author.clone(), created_at));
    Ok(AnnotationRecord {
        id: row.try_get("id")?,
        label_set: row.try_get("label_set")?,
        label: row.try_get("label")?,
        bbox: box_from_columns(row)?,
        author,
        created_at,
        updated_by,
        updated_at,
    })
}

async fn insert_inference(tx: &mut Transaction<'static, Postgres>, study_row_id: i64, run: &NewInferenceRun, findings: &[NewFinding]) -> Result<i64, DbError> {
    let run_id: i64 = sqlx::query_scalar(
        "INSERT INTO inference_runs (study_id, model_name, model_version, thresholds, timings_ms, heatmap_key, model_trained)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(study_row_id)
    .bind(&run.model_name)
    .bind(&run.model_version)
    .bind(to_json(&run.thresholds)?)
    .bind(to_json(&run.timings_ms)?)
    .bind(&run.heatmap_key)
    .bind(run.model_trained)
    .fetch_one(&mut **tx)
    .await?;
    // One statement for all findings: arrays bound as parameters, unnested.
    let column = |f: fn(&NewFinding) -> Option<f32>| findings.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO findings (inference_run_id, label, probability, x_min, y_min, width, height, source)
         SELECT $1, label, probability, x_min, y_min, width, height, source::finding_source
           FROM UNNEST($2::text[], $3::real[], $4::real[], $5::real[], $6::real[], $7::real[], $8::text[])
             AS f(label, probability, x_min, y_min, width, height, source)",
    )
    .bind(run_id)
    .bind(findings.iter().map(|f| f.label.as_str()).collect::<Vec<_>>())
    .bind(findings.iter().map(|f| f.probability).collect::<Vec<_>>())
    .bind(column(|f| f.bbox.map(|b| b.x_min())))
    .bind(column(|f| f.bbox.map(|b| b.y_min())))
    .bind(column(|f| f.bbox.map(|b| b.width())))
    .bind(column(|f| f.bbox.map(|b| b.height())))
    .bind(findings.iter().map(|f| f.source.as_str()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(run_id)
}

fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value, DbError> {
    serde_json::to_value(value).map_err(|e| DbError::Other(e.to_string()))
}
