//! The `job_runs` table: one row per run of a scheduled job, with the
//! watermark range it covered, its counts and how it ended.

use sqlx::Row;
use time::OffsetDateTime;

use super::{Database, DbError};

/// A run in progress, as returned by [`Database::start_job_run`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRun {
    pub id: i64,
    pub job_name: String,
    pub dry_run: bool,
    pub started_at: OffsetDateTime,
}

impl Database {
    /// Records that a run started, covering changes after `watermark_from`
    /// up to and including `watermark_to`.
    pub async fn start_job_run(
        &self,
        job_name: &str,
        dry_run: bool,
        watermark_from: Option<OffsetDateTime>,
        watermark_to: Option<OffsetDateTime>,
    ) -> Result<JobRun, DbError> {
        let row = sqlx::query(
            "INSERT INTO job_runs (job_name, dry_run, watermark_from, watermark_to)
             VALUES ($1, $2, $3, $4) RETURNING id, started_at",
        )
        .bind(job_name)
        .bind(dry_run)
        .bind(watermark_from)
        .bind(watermark_to)
        .fetch_one(self.pool())
        .await?;
        Ok(JobRun { id: row.try_get("id")?, job_name: job_name.to_owned(), dry_run, started_at: row.try_get("started_at")? })
    }

    /// Saves where a chunked run got to, so a later run can resume there.
    pub async fn save_job_checkpoint(&self, run: &JobRun, checkpoint: &serde_json::Value, counts: &serde_json::Value) -> Result<(), DbError> {
        sqlx::query("UPDATE job_runs SET checkpoint = $2, counts = $3 WHERE id = $1 AND status = 'running'")
            .bind(run.id)
            .bind(checkpoint)
            .bind(counts)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn finish_job_run(&self, run: &JobRun, counts: &serde_json::Value) -> Result<(), DbError> {
        self.end_job_run(run, "succeeded", counts, None).await
    }

    /// Ends a run that stopped at its time budget with work left: its window
    /// and checkpoint go to the next run.
    pub async fn hand_over_job_run(&self, run: &JobRun, counts: &serde_json::Value) -> Result<(), DbError> {
        self.end_job_run(run, "handed_over", counts, None).await
    }

    /// Records that `successor` took over `run`'s window and checkpoint.
    pub async fn mark_job_run_resumed(&self, run_id: i64, successor: &JobRun) -> Result<(), DbError> {
        sqlx::query("UPDATE job_runs SET resumed_by = $2 WHERE id = $1 AND resumed_by IS NULL").bind(run_id).bind(successor.id).execute(self.pool()).await?;
        Ok(())
    }

    /// Records a failure with its reason; the error is kept, not swallowed.
    pub async fn fail_job_run(&self, run: &JobRun, counts: &serde_json::Value, error: &str) -> Result<(), DbError> {
        self.end_job_run(run, "failed", counts, Some(error)).await
    }

    async fn end_job_run(&self, run: &JobRun, status: &str, counts: &serde_json::Value, error: Option<&str>) -> Result<(), DbError> {
        let done = sqlx::query(
            "UPDATE job_runs SET status = $2::job_status, counts = $3, error = $4, finished_at = now()
              WHERE id = $1 AND status = 'running'",
        )
        .bind(run.id)
        .bind(status)
        .bind(counts)
        .bind(error)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 { Err(DbError::NotFound) } else { Ok(()) }
    }

    /// Where the last successful, real (not dry) run of a job stopped.
    pub async fn last_job_watermark(&self, job_name: &str) -> Result<Option<OffsetDateTime>, DbError> {
        Ok(sqlx::query_scalar(
            "SELECT watermark_to FROM job_runs
              WHERE job_name = $1 AND status = 'succeeded' AND NOT dry_run AND watermark_to IS NOT NULL
              ORDER BY watermark_to DESC LIMIT 1",
        )
        .bind(job_name)
        .fetch_optional(self.pool())
        .await?)
    }
}
