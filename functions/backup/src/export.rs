//! The backup run: studies changed in the run's window, with all their
//! inference runs, findings and annotations (children are selected by their
//! study, so a study without children is never dropped), in chunks, each
//! chunk's Parquet parts written before its checkpoint; the label tables in
//! full; the manifest last.

use std::collections::BTreeMap;

use cxr_platform::jobs::{Job, JobError, Window};
use cxr_platform::storage::postgres::Database;
use cxr_platform::storage::s3::{ObjectKey, ObjectStore, S3Error};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::manifest::{Manifest, PartEntry, TableEntry};
use crate::tables::{self, Table, TableData, TableDataError};

pub const JOB_NAME: &str = "backup";

#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Prefix under which each run writes its dated folder.
    pub prefix: String,
    /// Studies per chunk (each chunk is one part per table and a checkpoint).
    pub chunk_studies: u32,
    /// Report what would be written without writing anything.
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Job(#[from] JobError),
    #[error("reading the data lake: {0}")]
    Read(#[from] sqlx::Error),
    #[error(transparent)]
    Data(#[from] TableDataError),
    #[error("writing the backup: {0}")]
    Write(#[from] S3Error),
    #[error("checkpoint or manifest JSON: {0}")]
    Checkpoint(serde_json::Error),
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupReport {
    pub dry_run: bool,
    /// Where the manifest is (none for a dry run).
    pub manifest_key: Option<String>,
    pub rows: BTreeMap<String, u64>,
    pub parts: u64,
    pub bytes: u64,
    pub resumed_from: Option<i64>,
}

/// Progress saved after each chunk.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    next_chunk: u32,
    /// The last study written: its `updated_at` and `id`.
    #[serde(with = "time::serde::rfc3339::option")]
    after_updated_at: Option<OffsetDateTime>,
    after_id: i64,
    tables: BTreeMap<String, TableEntry>,
}

/// The folder of one run: dated, and named by the window's end, so a resumed
/// run writes to the same place as the run it resumes.
pub fn run_prefix(prefix: &str, window: &Window) -> String {
    let to = window.to;
    format!(
        "{}/{:04}/{:02}/{:02}/{:04}{:02}{:02}T{:02}{:02}{:02}.{:06}Z",
        prefix.trim_end_matches('/'),
        to.year(),
        u8::from(to.month()),
        to.day(),
        to.year(),
        u8::from(to.month()),
        to.day(),
        to.hour(),
        to.minute(),
        to.second(),
        to.microsecond()
    )
}

pub async fn run_backup(db: &Database, store: &ObjectStore, options: &BackupOptions) -> Result<BackupReport, BackupError> {
    let job = Job::begin(db, JOB_NAME, options.dry_run).await?;
    let mut report = BackupReport { dry_run: options.dry_run, resumed_from: job.resumed_from(), ..Default::default() };
    match export(db, store, options, &job, &mut report).await {
        Ok(()) => {
            job.succeed(&counts(&report)).await?;
            Ok(report)
        }
        Err(err) => {
            // Recorded, never swallowed; the watermark stays put, so the next
            // run covers this window again.
            job.fail(&counts(&report), &err.to_string()).await?;
            Err(err)
        }
    }
}

fn counts(report: &BackupReport) -> serde_json::Value {
    serde_json::json!({ "rows": report.rows, "parts": report.parts, "bytes": report.bytes })
}

async fn export(
    db: &Database,
    store: &ObjectStore,
    options: &BackupOptions,
    job: &Job,
    report: &mut BackupReport,
) -> Result<(), BackupError> {
    let window = job.window();
    let folder = run_prefix(&options.prefix, &window);
    let mut checkpoint: Checkpoint = match job.checkpoint() {
        Some(value) => serde_json::from_value(value.clone()).map_err(BackupError::Checkpoint)?,
        None => Checkpoint::default(),
    };
    if job.resumed_from().is_some() {
        tracing::info!(chunk = checkpoint.next_chunk, "resuming an interrupted backup");
    }
    for table in tables::ALL {
        report.rows.insert(table.name.to_owned(), 0);
    }
    for (table, entry) in &checkpoint.tables {
        report.rows.insert(table.clone(), entry.rows);
        report.parts += entry.parts.len() as u64;
        report.bytes += entry.parts.iter().map(|p| p.bytes).sum::<u64>();
    }

    loop {
        let chunk = checkpoint.next_chunk;
        let mut tx = db.begin().await.map_err(|e| BackupError::Job(e.into()))?;
        // One snapshot per chunk: a study and its children as of one moment.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
        let studies = sqlx::query(&format!(
            "SELECT {} FROM studies
              WHERE updated_at <= $1 AND ($2::timestamptz IS NULL OR updated_at > $2)
                AND ($3::timestamptz IS NULL OR (updated_at, id) > ($3, $4))
              ORDER BY updated_at, id LIMIT $5",
            tables::STUDIES.select_list()
        ))
        .bind(window.to)
        .bind(window.from)
        .bind(checkpoint.after_updated_at)
        .bind(checkpoint.after_id)
        .bind(i64::from(options.chunk_studies.max(1)))
        .fetch_all(&mut *tx)
        .await?;
        if studies.is_empty() {
            break;
        }
        let last = studies.last().map(|r| {
            use sqlx::Row;
            (r.get::<OffsetDateTime, _>("updated_at"), r.get::<i64, _>("id"))
        });
        let studies = TableData::from_rows(&tables::STUDIES, &studies)?;
        let ids = studies.ids();
        let runs = children(&mut tx, &tables::INFERENCE_RUNS, "study_id", &ids).await?;
        let findings = children(&mut tx, &tables::FINDINGS, "inference_run_id", &runs.ids()).await?;
        let annotations = children(&mut tx, &tables::ANNOTATIONS, "study_id", &ids).await?;
        tx.commit().await?;

        for data in [&studies, &runs, &findings, &annotations] {
            write_part(store, &folder, chunk, data, options.dry_run, &mut checkpoint, report).await?;
        }
        checkpoint.next_chunk = chunk + 1;
        if let Some((updated_at, id)) = last {
            checkpoint.after_updated_at = Some(updated_at);
            checkpoint.after_id = id;
        }
        let value = serde_json::to_value(&checkpoint).map_err(BackupError::Checkpoint)?;
        db.save_job_checkpoint(job.run(), &value, &counts(report)).await.map_err(|e| BackupError::Job(e.into()))?;
        tracing::info!(chunk, studies = studies.len(), rows = ?report.rows, "backup chunk written");
    }

    // Small reference tables: whole, every run.
    for table in [&tables::LABEL_SETS, &tables::LABELS] {
        let rows = sqlx::query(&format!("SELECT {} FROM {} ORDER BY {}", table.select_list(), table.name, table.key.join(", ")))
            .fetch_all(db.pool())
            .await?;
        let data = TableData::from_rows(table, &rows)?;
        checkpoint.tables.remove(table.name);
        write_part(store, &folder, 0, &data, options.dry_run, &mut checkpoint, report).await?;
    }

    if !options.dry_run {
        let manifest = Manifest::new(job.run().id, job.resumed_from(), window, options.chunk_studies, checkpoint.tables.clone());
        let key = ObjectKey::new(format!("{folder}/manifest.json")).map_err(S3Error::from)?;
        store.put(&key, manifest.to_json().map_err(BackupError::Checkpoint)?, "application/json").await?;
        report.manifest_key = Some(key.to_string());
    }
    Ok(())
}

async fn children(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    table: &'static Table,
    parent_column: &str,
    parent_ids: &[i64],
) -> Result<TableData, BackupError> {
    let rows = sqlx::query(&format!(
        "SELECT {} FROM {} WHERE {parent_column} = ANY($1) ORDER BY id",
        table.select_list(),
        table.name
    ))
    .bind(parent_ids)
    .fetch_all(&mut **tx)
    .await?;
    Ok(TableData::from_rows(table, &rows)?)
}

async fn write_part(
    store: &ObjectStore,
    folder: &str,
    chunk: u32,
    data: &TableData,
    dry_run: bool,
    checkpoint: &mut Checkpoint,
    report: &mut BackupReport,
) -> Result<(), BackupError> {
    let name = data.table.name;
    let rows = data.len() as u64;
    *report.rows.entry(name.to_owned()).or_default() += rows;
    let entry = checkpoint.tables.entry(name.to_owned()).or_default();
    entry.rows += rows;
    if rows == 0 {
        return Ok(());
    }
    let bytes = data.to_parquet()?;
    let key = format!("{folder}/{name}/part-{chunk:06}.parquet");
    let ids = data.ids();
    let part = PartEntry {
        key: key.clone(),
        rows,
        bytes: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(&bytes)),
        min_id: ids.iter().min().copied(),
        max_id: ids.iter().max().copied(),
    };
    report.parts += 1;
    report.bytes += part.bytes;
    if !dry_run {
        let object = ObjectKey::new(key).map_err(S3Error::from)?;
        store.put(&object, bytes, "application/vnd.apache.parquet").await?;
    }
    entry.parts.push(part);
    Ok(())
}
