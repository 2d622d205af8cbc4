//! A backup killed with SIGKILL halfway, then run again, leaves the same
//! backup as a run that was never interrupted.

use std::collections::BTreeMap;
use std::time::Duration;

use cxr_backup::restore::{manifests, restore};
use cxr_platform::storage::s3::ObjectStore;
use cxr_platform::testing::{LocalStack, kill_at_checkpoint, seed, table_fingerprint};

fn backup_command(database_url: &str, bucket: &str) -> tokio::process::Command {
    let mut command = LocalStack::get().command(env!("CARGO_BIN_EXE_backup"));
    command.arg("run").env("DATABASE_URL", database_url).env("BACKUP_BUCKET", bucket).env("BACKUP_CHUNK_STUDIES", "1");
    command
}

/// Every part of every manifest: path below the run's folder -> checksum.
async fn parts(store: &ObjectStore) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    for (_, manifest) in manifests(store, "rds-backups").await.expect("manifests") {
        for entry in manifest.tables.values() {
            for part in &entry.parts {
                let relative = part.key.splitn(6, '/').nth(5).expect("folder/table/part").to_owned();
                assert!(all.insert(relative, part.sha256.clone()).is_none(), "part listed twice");
            }
        }
    }
    all
}

#[tokio::test]
async fn sigkill_halfway_then_rerun_equals_an_uninterrupted_run() {
    let stack = LocalStack::get();
    let (url, db) = stack.fresh_migrated_database().await;
    seed(&db, 120, 2).await.expect("seed");

    // Reference: one uninterrupted run. Then forget it (watermark reset).
    let reference = stack.fresh_bucket().await;
    let status = backup_command(&url, reference.bucket()).status().await.expect("run");
    assert!(status.success());
    sqlx::query("DELETE FROM job_runs").execute(db.pool()).await.expect("reset watermark");

    // Interrupted: kill -9 once a third of the chunks are written.
    let interrupted = stack.fresh_bucket().await;
    let mut child = backup_command(&url, interrupted.bucket()).spawn().expect("spawn");
    let killed_at = kill_at_checkpoint(&db, &mut child, "next_chunk", 40).await;
    assert!(killed_at < 120, "killed halfway (at chunk {killed_at})");
    assert!(manifests(&interrupted, "rds-backups").await.expect("list").is_empty(), "no manifest for an unfinished run");

    // Run again: it resumes the dead run's window from its checkpoint.
    let status = backup_command(&url, interrupted.bucket()).status().await.expect("rerun");
    assert!(status.success());
    let (failed, resumed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'failed' AND error LIKE 'interrupted%'),
                count(*) FILTER (WHERE status = 'succeeded')
           FROM job_runs",
    )
    .fetch_one(db.pool())
    .await
    .expect("runs");
    assert_eq!((failed, resumed), (1, 1));

    assert_eq!(parts(&interrupted).await, parts(&reference).await, "same parts, same bytes");
    let restored = stack.fresh_database().await;
    restore(&restored, &interrupted, "rds-backups").await.expect("restore");
    for (table, order) in [("studies", "id"), ("inference_runs", "id"), ("findings", "id"), ("annotations", "id")] {
        assert_eq!(table_fingerprint(&restored, table, order).await, table_fingerprint(&db, table, order).await, "{table}");
    }
}

#[tokio::test]
async fn a_dry_run_leaves_a_dead_run_for_the_next_real_run_to_resume() {
    let stack = LocalStack::get();
    let db = stack.fresh_database().await;
    let store = stack.fresh_bucket().await;
    seed(&db, 3, 1).await.expect("seed");
    // A real run that died: still marked running, with its window.
    let to = cxr_platform::jobs::safe_ceiling(&db).await.expect("ceiling");
    let dead = db.start_job_run("backup", false, None, Some(to)).await.expect("dead run");

    let options = cxr_backup::export::BackupOptions { prefix: "rds-backups".into(), chunk_studies: 10, dry_run: true, time_budget: None };
    let dry = cxr_backup::export::run_backup(&db, &store, &options).await.expect("dry run");
    assert_eq!(dry.resumed_from, None);
    let status: String = sqlx::query_scalar("SELECT status::text FROM job_runs WHERE id = $1").bind(dead.id).fetch_one(db.pool()).await.expect("status");
    assert_eq!(status, "running", "a dry run does not take over a real run");

    let real = cxr_backup::export::run_backup(&db, &store, &cxr_backup::export::BackupOptions { dry_run: false, ..options }).await.expect("real run");
    assert_eq!(real.resumed_from, Some(dead.id));
    assert_eq!(real.rows["studies"], 3);
}

#[tokio::test]
async fn a_run_out_of_time_hands_over_and_the_next_runs_finish_its_window() {
    let stack = LocalStack::get();
    let db = stack.fresh_database().await;
    let store = stack.fresh_bucket().await;
    seed(&db, 25, 1).await.expect("seed");
    // A budget spent at once: each run writes one chunk, then hands over.
    let options = cxr_backup::export::BackupOptions { prefix: "rds-backups".into(), chunk_studies: 10, dry_run: false, time_budget: Some(Duration::ZERO) };
    let mut reports = Vec::new();
    loop {
        let report = cxr_backup::export::run_backup(&db, &store, &options).await.expect("run");
        let complete = report.complete;
        reports.push(report);
        if complete {
            break;
        }
        assert!(reports.len() < 10, "never completed");
        assert!(manifests(&store, "rds-backups").await.expect("list").is_empty(), "no manifest before the window is done");
    }
    // Three chunks of studies; the last run also writes the label tables and the manifest.
    assert_eq!(reports.len(), 3);
    assert_eq!(reports.iter().map(|r| r.resumed_from.is_some()).collect::<Vec<_>>(), [false, true, true]);
    assert_eq!(reports[2].rows["studies"], 25, "the checkpoint carries the totals across runs");
    let statuses: Vec<String> = sqlx::query_scalar("SELECT status::text FROM job_runs ORDER BY id").fetch_all(db.pool()).await.expect("runs");
    assert_eq!(statuses, ["handed_over", "handed_over", "succeeded"]);

    let restored = stack.fresh_database().await;
    restore(&restored, &store, "rds-backups").await.expect("restore");
    for table in ["studies", "inference_runs", "findings", "annotations"] {
        assert_eq!(table_fingerprint(&restored, table, "id").await, table_fingerprint(&db, table, "id").await, "{table}");
    }
    // Nothing left to resume: the next run starts a new, empty window.
    let next = cxr_backup::export::run_backup(&db, &store, &options).await.expect("next");
    assert_eq!((next.complete, next.resumed_from, next.rows["studies"]), (true, None, 0));
}
