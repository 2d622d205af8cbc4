//! The backup job against the real local PostgreSQL and S3 server.

use cxr_backup::export::{BackupError, BackupOptions, run_backup};
use cxr_backup::restore::{RestoreError, manifests, restore};
use cxr_platform::jobs::{JobError, lock_key};
use cxr_platform::storage::postgres::Database;
use cxr_platform::storage::s3::ObjectStore;
use cxr_platform::testing::{LocalStack, closed_port, seed, table_fingerprint};

const TABLES: [(&str, &str); 7] = [
    ("label_sets", "name"),
    ("labels", "label_set, name"),
    ("studies", "id"),
    ("inference_runs", "id"),
    ("findings", "id"),
    ("annotations", "id"),
    ("annotation_revisions", "id"),
];

fn options(chunk: u32) -> BackupOptions {
    BackupOptions { prefix: "rds-backups".into(), chunk_studies: chunk, dry_run: false, time_budget: None }
}

async fn assert_same_content(source: &Database, restored: &Database) {
    for (table, order) in TABLES {
        assert_eq!(table_fingerprint(restored, table, order).await, table_fingerprint(source, table, order).await, "table {table} differs after restore");
    }
}

/// A migrated database and a bucket of their own.
async fn fresh_lake() -> (Database, ObjectStore) {
    let stack = LocalStack::get();
    (stack.fresh_database().await, stack.fresh_bucket().await)
}

async fn count(db: &Database, table: &str) -> u64 {
    table_fingerprint(db, table, "1").await.0 as u64
}

#[tokio::test]
async fn first_incremental_and_unchanged_runs_restore_to_an_equal_database() {
    let stack = LocalStack::get();
    let (db, store) = fresh_lake().await;
    seed(&db, 53, 3).await.expect("seed");

    // First run: everything, in chunks of 10 studies.
    let first = run_backup(&db, &store, &options(10)).await.expect("first run");
    for table in ["studies", "inference_runs", "findings", "annotations"] {
        assert_eq!(first.rows[table], count(&db, table).await, "{table}: every row, children or not");
    }
    assert_eq!(first.rows["studies"], 53);

    // Nothing changed: no study rows again (no duplicates), label tables only.
    let unchanged = run_backup(&db, &store, &options(10)).await.expect("unchanged run");
    assert_eq!(unchanged.rows["studies"], 0);

    // Changes: an annotation on an old study, and a new study.
    let annotated: i64 = sqlx::query_scalar("SELECT min(id) FROM studies").fetch_one(db.pool()).await.expect("id");
    sqlx::query("INSERT INTO annotations (study_id, label_set, label, author) VALUES ($1, 'vinbigdata', 'ILD', 'rad')")
        .bind(annotated)
        .execute(db.pool())
        .await
        .expect("annotate");
    seed(&db, 1, 2).await.expect("one more study");
    let incremental = run_backup(&db, &store, &options(10)).await.expect("incremental run");
    assert_eq!(incremental.rows["studies"], 2, "the annotated study and the new one");

    // A radiologist edits one box and deletes another (through the
    // repository, so the history is kept): the next backup holds exactly that.
    let boxes: Vec<(i64, i64)> =
        sqlx::query_as("SELECT study_id, id FROM annotations WHERE x_min IS NOT NULL ORDER BY id LIMIT 2").fetch_all(db.pool()).await.expect("boxes");
    let rad = cxr_platform::domain::Owner::new("radiologist-1").expect("owner");
    let change = cxr_platform::storage::postgres::studies::AnnotationChange { label: Some("Nodule/Mass".into()), bbox: None };
    assert!(db.update_annotation(boxes[0].0, boxes[0].1, &change, &rad).await.expect("edit").is_some());
    assert!(db.delete_annotation(boxes[1].0, boxes[1].1, &rad).await.expect("delete"));
    let edits = run_backup(&db, &store, &options(10)).await.expect("run after edits");
    assert_eq!(edits.rows["studies"], 2);
    let revisions: i64 = sqlx::query_scalar("SELECT count(*) FROM annotation_revisions WHERE study_id = ANY($1)")
        .bind(vec![boxes[0].0, boxes[1].0])
        .fetch_one(db.pool())
        .await
        .expect("revisions");
    assert_eq!(edits.rows["annotation_revisions"], revisions as u64, "the two studies' whole history");

    assert_eq!(manifests(&store, "rds-backups").await.expect("list").len(), 4);
    let restored = stack.fresh_database().await;
    let report = restore(&restored, &store, "rds-backups").await.expect("restore");
    assert_eq!(report.backups.len(), 4);
    assert_same_content(&db, &restored).await;
    let deleted: i64 = sqlx::query_scalar("SELECT count(*) FROM annotations WHERE id = $1").bind(boxes[1].1).fetch_one(restored.pool()).await.expect("count");
    assert_eq!(deleted, 0, "the deleted box is gone from the restored database, its history kept");

    // Restoring twice into the same database is refused, not doubled.
    assert!(matches!(restore(&restored, &store, "rds-backups").await, Err(RestoreError::NotEmpty(54))));
    // New rows after a restore get fresh ids.
    seed(&restored, 1, 1).await.expect("insert after restore");
}

