//! The warehouse job against the real local PostgreSQL and MongoDB-wire
//! server (SecantusDB standing in for DocumentDB).

use std::time::Duration;

use cxr_platform::jobs::{JobError, lock_key};
use cxr_platform::storage::documentdb::{DocumentCollection, Warehouse};
use cxr_platform::storage::postgres::Database;
use cxr_platform::testing::{LocalStack, kill_at_checkpoint, seed};
use cxr_warehouse::document::StudyDocument;
use cxr_warehouse::load::{LoadError, LoadOptions, run_load};
use mongodb::bson::doc;

fn options(chunk: u32) -> LoadOptions {
    LoadOptions { chunk_studies: chunk, dry_run: false, time_budget: None }
}

async fn all(collection: &DocumentCollection<StudyDocument>) -> Vec<StudyDocument> {
    collection.find(doc! {}, Some(doc! { "_id": 1 }), None).await.expect("read the collection")
}

async fn count(db: &Database, sql: &str) -> u64 {
    sqlx::query_scalar::<_, i64>(sql).fetch_one(db.pool()).await.expect("count") as u64
}

/// The collection a single, uninterrupted load from scratch produces.
async fn reference_load(db: &Database, warehouse: &Warehouse) -> Vec<StudyDocument> {
    sqlx::query("DELETE FROM job_runs WHERE job_name = 'warehouse'").execute(db.pool()).await.expect("forget runs");
    let reference = warehouse.collection::<StudyDocument>("reference");
    run_load(db, &reference, &options(1000)).await.expect("reference load");
    all(&reference).await
}

#[tokio::test]
async fn first_incremental_and_unchanged_runs() {
    let stack = LocalStack::get();
    let db = stack.fresh_database().await;
    let warehouse = stack.fresh_warehouse().await;
    let studies = warehouse.collection::<StudyDocument>("studies");
    seed(&db, 53, 3).await.expect("seed");

    let first = run_load(&db, &studies, &options(10)).await.expect("first run");
    assert_eq!((first.documents, first.inserted, first.matched, first.chunks), (53, 53, 0, 6));
    assert_eq!(first.findings, count(&db, "SELECT count(*) FROM findings").await);
    assert_eq!(first.annotations, count(&db, "SELECT count(*) FROM annotations").await);
    assert_eq!(studies.count(doc! {}).await.expect("count"), 53, "every study, with children or not");

    // The document nests the study's rows.
    let (id, public_id): (i64, uuid::Uuid) = sqlx::query_as("SELECT id, public_id FROM studies WHERE status = 'done' AND id % 4 = 0 ORDER BY id LIMIT 1")
        .fetch_one(db.pool())
        .await
        .expect("a study with annotations");
    let document = studies.get(public_id.to_string()).await.expect("get").expect("document");
    assert_eq!(document.study_id, id);
    assert_eq!(document.inference_runs.len(), 1);
    assert_eq!(document.inference_runs[0].findings.len(), 3);
    assert_eq!(document.annotations.len(), 1);
    assert_eq!(document.labels.annotated, [document.annotations[0].label.clone()]);
    assert_eq!(document.models, ["densenet121-res224-all@1"]);

    // Nothing changed: nothing rewritten.
    let unchanged = run_load(&db, &studies, &options(10)).await.expect("unchanged run");
    assert_eq!((unchanged.documents, unchanged.inserted), (0, 0));

    // An annotation on an old study and a new study: both (and only they) are loaded.
    sqlx::query("INSERT INTO annotations (study_id, label_set, label, author) VALUES ($1, 'vinbigdata', 'ILD', 'rad')")
        .bind(id)
        .execute(db.pool())
        .await
        .expect("annotate");
    seed(&db, 1, 2).await.expect("one more study");
    let incremental = run_load(&db, &studies, &options(10)).await.expect("incremental run");
    assert_eq!((incremental.documents, incremental.inserted, incremental.matched), (2, 1, 1));
    let document = studies.get(public_id.to_string()).await.expect("get").expect("document");
    assert_eq!(document.annotations.len(), 2);
    assert!(document.labels.annotated.contains(&"ILD".to_owned()));

    // Incremental runs add up to exactly what one load from scratch gives.
    assert_eq!(all(&studies).await, reference_load(&db, &warehouse).await);
}

#[tokio::test]
async fn indexes_for_label_date_and_model_version() {
    let stack = LocalStack::get();
    let db = stack.fresh_database().await;
    let warehouse = stack.fresh_warehouse().await;
    seed(&db, 2, 1).await.expect("seed");
    run_load(&db, &warehouse.collection("studies"), &options(10)).await.expect("load");
    let names =
        warehouse.client().database(warehouse.database_name()).collection::<mongodb::bson::Document>("studies").list_index_names().await.expect("list indexes");
    for name in ["labels_predicted", "labels_annotated", "created_at", "model_version"] {
        assert!(names.contains(&name.to_owned()), "{name} missing from {names:?}");
    }
}

