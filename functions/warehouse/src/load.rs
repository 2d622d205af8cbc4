//! The warehouse run: studies changed in the run's window, in chunks; each
//! chunk is read in one snapshot, assembled into documents and upserted by
//! study id, then checkpointed. Re-running a window rewrites the same
//! documents, so a resumed or repeated run leaves the same collection.

use std::time::Duration;

use cxr_platform::jobs::{Job, JobError, StudyCursor, begin_snapshot};
use cxr_platform::storage::documentdb::{DocumentCollection, WarehouseError};
use cxr_platform::storage::postgres::Database;
use mongodb::bson::doc;
use serde::{Deserialize, Serialize};

use crate::document::{AnnotationRow, ChunkRows, FindingRow, RunRow, StudyDocument, StudyRow};

pub const JOB_NAME: &str = "warehouse";

#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Studies per chunk (one snapshot read, one bulk upsert, one checkpoint).
    pub chunk_studies: u32,
    /// Report what would be written without writing anything.
    pub dry_run: bool,
    /// Stop taking chunks after this long and hand the rest to the next run.
    pub time_budget: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Job(#[from] JobError),
    #[error("reading the data lake: {0}")]
    Read(#[from] sqlx::Error),
    #[error("writing the warehouse: {0}")]
    Write(#[from] WarehouseError),
    #[error("checkpoint JSON: {0}")]
    Checkpoint(#[from] serde_json::Error),
}

/// What a run did. Totals include the work of the run it resumed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    pub dry_run: bool,
    /// False when the run ran out of time and handed over.
    pub complete: bool,
    /// Study documents read from the data lake (and upserted unless dry).
    pub documents: u64,
    /// Of those, new to the warehouse.
    pub inserted: u64,
    /// Of those, already there (changed or not).
    pub matched: u64,
    pub findings: u64,
    pub annotations: u64,
    pub chunks: u64,
    pub resumed_from: Option<i64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    #[serde(flatten)]
    cursor: StudyCursor,
    documents: u64,
    inserted: u64,
    matched: u64,
    findings: u64,
    annotations: u64,
    chunks: u64,
}

impl Checkpoint {
    fn counts(&self) -> serde_json::Value {
        serde_json::json!({
            "documents": self.documents, "inserted": self.inserted, "matched": self.matched,
            "findings": self.findings, "annotations": self.annotations, "chunks": self.chunks,
        })
    }
}

/// The indexes analysts query by: label, date, model version (all
/// idempotent to create).
pub async fn ensure_indexes(collection: &DocumentCollection<StudyDocument>) -> Result<(), WarehouseError> {
    collection.ensure_index("labels_predicted", doc! { "labels.predicted": 1 }, false).await?;
    collection.ensure_index("labels_annotated", doc! { "labels.annotated": 1 }, false).await?;
    collection.ensure_index("created_at", doc! { "created_at": -1 }, false).await?;
    collection.ensure_index("updated_at", doc! { "updated_at": -1 }, false).await?;
    collection.ensure_index("model_version", doc! { "inference_runs.model_name": 1, "inference_runs.model_version": 1 }, false).await?;
    collection.ensure_index("owner_created_at", doc! { "owner": 1, "created_at": -1 }, false).await?;
    Ok(())
}

pub async fn run_load(db: &Database, collection: &DocumentCollection<StudyDocument>, options: &LoadOptions) -> Result<LoadReport, LoadError> {
    let mut job = Job::begin(db, JOB_NAME, options.dry_run).await?;
    if let Some(budget) = options.time_budget {
        job.set_time_budget(budget);
    }
    let mut checkpoint = Checkpoint::default();
    match load(db, collection, options, &mut job, &mut checkpoint).await {
        Ok(complete) => {
            let report = LoadReport {
                dry_run: options.dry_run,
                complete,
                documents: checkpoint.documents,
                inserted: checkpoint.inserted,
                matched: checkpoint.matched,
                findings: checkpoint.findings,
                annotations: checkpoint.annotations,
                chunks: checkpoint.chunks,
                resumed_from: job.resumed_from(),
            };
            job.end(complete, &checkpoint.counts()).await?;
            Ok(report)
        }
        Err(err) => {
            job.fail(&checkpoint.counts(), &err.to_string()).await?;
            Err(err)
        }
    }
}

/// Loads the window; `Ok(false)` when it ran out of time first.
async fn load(
    db: &Database,
    collection: &DocumentCollection<StudyDocument>,
    options: &LoadOptions,
    job: &mut Job,
    checkpoint: &mut Checkpoint,
) -> Result<bool, LoadError> {
    if let Some(value) = job.checkpoint() {
        *checkpoint = serde_json::from_value(value.clone())?;
        tracing::info!(documents = checkpoint.documents, "resuming an interrupted warehouse load");
    }
    if !options.dry_run {
        ensure_indexes(collection).await?;
    }
    let window = job.window();
    loop {
        let mut tx = begin_snapshot(db).await.map_err(JobError::from)?;
        let Some((ids, next)) = checkpoint.cursor.next_chunk(&mut tx, &window, options.chunk_studies).await? else {
            return Ok(true);
        };
        let rows = read_chunk(&mut tx, &ids).await?;
        tx.commit().await?;

        checkpoint.findings += rows.findings.len() as u64;
        checkpoint.annotations += rows.annotations.len() as u64;
        let documents = rows.into_documents();
        checkpoint.documents += documents.len() as u64;
        if !options.dry_run {
            let keyed: Vec<(String, StudyDocument)> = documents.into_iter().map(|d| (d.id.clone(), d)).collect();
            let counts = collection.upsert_many(&keyed).await?;
            checkpoint.inserted += counts.inserted;
            checkpoint.matched += counts.matched;
        }
        checkpoint.chunks += 1;
        checkpoint.cursor = next;
        job.save_checkpoint(serde_json::to_value(&*checkpoint)?, &checkpoint.counts()).await?;
        tracing::info!(chunk = checkpoint.chunks, documents = checkpoint.documents, "warehouse chunk loaded");
        if ids.len() < options.chunk_studies.max(1) as usize {
            return Ok(true); // a short chunk is the last one
        }
        if job.out_of_time() {
            return Ok(false);
        }
    }
}

/// The chunk's studies and every child row, by parent id (no join that
/// could drop a study without children).
async fn read_chunk(tx: &mut sqlx::Transaction<'static, sqlx::Postgres>, ids: &[i64]) -> Result<ChunkRows, sqlx::Error> {
    let studies: Vec<StudyRow> = sqlx::query_as(
        "SELECT id, public_id, owner, status::text AS status, s3_bucket, s3_key, media_type, byte_size, sha256,
                width, height, bit_depth, modality, dicom, failure, created_at, updated_at
           FROM studies WHERE id = ANY($1) ORDER BY updated_at, id",
    )
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    let runs: Vec<RunRow> = sqlx::query_as(
        "SELECT id, study_id, model_name, model_version, thresholds, timings_ms, heatmap_key, created_at
           FROM inference_runs WHERE study_id = ANY($1) ORDER BY id",
    )
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    let run_ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    let findings: Vec<FindingRow> = sqlx::query_as(
        "SELECT id, inference_run_id, label, probability, x_min, y_min, width, height, source::text AS source
           FROM findings WHERE inference_run_id = ANY($1) ORDER BY id",
    )
    .bind(&run_ids)
    .fetch_all(&mut **tx)
    .await?;
    let annotations: Vec<AnnotationRow> = sqlx::query_as(
        "SELECT id, study_id, label_set, label, x_min, y_min, width, height, author, created_at
           FROM annotations WHERE study_id = ANY($1) ORDER BY id",
    )
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    Ok(ChunkRows { studies, runs, findings, annotations })
}
