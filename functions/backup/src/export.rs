//! The backup run: studies changed in the run's window, with all their
//! inference runs, findings and annotations (children are selected by their
//! study, so a study without children is never dropped), in chunks, each
//! chunk's Parquet parts written before its checkpoint; the label tables in
//! full; the manifest last.

use std::collections::BTreeMap;
use std::time::Duration;

use cxr_platform::jobs::{Job, JobError, StudyCursor, Window, begin_snapshot};
use cxr_platform::storage::postgres::Database;
use cxr_platform::storage::s3::{ObjectKey, ObjectStore, S3Error};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
    /// Stop taking chunks after this long and hand the rest to the next run.
    pub time_budget: Option<Duration>,
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
    /// False when the run ran out of time and handed the rest of its window
    /// to the next run (which writes the manifest).
    pub complete: bool,
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
    /// The last study written.
    #[serde(flatten)]
    cursor: StudyCursor,
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
    let mut job = Job::begin(db, JOB_NAME, options.dry_run).await?;
    if let Some(budget) = options.time_budget {
        job.set_time_budget(budget);
    }
    let mut checkpoint = Checkpoint::default();
    match export(db, store, options, &mut job, &mut checkpoint).await {
        Ok(outcome) => {
            let report = BackupReport {
                dry_run: options.dry_run,
                complete: !matches!(outcome, Outcome::HandedOver),
                manifest_key: match outcome {
                    Outcome::Finished(key) => key,
                    Outcome::HandedOver => None,
                },
                rows: checkpoint.rows(),
                parts: checkpoint.parts(),
                bytes: checkpoint.bytes(),
                resumed_from: job.resumed_from(),
            };
            job.end(report.complete, &checkpoint.counts()).await?;
            Ok(report)
        }
        Err(err) => {
            // Recorded, never swallowed; the watermark stays put, so the next
            // run covers this window again.
            job.fail(&checkpoint.counts(), &err.to_string()).await?;
            Err(err)
        }
    }
}

impl Checkpoint {
    /// Rows per table, every table named (0 when it had none).
    fn rows(&self) -> BTreeMap<String, u64> {
        tables::ALL.iter().map(|t| (t.name.to_owned(), self.tables.get(t.name).map_or(0, |e| e.rows))).collect()
    }

    fn parts(&self) -> u64 {
        self.tables.values().map(|e| e.parts.len() as u64).sum()
    }

    fn bytes(&self) -> u64 {
        self.tables.values().flat_map(|e| &e.parts).map(|p| p.bytes).sum()
    }

    fn counts(&self) -> serde_json::Value {
        serde_json::json!({ "rows": self.rows(), "parts": self.parts(), "bytes": self.bytes() })
    }
}

enum Outcome {
    /// The window is backed up; the manifest's key (none for a dry run).
    Finished(Option<String>),
    /// Out of time: the checkpoint is saved for the next run.
    HandedOver,
}

/// Writes the backup. `checkpoint` holds all progress, resumed from the
/// job's if it has one.
async fn export(db: &Database, store: &ObjectStore, options: &BackupOptions, job: &mut Job, checkpoint: &mut Checkpoint) -> Result<Outcome, BackupError> {
    let window = job.window();
    let folder = run_prefix(&options.prefix, &window);
    if let Some(value) = job.checkpoint() {
        *checkpoint = serde_json::from_value(value.clone()).map_err(BackupError::Checkpoint)?;
        tracing::info!(chunk = checkpoint.next_chunk, "resuming an interrupted backup");
    }

    loop {
        let chunk = checkpoint.next_chunk;
        let mut tx = begin_snapshot(db).await.map_err(JobError::from)?;
        let Some((ids, next)) = checkpoint.cursor.next_chunk(&mut tx, &window, options.chunk_studies).await? else {
            break;
        };
        let studies = sqlx::query(&format!("SELECT {} FROM studies WHERE id = ANY($1) ORDER BY updated_at, id", tables::STUDIES.select_list()))
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
        let studies = TableData::from_rows(&tables::STUDIES, &studies)?;
        let runs = children(&mut tx, &tables::INFERENCE_RUNS, "study_id", &ids).await?;
        let findings = children(&mut tx, &tables::FINDINGS, "inference_run_id", &runs.ids()).await?;
        let annotations = children(&mut tx, &tables::ANNOTATIONS, "study_id", &ids).await?;
        let revisions = children(&mut tx, &tables::ANNOTATION_REVISIONS, "study_id", &ids).await?;
        tx.commit().await?;

        for data in [&studies, &runs, &findings, &annotations, &revisions] {
            write_part(store, &folder, chunk, data, options.dry_run, checkpoint).await?;
        }
        checkpoint.next_chunk = chunk + 1;
        checkpoint.cursor = next;
        let value = serde_json::to_value(&*checkpoint).map_err(BackupError::Checkpoint)?;
        job.save_checkpoint(value, &checkpoint.counts()).await?;
        tracing::info!(chunk, studies = studies.len(), rows = ?checkpoint.rows(), "backup chunk written");
        if studies.len() < options.chunk_studies.max(1) as usize {
            break; // a short chunk is the last one
        }
        if job.out_of_time() {
            return Ok(Outcome::HandedOver);
        }
    }

    // Small reference tables: whole, every run.
    for table in [&tables::LABEL_SETS, &tables::LABELS] {
        let rows = sqlx::query(&format!("SELECT {} FROM {} ORDER BY {}", table.select_list(), table.name, table.key.join(", "))).fetch_all(db.pool()).await?;
        let data = TableData::from_rows(table, &rows)?;
        checkpoint.tables.remove(table.name);
        write_part(store, &folder, 0, &data, options.dry_run, checkpoint).await?;
    }

    if options.dry_run {
        return Ok(Outcome::Finished(None));
    }
    let manifest = Manifest::new(job.run().id, job.resumed_from(), window, options.chunk_studies, checkpoint.tables.clone());
    let key = ObjectKey::new(format!("{folder}/manifest.json")).map_err(S3Error::from)?;
    store.put(&key, manifest.to_json().map_err(BackupError::Checkpoint)?, "application/json").await?;
    Ok(Outcome::Finished(Some(key.to_string())))
}

async fn children(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    table: &'static Table,
    parent_column: &str,
    parent_ids: &[i64],
) -> Result<TableData, BackupError> {
    let rows = sqlx::query(&format!("SELECT {} FROM {} WHERE {parent_column} = ANY($1) ORDER BY id", table.select_list(), table.name))
        .bind(parent_ids)
        .fetch_all(&mut **tx)
        .await?;
    Ok(TableData::from_rows(table, &rows)?)
}

async fn write_part(store: &ObjectStore, folder: &str, chunk: u32, data: &TableData, dry_run: bool, checkpoint: &mut Checkpoint) -> Result<(), BackupError> {
    let name = data.table.name;
    let rows = data.len() as u64;
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
    if !dry_run {
        let object = ObjectKey::new(key).map_err(S3Error::from)?;
        store.put(&object, bytes, "application/vnd.apache.parquet").await?;
    }
    entry.parts.push(part);
    Ok(())
}