#[tokio::test]
async fn a_failed_or_skipped_run_loses_nothing() {
    let stack = LocalStack::get();
    let (db, store) = fresh_lake().await;
    seed(&db, 5, 1).await.expect("seed");
    run_backup(&db, &store, &options(100)).await.expect("first run");

    // A run that cannot write fails, records why, and does not move the watermark.
    seed(&db, 4, 1).await.expect("more");
    let nowhere = ObjectStore::from_client(stack.s3_client_at(&format!("http://127.0.0.1:{}", closed_port())), "backups");
    let failed = run_backup(&db, &nowhere, &options(100)).await;
    assert!(matches!(failed, Err(BackupError::Write(_))), "{failed:?}");
    let error: Option<String> =
        sqlx::query_scalar("SELECT error FROM job_runs WHERE status = 'failed'").fetch_one(db.pool()).await.expect("failed run recorded");
    assert!(error.as_deref().is_some_and(|e| e.contains("S3 is unreachable")), "{error:?}");

    // A dry run reports without writing or moving the watermark either.
    let dry = run_backup(&db, &store, &BackupOptions { dry_run: true, ..options(100) }).await.expect("dry run");
    assert_eq!(dry.rows["studies"], 4);
    assert!(dry.manifest_key.is_none());

    // Skipped schedules (the failed run, any missed ones): the next run covers them.
    seed(&db, 3, 1).await.expect("more");
    let catch_up = run_backup(&db, &store, &options(100)).await.expect("catch-up run");
    assert_eq!(catch_up.rows["studies"], 7);
    assert_eq!(manifests(&store, "rds-backups").await.expect("list").len(), 2);

    let restored = stack.fresh_database().await;
    restore(&restored, &store, "rds-backups").await.expect("restore");
    assert_same_content(&db, &restored).await;
}

#[tokio::test]
async fn only_one_run_at_a_time() {
    let (db, store) = fresh_lake().await;
    let mut holder = db.pool().acquire().await.expect("connection");
    sqlx::query("SELECT pg_advisory_lock($1)").bind(lock_key("backup")).execute(&mut *holder).await.expect("lock");
    let second = run_backup(&db, &store, &options(10)).await;
    assert!(matches!(second, Err(BackupError::Job(JobError::AlreadyRunning(_)))), "{second:?}");
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM job_runs").fetch_one(db.pool()).await.expect("count");
    assert_eq!(runs, 0, "a refused run writes nothing");
}

