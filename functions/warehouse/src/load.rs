//! The warehouse run: studies changed in the run's window, in chunks (the
//! shared driver's loop); each chunk is read in one snapshot, assembled into
//! documents and upserted by study id, then checkpointed. Re-running a window rewrites the same
//! documents, so a resumed or repeated run leaves the same collection.

use std::time::Duration;

use cxr_platform::jobs::driver::{ChunkedJob, run_chunked};
use cxr_platform::jobs::{Job, JobError, StudyCursor};
use cxr_platform::storage::documentdb::{DocumentCollection, WarehouseError};
use cxr_platform::storage::postgres::Database;
use mongodb::bson::doc;
use serde::{Deserialize, Serialize};

use cxr_platform::storage::postgres::studies::{STUDY_COLUMNS, StudyRecord};

use crate::document::{AnnotationRow, ChunkRows, FindingRow, RunRow, StudyDocument};

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
    let mut load = Load { collection, options };
    let run = run_chunked(db, &mut load, options.dry_run, options.time_budget).await?;
    let p = run.progress;
    Ok(LoadReport {
        dry_run: options.dry_run,
        complete: run.finished.is_some(),
        documents: p.documents,
        inserted: p.inserted,
        matched: p.matched,
        findings: p.findings,
        annotations: p.annotations,
        chunks: p.chunks,
        resumed_from: run.resumed_from,
    })
}

/// The warehouse's part of the chunked run (the loop is
/// [`cxr_platform::jobs::driver::run_chunked`]'s).
struct Load<'a> {
    collection: &'a DocumentCollection<StudyDocument>,
    options: &'a LoadOptions,
}

impl ChunkedJob for Load<'_> {
    type Progress = Checkpoint;
    type Rows = ChunkRows;
    type Finished = ();
    type Error = LoadError;
    const NAME: &'static str = JOB_NAME;

    fn chunk_studies(&self) -> u32 {
        self.options.chunk_studies
    }

    fn cursor(progress: &mut Checkpoint) -> &mut StudyCursor {
        &mut progress.cursor
    }

    fn counts(progress: &Checkpoint) -> serde_json::Value {
        progress.counts()
    }

    async fn start(&mut self, _job: &Job, _progress: &mut Checkpoint) -> Result<(), LoadError> {
        if !self.options.dry_run {
            ensure_indexes(self.collection).await?;
        }
        Ok(())
    }

    async fn read(&mut self, tx: &mut sqlx::Transaction<'static, sqlx::Postgres>, ids: &[i64]) -> Result<ChunkRows, LoadError> {
        Ok(read_chunk(tx, ids).await?)
    }

    async fn write(&mut self, _job: &Job, rows: ChunkRows, checkpoint: &mut Checkpoint) -> Result<(), LoadError> {
        checkpoint.findings += rows.findings.len() as u64;
        checkpoint.annotations += rows.annotations.len() as u64;
        let documents = rows.into_documents();
        checkpoint.documents += documents.len() as u64;
        if !self.options.dry_run {
            let keyed: Vec<(String, StudyDocument)> = documents.into_iter().map(|d| (d.id.clone(), d)).collect();
            let counts = self.collection.upsert_many(&keyed).await?;
            checkpoint.inserted += counts.inserted;
            checkpoint.matched += counts.matched;
        }
        checkpoint.chunks += 1;
        Ok(())
    }

    async fn finish(&mut self, _job: &Job, _progress: &mut Checkpoint) -> Result<(), LoadError> {
        Ok(())
    }
}

/// The chunk's studies and every child row, by parent id (no join that
/// could drop a study without children).
async fn read_chunk(tx: &mut sqlx::Transaction<'static, sqlx::Postgres>, ids: &[i64]) -> Result<ChunkRows, sqlx::Error> {
    // The repository's columns and row mapping, read in this run's snapshot.
    let studies: Vec<StudyRecord> =
        sqlx::query_as(&format!("SELECT {STUDY_COLUMNS} FROM studies WHERE id = ANY($1) ORDER BY updated_at, id")).bind(ids).fetch_all(&mut **tx).await?;
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