#[tokio::test]
async fn a_failed_or_skipped_run_loses_nothing_and_a_dry_run_writes_nothing() {
    let stack = LocalStack::get();
    let db = stack.fresh_database().await;
    let warehouse = stack.fresh_warehouse().await;
    let studies = warehouse.collection::<StudyDocument>("studies");
    seed(&db, 5, 1).await.expect("seed");
    run_load(&db, &studies, &options(100)).await.expect("first run");

    // A write the warehouse refuses (a document squatting on a unique key
    // one new study needs): the run fails, says why, keeps the watermark.
    seed(&db, 4, 1).await.expect("more");
    let key: String = sqlx::query_scalar("SELECT s3_key FROM studies ORDER BY id DESC LIMIT 1").fetch_one(db.pool()).await.expect("newest study");
    let raw = warehouse.collection::<mongodb::bson::Document>("studies");
    raw.ensure_index("image_key", doc! { "image.key": 1 }, true).await.expect("unique index");
    raw.insert(&doc! { "_id": "squatter", "image": { "key": &key } }).await.expect("squatter");
    let failed = run_load(&db, &studies, &options(100)).await;
    assert!(matches!(failed, Err(LoadError::Write(_))), "{failed:?}");
    let error: Option<String> =
        sqlx::query_scalar("SELECT error FROM job_runs WHERE status = 'failed'").fetch_one(db.pool()).await.expect("failed run recorded");
    assert!(error.as_deref().is_some_and(|e| e.contains("writing the warehouse")), "{error:?}");

    // A dry run reports and writes nothing.
    let dry = run_load(&db, &studies, &LoadOptions { dry_run: true, ..options(100) }).await.expect("dry run");
    assert_eq!((dry.documents, dry.inserted), (4, 0));
    // 5 loaded before, the squatter, and the 3 new studies whose upserts
    // went through (unordered writes); the 4th waits for the next run.
    assert_eq!(studies.count(doc! {}).await.expect("count"), 9, "a dry run writes nothing");

    // Skipped schedules and the failed run: the next run catches up.
    warehouse
        .client()
        .database(warehouse.database_name())
        .collection::<mongodb::bson::Document>("studies")
        .delete_one(doc! { "_id": "squatter" })
        .await
        .expect("remove the squatter");
    seed(&db, 3, 1).await.expect("more");
    let catch_up = run_load(&db, &studies, &options(100)).await.expect("catch-up run");
    assert_eq!(catch_up.documents, 7);
    assert_eq!(studies.count(doc! {}).await.expect("count"), 12);
    assert_eq!(all(&studies).await, reference_load(&db, &warehouse).await);
}

#[tokio::test]
async fn only_one_run_at_a_time() {
    let stack = LocalStack::get();
    let db = stack.fresh_database().await;
    let warehouse = stack.fresh_warehouse().await;
    let mut holder = db.pool().acquire().await.expect("connection");
    sqlx::query("SELECT pg_advisory_lock($1)").bind(lock_key("warehouse")).execute(&mut *holder).await.expect("lock");
    let second = run_load(&db, &warehouse.collection("studies"), &options(10)).await;
    assert!(matches!(second, Err(LoadError::Job(JobError::AlreadyRunning(_)))), "{second:?}");
}

#[tokio::test]
async fn out_of_time_runs_hand_over_until_the_window_is_loaded() {
    let stack = LocalStack::get();
    let db = stack.fresh_database().await;
    let warehouse = stack.fresh_warehouse().await;
    let studies = warehouse.collection::<StudyDocument>("studies");
    seed(&db, 25, 1).await.expect("seed");
    let budget = LoadOptions { time_budget: Some(Duration::ZERO), ..options(10) };
    let mut reports = Vec::new();
    while reports.last().is_none_or(|r: &cxr_warehouse::load::LoadReport| !r.complete) {
        reports.push(run_load(&db, &studies, &budget).await.expect("run"));
        assert!(reports.len() < 10, "never completed");
    }
    assert_eq!(reports.iter().map(|r| (r.complete, r.documents)).collect::<Vec<_>>(), [(false, 10), (false, 20), (true, 25)]);
    assert_eq!(all(&studies).await, reference_load(&db, &warehouse).await);
}

