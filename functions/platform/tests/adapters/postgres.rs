//! The PostgreSQL adapter and schema against the local PostgreSQL 15.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cxr_platform::config::PostgresSettings;
use cxr_platform::domain::{LabelSets, MediaType, ObjectKey, Owner, PixelBox, Sha256Digest, StudyStatus};
use cxr_platform::storage::postgres::studies::{FindingSource, ImageFacts, NewAnnotation, NewFinding, NewInferenceRun, NewStudy};
use cxr_platform::storage::postgres::{Database, DbError, MIGRATOR};
use cxr_platform::testing::{LocalStack, closed_port};

fn owner(name: &str) -> Owner {
    Owner::new(name).expect("valid owner")
}

async fn new_study(db: &Database, who: &str) -> cxr_platform::storage::postgres::studies::StudyRecord {
    db.create_study(&NewStudy { owner: owner(who), s3_bucket: "cxr-images".into(), media_type: MediaType::Png }).await.expect("create study")
}

fn facts() -> ImageFacts {
    ImageFacts {
        byte_size: 1234,
        sha256: Sha256Digest::of(b"image"),
        width: 2048,
        height: 2500,
        bit_depth: 16,
        modality: Some("DX".into()),
        dicom: Some(serde_json::json!({"Modality": "DX", "PatientID": "ANON"})),
    }
}

#[tokio::test]
async fn migrations_are_idempotent_and_label_sets_are_synced() {
    let db = LocalStack::get().fresh_database().await;
    db.migrate().await.expect("second run is a no-op");
    let expected = MIGRATOR.iter().map(|m| m.version).max();
    assert_eq!(db.applied_migration_version().await.expect("version"), expected);

    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT label_set, count(*) FROM labels GROUP BY label_set ORDER BY label_set").fetch_all(db.pool()).await.expect("count labels");
    assert_eq!(counts, [("torchxrayvision-all".to_owned(), 18), ("vinbigdata".to_owned(), 14)]);
    let first: String =
        sqlx::query_scalar("SELECT name FROM labels WHERE label_set = $1 AND position = 0").bind("vinbigdata").fetch_one(db.pool()).await.expect("label 0");
    assert_eq!(first, LabelSets::builtin().vinbigdata().labels[0]);
}

#[tokio::test]
async fn label_sync_renumbers_and_keeps_labels_in_use() {
    let db = LocalStack::get().fresh_database().await;
    let study = new_study(&db, "alice").await;
    let annotation = NewAnnotation { label_set: "vinbigdata".into(), label: "ILD".into(), bbox: None, author: owner("rad") };
    db.add_annotation(study.row_id, &annotation).await.expect("annotate");

    // A new version of the set: reordered, "ILD" dropped, a label added.
    let json = r#"{"label_sets":[{"name":"vinbigdata","description":"v2","labels":["Atelectasis","Aortic enlargement","New thing"]}]}"#;
    db.sync_label_sets(&LabelSets::parse(json).expect("valid")).await.expect("sync");
    let rows: Vec<(String, i16)> = sqlx::query_as("SELECT name, position FROM labels WHERE label_set = 'vinbigdata' AND position < 3 ORDER BY position")
        .fetch_all(db.pool())
        .await
        .expect("labels");
    assert_eq!(rows, [("Atelectasis".into(), 0), ("Aortic enlargement".into(), 1), ("New thing".into(), 2)]);
    let ild: i64 = sqlx::query_scalar("SELECT count(*) FROM labels WHERE label_set = 'vinbigdata' AND name = 'ILD'").fetch_one(db.pool()).await.expect("count");
    assert_eq!(ild, 1, "a label that annotations use is kept");
}