#[tokio::test]
async fn a_corrupted_part_is_caught_before_loading() {
    let stack = LocalStack::get();
    let (db, store) = fresh_lake().await;
    seed(&db, 5, 1).await.expect("seed");
    run_backup(&db, &store, &options(100)).await.expect("backup");
    let part = store.list("rds-backups/").await.expect("list").into_iter().find(|o| o.key.contains("/studies/")).expect("a part");
    let key = cxr_platform::storage::s3::ObjectKey::new(part.key).expect("key");
    store.put(&key, b"PAR1 not really".to_vec(), "application/vnd.apache.parquet").await.expect("overwrite");
    let restored = stack.fresh_database().await;
    assert!(matches!(restore(&restored, &store, "rds-backups").await, Err(RestoreError::Checksum { .. })));
    assert_eq!(count(&restored, "studies").await, 0, "nothing loaded");
}

#[tokio::test]
async fn purge_deletes_only_old_studies_whose_current_version_is_in_a_verified_backup() {
    use cxr_backup::purge::{PurgeError, PurgeOptions, run_purge};
    use std::time::Duration;
    let stack = LocalStack::get();
    let (db, store) = fresh_lake().await;
    seed(&db, 20, 2).await.expect("seed");
    // Ten studies are old (created 400 days ago).
    sqlx::query("UPDATE studies SET created_at = now() - interval '400 days' WHERE id <= 10").execute(db.pool()).await.expect("age");
    let year = PurgeOptions { retention: Duration::from_secs(365 * 86_400), dry_run: false };

    // Nothing backed up yet: nothing may go.
    let early = run_purge(&db, &store, "rds-backups", &year).await.expect("purge without backups");
    assert_eq!((early.candidates, early.purged, early.kept_not_backed_up), (10, 0, 10));

    run_backup(&db, &store, &options(7)).await.expect("backup");
    // One old study changes after the backup: its new version is not backed up.
    sqlx::query("INSERT INTO annotations (study_id, label_set, label, author) VALUES (3, 'vinbigdata', 'ILD', 'rad')")
        .execute(db.pool())
        .await
        .expect("annotate");
    let before_purge: Vec<(i64, String)> = {
        let mut all = Vec::new();
        for (table, order) in TABLES {
            all.push(table_fingerprint(&db, table, order).await);
        }
        all
    };

    let dry = run_purge(&db, &store, "rds-backups", &PurgeOptions { dry_run: true, ..year.clone() }).await.expect("dry run");
    assert_eq!((dry.purged, count(&db, "studies").await), (9, 20), "a dry run deletes nothing");
    let purged = run_purge(&db, &store, "rds-backups", &year).await.expect("purge");
    assert_eq!((purged.candidates, purged.purged, purged.kept_not_backed_up), (10, 9, 1));
    assert!(purged.parts_verified > 0);
    assert_eq!(count(&db, "studies").await, 11);
    let orphans: i64 =
        sqlx::query_scalar("SELECT count(*) FROM inference_runs WHERE study_id NOT IN (SELECT id FROM studies)").fetch_one(db.pool()).await.expect("orphans");
    assert_eq!(orphans, 0, "children go with their study");

    // Nothing was lost: the next backup plus the earlier one restore the
    // pre-purge database exactly.
    run_backup(&db, &store, &options(7)).await.expect("backup after purge");
    let restored = stack.fresh_database().await;
    restore(&restored, &store, "rds-backups").await.expect("restore");
    for ((table, order), expected) in TABLES.iter().zip(before_purge) {
        assert_eq!(table_fingerprint(&restored, table, order).await, expected, "{table}");
    }

    // A damaged backup: the purge refuses before deleting anything.
    let part = store.list("rds-backups/").await.expect("list").into_iter().find(|o| o.key.contains("/studies/")).expect("part");
    store.put(&cxr_platform::storage::s3::ObjectKey::new(part.key).expect("key"), b"damaged".to_vec(), "application/octet-stream").await.expect("damage");
    sqlx::query("UPDATE studies SET created_at = now() - interval '400 days'").execute(db.pool()).await.expect("age all");
    let refused = run_purge(&db, &store, "rds-backups", &year).await;
    assert!(matches!(refused, Err(PurgeError::Verify(RestoreError::Checksum { .. }))), "{refused:?}");
    assert_eq!(count(&db, "studies").await, 11);
}
