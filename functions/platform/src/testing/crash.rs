//! Crashing a job on purpose: SIGKILL at a checkpoint, for the
//! resume-after-crash tests.

use std::time::Duration;

use crate::storage::postgres::Database;

/// The largest value of `field` (a number) in any job run's checkpoint.
pub async fn job_checkpoint(db: &Database, field: &str) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(max((checkpoint->>$1)::bigint), 0) FROM job_runs").bind(field).fetch_one(db.pool()).await.expect("checkpoint")
}

/// Kills `child` with SIGKILL once a job run's checkpoint `field` reaches
/// `at_least` (failing if the job finishes first or makes no progress for
/// a minute); returns the checkpoint it was killed at.
pub async fn kill_at_checkpoint(db: &Database, child: &mut tokio::process::Child, field: &str, at_least: i64) -> i64 {
    let started = std::time::Instant::now();
    while job_checkpoint(db, field).await < at_least {
        assert!(started.elapsed() < Duration::from_secs(60), "the job made no progress");
        assert!(child.try_wait().expect("poll").is_none(), "the job finished before it could be killed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().await.expect("SIGKILL");
    job_checkpoint(db, field).await
}
