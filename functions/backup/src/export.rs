//! The backup run: studies changed in the run's window, with all their
//! inference runs, findings and annotations (children are selected by their
//! study, so a study without children is never dropped), in chunks, each
//! chunk's Parquet parts written before its checkpoint; the label tables in
//! full; the manifest last.

use std::collections::BTreeMap;
use std::time::Duration;

use cxr_platform::jobs::driver::{ChunkedJob, run_chunked};
use cxr_platform::jobs::{Job, JobError, StudyCursor, Window};
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
    Checkpoint(#[from] serde_json::Error),
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
    let mut backup = Backup { db, store, options, folder: String::new() };
    let run = run_chunked(db, &mut backup, options.dry_run, options.time_budget).await?;
    let checkpoint = run.progress;
    Ok(BackupReport {
        dry_run: options.dry_run,
        complete: run.finished.is_some(),
        manifest_key: run.finished.flatten(),
        rows: checkpoint.rows(),
        parts: checkpoint.parts(),
        bytes: checkpoint.bytes(),
        resumed_from: run.resumed_from,
    })
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

/// The backup's part of the chunked run (the loop is
/// [`cxr_platform::jobs::driver::run_chunked`]'s).
struct Backup<'a> {
    db: &'a Database,
    store: &'a ObjectStore,
    options: &'a BackupOptions,
    /// The run's folder (from its window, so a resumed run writes where the run it resumes did).
    folder: String,
}

impl ChunkedJob for Backup<'_> {
    type Progress = Checkpoint;
    /// The chunk's studies, inference runs, findings, annotations and their history.
    type Rows = [TableData; 5];
    /// The manifest's key (none for a dry run).
    type Finished = Option<String>;
    type Error = BackupError;
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

    async fn start(&mut self, job: &Job, _progress: &mut Checkpoint) -> Result<(), BackupError> {
        self.folder = run_prefix(&self.options.prefix, &job.window());
        Ok(())
    }

    async fn read(&mut self, tx: &mut sqlx::Transaction<'static, sqlx::Postgres>, ids: &[i64]) -> Result<[TableData; 5], BackupError> {
        let studies = sqlx::query(&format!("SELECT {} FROM studies WHERE id = ANY($1) ORDER BY updated_at, id", tables::STUDIES.select_list()))
            .bind(ids)
            .fetch_all(&mut **tx)
            .await?;
        let studies = TableData::from_rows(&tables::STUDIES, &studies)?;
        let runs = children(tx, &tables::INFERENCE_RUNS, "study_id", ids).await?;
        let findings = children(tx, &tables::FINDINGS, "inference_run_id", &runs.ids()).await?;
        let annotations = children(tx, &tables::ANNOTATIONS, "study_id", ids).await?;
        let revisions = children(tx, &tables::ANNOTATION_REVISIONS, "study_id", ids).await?;
        Ok([studies, runs, findings, annotations, revisions])
    }

    async fn write(&mut self, _job: &Job, rows: [TableData; 5], checkpoint: &mut Checkpoint) -> Result<(), BackupError> {
        let chunk = checkpoint.next_chunk;
        for data in &rows {
            write_part(self.store, &self.folder, chunk, data, self.options.dry_run, checkpoint).await?;
        }
        checkpoint.next_chunk = chunk + 1;
        Ok(())
    }

    /// The small reference tables, whole, every run; then the manifest, last.
    async fn finish(&mut self, job: &Job, checkpoint: &mut Checkpoint) -> Result<Option<String>, BackupError> {
        for table in [&tables::LABEL_SETS, &tables::LABELS] {
            let rows =
                sqlx::query(&format!("SELECT {} FROM {} ORDER BY {}", table.select_list(), table.name, table.key.join(", "))).fetch_all(self.db.pool()).await?;
            let data = TableData::from_rows(table, &rows)?;
            checkpoint.tables.remove(table.name);
            write_part(self.store, &self.folder, 0, &data, self.options.dry_run, checkpoint).await?;
        }
        if self.options.dry_run {
            return Ok(None);
        }
        let manifest = Manifest::new(job.run().id, job.resumed_from(), job.window(), self.options.chunk_studies, checkpoint.tables.clone());
        let key = ObjectKey::new(format!("{}/manifest.json", self.folder)).map_err(S3Error::from)?;
        self.store.put(&key, manifest.to_json()?, "application/json").await?;
        Ok(Some(key.to_string()))
    }
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