fn warehouse_command(database_url: &str, warehouse: &Warehouse) -> tokio::process::Command {
    let mut command = LocalStack::get().command(env!("CARGO_BIN_EXE_warehouse"));
    command.arg("run").env("DATABASE_URL", database_url).env("DOCUMENTDB_DATABASE", warehouse.database_name()).env("WAREHOUSE_CHUNK_STUDIES", "1");
    command
}

#[tokio::test]
async fn sigkill_halfway_then_rerun_equals_an_uninterrupted_run() {
    let stack = LocalStack::get();
    let (url, db) = stack.fresh_migrated_database().await;
    seed(&db, 80, 2).await.expect("seed");
    let warehouse = stack.fresh_warehouse().await;

    let mut child = warehouse_command(&url, &warehouse).spawn().expect("spawn");
    let killed_at = kill_at_checkpoint(&db, &mut child, "chunks", 25).await;
    assert!(killed_at < 80, "killed halfway (at chunk {killed_at})");

    let status = warehouse_command(&url, &warehouse).status().await.expect("rerun");
    assert!(status.success());
    let (failed, succeeded, resumed): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'failed' AND error LIKE 'interrupted%'),
                count(*) FILTER (WHERE status = 'succeeded'),
                count(*) FILTER (WHERE resumed_by IS NOT NULL)
           FROM job_runs",
    )
    .fetch_one(db.pool())
    .await
    .expect("runs");
    assert_eq!((failed, succeeded, resumed), (1, 1, 1));
    let studies = warehouse.collection::<StudyDocument>("studies");
    assert_eq!(all(&studies).await, reference_load(&db, &warehouse).await);
}

#[tokio::test]
async fn runs_from_the_sample_scheduled_event() {
    let stack = LocalStack::get();
    let (url, db) = stack.fresh_migrated_database().await;
    seed(&db, 3, 1).await.expect("seed");
    let warehouse = stack.fresh_warehouse().await;
    let event = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/warehouse-scheduled-dry-run.json");
    let output = warehouse_command(&url, &warehouse).args(["--event", event]).output().await.expect("run");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!((report["dry_run"].as_bool(), report["documents"].as_u64()), (Some(true), Some(3)));
    assert_eq!(warehouse.collection::<StudyDocument>("studies").count(doc! {}).await.expect("count"), 0);

    let event = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/warehouse-scheduled.json");
    let output = warehouse_command(&url, &warehouse).args(["--event", event]).output().await.expect("run");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(warehouse.collection::<StudyDocument>("studies").count(doc! {}).await.expect("count"), 3);
}

#[tokio::test]
async fn edited_and_deleted_annotations_are_what_the_next_load_holds() {
    let stack = LocalStack::get();
    let db = stack.fresh_database().await;
    let warehouse = stack.fresh_warehouse().await;
    let studies = warehouse.collection::<StudyDocument>("studies");
    seed(&db, 8, 1).await.expect("seed");
    let (study, public_id): (i64, uuid::Uuid) =
        sqlx::query_as("SELECT s.id, s.public_id FROM studies s WHERE EXISTS (SELECT 1 FROM annotations a WHERE a.study_id = s.id) ORDER BY s.id LIMIT 1")
            .fetch_one(db.pool())
            .await
            .expect("annotated study");
    let rad = cxr_platform::domain::Owner::new("radiologist-2").expect("owner");
    let extra = db
        .add_annotation(
            study,
            &cxr_platform::storage::postgres::studies::NewAnnotation { label_set: "vinbigdata".into(), label: "ILD".into(), bbox: None, author: rad.clone() },
        )
        .await
        .expect("extra");
    run_load(&db, &studies, &options(10)).await.expect("first load");
    let labels = |d: &StudyDocument| d.annotations.iter().map(|a| a.label.clone()).collect::<Vec<_>>();
    let doc_of = || async { all(&studies).await.into_iter().find(|d| d.id == public_id.to_string()).expect("document") };
    assert_eq!(doc_of().await.annotations.len(), 2);

    let first: i64 = sqlx::query_scalar("SELECT min(id) FROM annotations WHERE study_id = $1").bind(study).fetch_one(db.pool()).await.expect("first");
    let change = cxr_platform::storage::postgres::studies::AnnotationChange { label: Some("Pneumothorax".into()), bbox: None };
    db.update_annotation(study, first, &change, &rad).await.expect("edit").expect("edited");
    assert!(db.delete_annotation(study, extra.id, &rad).await.expect("delete"));
    let second = run_load(&db, &studies, &options(10)).await.expect("load after edits");
    assert_eq!(second.documents, 1, "only the edited study");
    let document = doc_of().await;
    assert_eq!(labels(&document), ["Pneumothorax"]);
    assert_eq!(document, reference_load(&db, &warehouse).await.into_iter().find(|d| d.id == public_id.to_string()).expect("reference"));
}