#[tokio::test]
async fn study_lifecycle_is_owner_scoped() {
    let db = LocalStack::get().fresh_database().await;
    let study = new_study(&db, "alice").await;
    assert_eq!(study.status, StudyStatus::Created);
    assert_eq!(study.s3_key.as_str(), format!("studies/{}/original.png", study.id));

    assert_eq!(db.find_study(&owner("alice"), study.id).await.expect("find").as_ref(), Some(&study));
    assert_eq!(db.find_study(&owner("mallory"), study.id).await.expect("find"), None, "other owners see nothing");
    let by_object = db.find_study_by_object("cxr-images", study.s3_key.as_str()).await.expect("find").expect("exists");
    assert_eq!(by_object.id, study.id);

    let uploaded = db.record_upload(study.row_id, &facts()).await.expect("upload");
    assert_eq!(uploaded.status, StudyStatus::Uploaded);
    assert_eq!(uploaded.sha256, Some(Sha256Digest::of(b"image")));
    assert_eq!((uploaded.width, uploaded.height, uploaded.bit_depth), (Some(2048), Some(2500), Some(16)));
    assert!(uploaded.updated_at >= study.updated_at);

    db.set_study_status(study.row_id, StudyStatus::Failed, Some("model endpoint unavailable")).await.expect("fail");
    let failed = db.find_study(&owner("alice"), study.id).await.expect("find").expect("exists");
    assert_eq!((failed.status, failed.failure.as_deref()), (StudyStatus::Failed, Some("model endpoint unavailable")));
    assert!(matches!(db.set_study_status(i64::MAX, StudyStatus::Done, None).await, Err(DbError::NotFound)));
}

#[tokio::test]
async fn an_inference_is_stored_whole_or_not_at_all() {
    let db = LocalStack::get().fresh_database().await;
    let study = new_study(&db, "alice").await;
    db.record_upload(study.row_id, &facts()).await.expect("upload");
    let run = NewInferenceRun {
        model_name: "densenet121-res224-all".into(),
        model_version: "1".into(),
        thresholds: BTreeMap::from([("Cardiomegaly".into(), 0.5)]),
        timings_ms: BTreeMap::from([("infer".into(), 12.5)]),
        heatmap_key: Some(ObjectKey::new("heatmaps/example.png").expect("key")),
        preview_key: Some(ObjectKey::new("previews/example.png").expect("key")),
        model_trained: Some(false),
    };
    let findings = vec![
        NewFinding::new("Cardiomegaly", 0.91, None, FindingSource::Model).expect("finding"),
        NewFinding::new("Cardiomegaly", 0.91, Some(PixelBox::new(100.0, 200.0, 300.0, 250.0).expect("box")), FindingSource::Cam).expect("finding"),
        NewFinding::new("Effusion", 0.12, None, FindingSource::Model).expect("finding"),
    ];
    assert!(NewFinding::new("x", 1.5, None, FindingSource::Model).is_err());

    // One bad finding (a label longer than the schema allows) rolls back all.
    let mut bad = findings.clone();
    bad.push(NewFinding::new("L".repeat(200), 0.5, None, FindingSource::Model).expect("finding"));
    match db.record_inference(study.row_id, &run, &bad).await {
        Err(DbError::CheckViolation { constraint }) => {
            assert!(constraint.contains("findings"), "{constraint}")
        }
        other => panic!("expected a check violation, got {other:?}"),
    }
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM inference_runs").fetch_one(db.pool()).await.expect("count");
    assert_eq!(runs, 0, "the run row was rolled back with the findings");
    let status = db.find_study(&owner("alice"), study.id).await.expect("find").expect("exists").status;
    assert_eq!(status, StudyStatus::Uploaded);

    let run_id = db.record_inference(study.row_id, &run, &findings).await.expect("record");
    let latest = db.latest_inference(study.row_id).await.expect("read").expect("a run");
    assert_eq!(latest.id, run_id);
    assert_eq!(latest.thresholds, run.thresholds);
    assert_eq!(latest.timings_ms, run.timings_ms);
    assert_eq!(latest.heatmap_key, run.heatmap_key);
    let stored = db.find_study(&study.owner, study.id).await.expect("find").expect("study");
    assert_eq!(stored.preview_key, run.preview_key, "the preview is kept on the study");
    assert_eq!(latest.model_trained, Some(false));
    // Priority: the highest positive model probability (the CAM box's score does not count).
    assert_eq!((stored.priority, stored.priority_label.as_deref()), (Some(0.91), Some("Cardiomegaly")));
    assert_eq!(latest.findings.len(), 3);
    assert_eq!(latest.findings[2].label, "Effusion");
    let cam = latest.findings.iter().find(|f| f.source == FindingSource::Cam).expect("cam finding");
    assert_eq!(cam.bbox.map(|b| b.to_coco()), Some([100.0, 200.0, 300.0, 250.0]));
    let done = db.find_study(&owner("alice"), study.id).await.expect("find").expect("exists");
    assert_eq!(done.status, StudyStatus::Done);
    // A repeated upload event does not set a finished study back.
    let redelivered = db.record_upload(study.row_id, &facts()).await.expect("redelivered event");
    assert_eq!(redelivered.status, StudyStatus::Done);
    assert!(matches!(db.record_upload(i64::MAX, &facts()).await, Err(DbError::NotFound)));

    // Deleting the study takes its runs and findings with it (no orphans).
    sqlx::query("DELETE FROM studies WHERE id = $1").bind(study.row_id).execute(db.pool()).await.expect("delete");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM findings").fetch_one(db.pool()).await.expect("count");
    assert_eq!(left, 0);
}

