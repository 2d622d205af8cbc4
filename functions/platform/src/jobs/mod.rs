//! What every scheduled job shares: one run at a time (a PostgreSQL
//! advisory lock), a `job_runs` row per run, an incremental window that
//! starts where the last successful run stopped, checkpoints for chunked
//! work, and resumption of a run that died halfway.
//!
//! A run that crashed (SIGKILL, Lambda timeout) leaves its row `running`.
//! The next run, once it holds the lock, knows that run is dead: it marks it
//! failed and takes over its window and checkpoint, so the output is the same
//! as if the first run had finished.

pub mod driver;
pub mod scheduled;

use std::fmt;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use sqlx::Row;
use sqlx::postgres::PgRow;
use time::OffsetDateTime;

use crate::storage::postgres::job_runs::JobRun;
use crate::storage::postgres::{Database, DbError};

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("another {0} run holds the lock; this run did nothing")]
    AlreadyRunning(String),
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<sqlx::Error> for JobError {
    fn from(err: sqlx::Error) -> Self {
        Self::Database(err.into())
    }
}

/// The changes a run covers: `updated_at` in `(from, to]`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Exclusive lower bound; `None` on the first run (everything).
    pub from: Option<OffsetDateTime>,
    /// Inclusive upper bound.
    pub to: OffsetDateTime,
}

impl fmt::Debug for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.from {
            Some(from) => write!(f, "({from}, {}]", self.to),
            None => write!(f, "(-inf, {}]", self.to),
        }
    }
}

/// A run in progress. Holds the job's advisory lock until it is finished or
/// dropped (a dropped connection releases the lock).
pub struct Job {
    db: Database,
    /// A connection of its own, outside the pool: if the process dies or the
    /// run is dropped, the connection closes and PostgreSQL frees the lock.
    lock: Option<PgConnection>,
    run: JobRun,
    window: Window,
    checkpoint: Option<serde_json::Value>,
    resumed_from: Option<i64>,
    /// When the run should stop and hand over (see [`Job::out_of_time`]).
    deadline: Option<Instant>,
}

