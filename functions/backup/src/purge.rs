//! Retention purge: deletes studies (and, by cascade, their inference runs,
//! findings and annotations) created before the retention window, but only
//! those whose current version is in a backup that was just read back and
//! verified. Off unless `BACKUP_PURGE_AFTER_DAYS` is set.
//!
//! "Current version" is exact: the study's `updated_at` in the database
//! must equal the `updated_at` of its row in a verified backup part. Any
//! change since that backup (a new annotation bumps `updated_at`) keeps the
//! study until the next backup holds it. Images in S3 are not touched: the
//! backups point at them and a restore brings the rows back.

use std::collections::HashMap;
use std::time::Duration;

use cxr_platform::jobs::{Job, JobError};
use cxr_platform::storage::postgres::Database;
use cxr_platform::storage::s3::ObjectStore;
use serde::Serialize;
use time::OffsetDateTime;

use crate::restore::{RestoreError, manifests, verify_all};
use crate::tables;

pub const JOB_NAME: &str = "backup-purge";
/// Studies deleted per transaction.
const DELETE_BATCH: usize = 1000;

#[derive(Clone, Debug)]
pub struct PurgeOptions {
    /// Studies created longer ago than this are candidates.
    pub retention: Duration,
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error(transparent)]
    Job(#[from] JobError),
    #[error("the backups could not be verified, nothing was purged: {0}")]
    Verify(#[from] RestoreError),
    #[error("purging: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the retention of {0:?} is too long to compute a cut-off date")]
    Retention(Duration),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    pub dry_run: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub cutoff: Option<OffsetDateTime>,
    pub manifests_verified: u64,
    pub parts_verified: u64,
    /// Studies older than the cut-off.
    pub candidates: u64,
    /// Of those, deleted (or, in a dry run, that would be).
    pub purged: u64,
    /// Older studies kept: their current version is in no verified backup yet.
    pub kept_not_backed_up: u64,
}

pub async fn run_purge(db: &Database, store: &ObjectStore, prefix: &str, options: &PurgeOptions) -> Result<PurgeReport, PurgeError> {
    let job = Job::begin(db, JOB_NAME, options.dry_run).await?;
    let mut report = PurgeReport { dry_run: options.dry_run, ..PurgeReport::default() };
    let result = purge(db, store, prefix, options, &mut report).await;
    let counts = serde_json::json!({
        "manifests_verified": report.manifests_verified, "parts_verified": report.parts_verified,
        "candidates": report.candidates, "purged": report.purged, "kept_not_backed_up": report.kept_not_backed_up,
    });
    match result {
        Ok(()) => {
            job.succeed(&counts).await?;
            Ok(report)
        }
        Err(err) => {
            job.fail(&counts, &err.to_string()).await?;
            Err(err)
        }
    }
}

async fn purge(db: &Database, store: &ObjectStore, prefix: &str, options: &PurgeOptions, report: &mut PurgeReport) -> Result<(), PurgeError> {
    let retention = time::Duration::try_from(options.retention).map_err(|_| PurgeError::Retention(options.retention))?;
    let cutoff = OffsetDateTime::now_utc().checked_sub(retention).ok_or(PurgeError::Retention(options.retention))?;
    report.cutoff = Some(cutoff);

    // Read every backup back and check every part; remember which version
    // (updated_at) of each study the backups hold, newest wins.
    let manifests = manifests(store, prefix).await?;
    let mut backed_up: HashMap<i64, OffsetDateTime> = HashMap::new();
    report.parts_verified = verify_all(store, &manifests, |data| {
        if data.table.name != tables::STUDIES.name {
            return;
        }
        let (ids, stamps) = (data.ids(), data.timestamps("updated_at").unwrap_or_default());
        for (id, stamp) in ids.into_iter().zip(stamps.iter().flatten()) {
            let newest = backed_up.entry(id).or_insert(*stamp);
            *newest = (*newest).max(*stamp);
        }
    })
    .await?;
    report.manifests_verified = manifests.len() as u64;

    let candidates: Vec<(i64, OffsetDateTime)> =
        sqlx::query_as("SELECT id, updated_at FROM studies WHERE created_at < $1 ORDER BY id").bind(cutoff).fetch_all(db.pool()).await?;
    report.candidates = candidates.len() as u64;
    let (purgeable, kept): (Vec<_>, Vec<_>) = candidates.into_iter().partition(|(id, stamp)| backed_up.get(id) == Some(stamp));
    report.kept_not_backed_up = kept.len() as u64;
    if options.dry_run {
        report.purged = purgeable.len() as u64;
        return Ok(());
    }
    for batch in purgeable.chunks(DELETE_BATCH) {
        let ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
        let stamps: Vec<OffsetDateTime> = batch.iter().map(|(_, stamp)| *stamp).collect();
        // Re-checked in the DELETE: a study changed since it was read stays.
        let deleted = sqlx::query(
            "DELETE FROM studies s USING UNNEST($1::bigint[], $2::timestamptz[]) AS p(id, updated_at)
              WHERE s.id = p.id AND s.updated_at = p.updated_at",
        )
        .bind(&ids)
        .bind(&stamps)
        .execute(db.pool())
        .await?;
        report.purged += deleted.rows_affected();
        report.kept_not_backed_up += batch.len() as u64 - deleted.rows_affected();
        tracing::info!(purged = report.purged, "purge batch deleted");
    }
    Ok(())
}