#[tokio::test]
async fn constraint_violations_are_typed() {
    let db = LocalStack::get().fresh_database().await;
    let study = new_study(&db, "alice").await;

    // Duplicate unique key: a second study on the same S3 object.
    let duplicate = sqlx::query("INSERT INTO studies (owner, s3_bucket, s3_key, media_type) VALUES ($1, $2, $3, $4)")
        .bind("bob")
        .bind(&study.s3_bucket)
        .bind(&study.s3_key)
        .bind("image/png")
        .execute(db.pool())
        .await
        .map_err(DbError::from);
    match duplicate {
        Err(DbError::UniqueViolation { constraint }) => {
            assert_eq!(constraint, "studies_s3_bucket_s3_key_key")
        }
        other => panic!("expected a unique violation, got {other:?}"),
    }

    // A label outside the label set is refused by the foreign key.
    let unknown = NewAnnotation { label_set: "vinbigdata".into(), label: "Pneumonia".into(), bbox: None, author: owner("rad") };
    assert!(matches!(db.add_annotation(study.row_id, &unknown).await, Err(DbError::ForeignKeyViolation { .. })));
    // An annotation on a study that does not exist, likewise.
    let known = NewAnnotation { label_set: "vinbigdata".into(), label: "Nodule/Mass".into(), bbox: None, author: owner("rad") };
    assert!(matches!(db.add_annotation(i64::MAX, &known).await, Err(DbError::ForeignKeyViolation { .. })));

    let boxed = NewAnnotation { bbox: Some(PixelBox::new(1.0, 2.0, 3.0, 4.0).expect("box")), ..known };
    let saved = db.add_annotation(study.row_id, &boxed).await.expect("annotate");
    assert_eq!(db.annotations(study.row_id).await.expect("list"), [saved]);
    let touched = db.find_study(&owner("alice"), study.id).await.expect("find").expect("exists");
    assert!(touched.updated_at > study.updated_at, "annotating bumps the study's watermark");
}