/// The advisory-lock key of a job: the first 8 bytes of a hash of its name,
/// so different jobs never contend and the key is stable across releases.
pub fn lock_key(job_name: &str) -> i64 {
    let digest = Sha256::digest(format!("cxr-job:{job_name}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

impl Job {
    /// Takes the job's lock and starts a run: resuming a dead run's window
    /// and checkpoint if there is one, else covering everything changed since
    /// the last successful run up to [`safe_ceiling`].
    pub async fn begin(db: &Database, job_name: &str, dry_run: bool) -> Result<Self, JobError> {
        let mut lock = db.pool().acquire().await.map_err(DbError::from)?.detach();
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(lock_key(job_name)).fetch_one(&mut lock).await?;
        if !locked {
            return Err(JobError::AlreadyRunning(job_name.to_owned()));
        }

        // Holding the lock, any run of this mode still marked running is
        // dead. Runs resume only runs of their own mode: a dry run never
        // takes over a real run's window (its checkpoint would be lost).
        sqlx::query(
            "UPDATE job_runs SET status = 'failed', finished_at = now(),
                    error = 'interrupted before it finished (process killed or timed out); the next run resumed it'
              WHERE job_name = $1 AND status = 'running' AND dry_run = $2",
        )
        .bind(job_name)
        .bind(dry_run)
        .execute(db.pool())
        .await?;
        // The newest run that died or handed over and was not yet resumed.
        let resumable: Option<PgRow> = sqlx::query(
            "SELECT id, watermark_from, watermark_to, checkpoint FROM job_runs
              WHERE job_name = $1 AND dry_run = $2 AND resumed_by IS NULL
                AND (status = 'handed_over' OR (status = 'failed' AND error LIKE 'interrupted before it finished%'))
                AND id > COALESCE((SELECT max(id) FROM job_runs
                                    WHERE job_name = $1 AND dry_run = $2 AND status = 'succeeded'), 0)
              ORDER BY id DESC LIMIT 1",
        )
        .bind(job_name)
        .bind(dry_run)
        .fetch_optional(db.pool())
        .await?;

        let (window, checkpoint, resumed_from) = match &resumable {
            Some(row) => {
                let to = match row.try_get::<Option<OffsetDateTime>, _>("watermark_to")? {
                    Some(to) => to,
                    None => safe_ceiling(db).await?,
                };
                let window = Window { from: row.try_get("watermark_from")?, to };
                (window, row.try_get("checkpoint")?, Some(row.try_get::<i64, _>("id")?))
            }
            None => (Window { from: db.last_job_watermark(job_name).await?, to: safe_ceiling(db).await? }, None, None),
        };
        let run = db.start_job_run(job_name, dry_run, window.from, Some(window.to)).await?;
        if let Some(previous) = resumed_from {
            db.mark_job_run_resumed(previous, &run).await?;
        }
        if let Some(checkpoint) = &checkpoint {
            db.save_job_checkpoint(&run, checkpoint, &serde_json::json!({})).await?;
        }
        tracing::info!(job = job_name, run = run.id, dry_run, window = ?window, resumed_from, "job run started");
        Ok(Self { db: db.clone(), lock: Some(lock), run, window, checkpoint, resumed_from, deadline: None })
    }

    pub fn run(&self) -> &JobRun {
        &self.run
    }

    pub fn window(&self) -> Window {
        self.window
    }

    pub fn is_dry_run(&self) -> bool {
        self.run.dry_run
    }

    /// The checkpoint to resume from, if this run took over a dead one.
    pub fn checkpoint(&self) -> Option<&serde_json::Value> {
        self.checkpoint.as_ref()
    }

    /// The id of the dead run this one resumed.
    pub fn resumed_from(&self) -> Option<i64> {
        self.resumed_from
    }

    /// Gives the run a time budget from now; once spent, [`Job::out_of_time`]
    /// says so and the job hands the rest of its window to the next run.
    pub fn set_time_budget(&mut self, budget: Duration) {
        self.deadline = Some(Instant::now() + budget);
    }

    /// True once the time budget is spent: finish the current chunk, save
    /// the checkpoint and [`Job::hand_over`].
    pub fn out_of_time(&self) -> bool {
        self.deadline.is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// Records progress after a chunk is durably written.
    pub async fn save_checkpoint(&mut self, checkpoint: serde_json::Value, counts: &serde_json::Value) -> Result<(), JobError> {
        self.db.save_job_checkpoint(&self.run, &checkpoint, counts).await?;
        self.checkpoint = Some(checkpoint);
        Ok(())
    }

    /// Ends the run successfully; its window's end becomes the next run's
    /// start (unless this was a dry run).
    pub async fn succeed(mut self, counts: &serde_json::Value) -> Result<(), JobError> {
        self.db.finish_job_run(&self.run, counts).await?;
        tracing::info!(job = %self.run.job_name, run = self.run.id, %counts, "job run succeeded");
        self.release().await
    }

    /// Ends a run that ran out of time with work left: the next run (the
    /// next schedule, or an immediate re-invocation) takes over its window
    /// from the last saved checkpoint. The watermark does not move.
    pub async fn hand_over(mut self, counts: &serde_json::Value) -> Result<(), JobError> {
        self.db.hand_over_job_run(&self.run, counts).await?;
        tracing::warn!(job = %self.run.job_name, run = self.run.id, %counts, "job run out of time; handed over to the next run");
        self.release().await
    }

    /// Ends a run that stopped without an error: succeeded when its whole
    /// window is done, handed over when it ran out of time first.
    pub async fn end(self, complete: bool, counts: &serde_json::Value) -> Result<(), JobError> {
        if complete { self.succeed(counts).await } else { self.hand_over(counts).await }
    }

    /// Ends the run as failed, keeping the error; the watermark stays where
    /// it was, so the next run covers this run's window again.
    pub async fn fail(mut self, counts: &serde_json::Value, error: &str) -> Result<(), JobError> {
        self.db.fail_job_run(&self.run, counts, error).await?;
        tracing::error!(job = %self.run.job_name, run = self.run.id, %counts, error, "job run failed");
        self.release().await
    }

    async fn release(&mut self) -> Result<(), JobError> {
        if let Some(mut lock) = self.lock.take() {
            sqlx::query("SELECT pg_advisory_unlock($1)").bind(lock_key(&self.run.job_name)).execute(&mut lock).await?;
        }
        Ok(())
    }
}

/// The newest `updated_at` a job may safely read up to. `now()` inside a
/// transaction is the transaction's start, so a transaction still open may
/// yet commit rows stamped earlier than the present; the ceiling stays just
/// below the start of the oldest open client transaction on this database.
pub async fn safe_ceiling(db: &Database) -> Result<OffsetDateTime, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT LEAST(clock_timestamp(),
                      COALESCE((SELECT min(xact_start) - interval '1 microsecond' FROM pg_stat_activity
                                 WHERE datname = current_database() AND backend_type = 'client backend'
                                   AND pid <> pg_backend_pid() AND xact_start IS NOT NULL),
                               clock_timestamp()))",
    )
    .fetch_one(db.pool())
    .await?)
}

/// Where a chunked run got to: the last study done, in `(updated_at, id)`
/// order. Jobs keep it in their checkpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StudyCursor {
    #[serde(with = "time::serde::rfc3339::option")]
    pub after_updated_at: Option<OffsetDateTime>,
    pub after_id: i64,
}

impl StudyCursor {
    /// The ids of the next `limit` studies changed in `window` after this
    /// cursor, in `(updated_at, id)` order, with the cursor that follows
    /// them (`None` when there are no more).
    pub async fn next_chunk(&self, conn: &mut PgConnection, window: &Window, limit: u32) -> Result<Option<(Vec<i64>, StudyCursor)>, sqlx::Error> {
        let rows: Vec<(i64, OffsetDateTime)> = sqlx::query_as(
            "SELECT id, updated_at FROM studies
              WHERE updated_at <= $1 AND ($2::timestamptz IS NULL OR updated_at > $2)
                AND ($3::timestamptz IS NULL OR (updated_at, id) > ($3, $4))
              ORDER BY updated_at, id LIMIT $5",
        )
        .bind(window.to)
        .bind(window.from)
        .bind(self.after_updated_at)
        .bind(self.after_id)
        .bind(i64::from(limit.max(1)))
        .fetch_all(conn)
        .await?;
        let Some(&(last_id, last_updated_at)) = rows.last() else { return Ok(None) };
        let next = StudyCursor { after_updated_at: Some(last_updated_at), after_id: last_id };
        Ok(Some((rows.into_iter().map(|(id, _)| id).collect(), next)))
    }
}

/// A read-only transaction that sees one snapshot throughout, so a chunk's
/// studies and their children are read as of the same moment.
pub async fn begin_snapshot(db: &Database) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, DbError> {
    let mut tx = db.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
    Ok(tx)
}