#[tokio::test]
async fn job_runs_record_watermarks_and_failures() {
    let db = LocalStack::get().fresh_database().await;
    assert_eq!(db.last_job_watermark("backup").await.expect("read"), None);
    let to = time::OffsetDateTime::now_utc();
    let run = db.start_job_run("backup", false, None, Some(to)).await.expect("start");
    db.save_job_checkpoint(&run, &serde_json::json!({"after_id": 10}), &serde_json::json!({"rows": 10})).await.expect("checkpoint");
    db.finish_job_run(&run, &serde_json::json!({"rows": 20})).await.expect("finish");
    let stored = db.last_job_watermark("backup").await.expect("read").expect("a watermark");
    assert_eq!(stored.unix_timestamp_nanos() / 1000, to.unix_timestamp_nanos() / 1000, "microsecond precision");
    assert!(matches!(db.finish_job_run(&run, &serde_json::json!({})).await, Err(DbError::NotFound)), "a run ends once");

    // Failed and dry runs never move the watermark.
    let later = to + time::Duration::hours(1);
    let failed = db.start_job_run("backup", false, Some(to), Some(later)).await.expect("start");
    db.fail_job_run(&failed, &serde_json::json!({}), "S3 unreachable").await.expect("fail");
    let dry = db.start_job_run("backup", true, Some(to), Some(later)).await.expect("start");
    db.finish_job_run(&dry, &serde_json::json!({})).await.expect("finish");
    assert_eq!(db.last_job_watermark("backup").await.expect("read"), Some(stored));
    let error: Option<String> = sqlx::query_scalar("SELECT error FROM job_runs WHERE id = $1").bind(failed.id).fetch_one(db.pool()).await.expect("read");
    assert_eq!(error.as_deref(), Some("S3 unreachable"));
}

#[tokio::test]
async fn unreachable_server_fails_fast_with_a_clear_error() {
    let settings = PostgresSettings::from_url(&format!("postgres://cxr:x@127.0.0.1:{}/cxr", closed_port()), 2, Duration::from_secs(2));
    let started = Instant::now();
    match Database::connect(&settings).await {
        Err(e @ DbError::Unavailable(_)) => assert!(e.to_string().contains("unreachable"), "{e}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn wrong_password_is_not_mistaken_for_an_outage() {
    let stack = LocalStack::get();
    let url = stack.var("DATABASE_URL").replacen(":cxr-local-password@", ":wrong@", 1);
    match Database::connect(&stack.postgres_settings(&url)).await {
        Err(e @ DbError::LoginRefused(_)) => assert!(e.to_string().contains("password authentication failed"), "{e}"),
        other => panic!("expected an authentication error, got {other:?}"),
    }
}

/// Idempotency keys: reserve, replay, mismatch, in progress; a reservation
/// abandoned for two minutes is taken over; an expired key is reusable.
#[tokio::test]
async fn idempotency_keys_reserve_replay_and_expire() {
    use cxr_platform::storage::postgres::idempotency::{Reservation, StoredResponse};
    let db = LocalStack::get().fresh_database().await;
    let alice = Owner::new("alice").expect("owner");
    let request = Sha256Digest::of(b"POST /v1/studies {...}");
    let other = Sha256Digest::of(b"POST /v1/studies {other}");
    assert_eq!(db.reserve_idempotency_key(&alice, "k1", &request).await.expect("reserve"), Reservation::Reserved);
    assert_eq!(db.reserve_idempotency_key(&alice, "k1", &request).await.expect("again"), Reservation::InProgress);
    assert_eq!(db.reserve_idempotency_key(&alice, "k1", &other).await.expect("other"), Reservation::Mismatch);
    let answer = StoredResponse { status: 201, content_type: Some("application/json".into()), body: b"{\"id\":1}".to_vec() };
    db.finish_idempotency_key(&alice, "k1", &answer).await.expect("finish");
    assert_eq!(db.reserve_idempotency_key(&alice, "k1", &request).await.expect("replay"), Reservation::Replay(answer));

    // Released (a 5xx): the retry runs again.
    assert_eq!(db.reserve_idempotency_key(&alice, "k2", &request).await.expect("reserve"), Reservation::Reserved);
    db.release_idempotency_key(&alice, "k2").await.expect("release");
    assert_eq!(db.reserve_idempotency_key(&alice, "k2", &request).await.expect("again"), Reservation::Reserved);

    // Abandoned: its request died without an answer.
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '3 minutes' WHERE key = 'k2'").execute(db.pool()).await.expect("age");
    assert_eq!(db.reserve_idempotency_key(&alice, "k2", &request).await.expect("take over"), Reservation::Reserved);

    // Expired: forgotten, the key is free for a new request.
    sqlx::query("UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'k1'").execute(db.pool()).await.expect("expire");
    assert_eq!(db.reserve_idempotency_key(&alice, "k1", &other).await.expect("reuse"), Reservation::Reserved);
}
