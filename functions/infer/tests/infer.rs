//! The upload -> inference path against the local stack (PostgreSQL, S3)
//! and the real model server (in-process, generated DenseNet-121 weights),
//! reached through the real `aws-sdk-sagemakerruntime` client.

use aws_lambda_events::s3::S3Event;
use cxr_infer::endpoint::EndpointError;
use cxr_infer::local_relay::LocalRelay;
use cxr_infer::{InferError, InferHandler, InferSettings};
use cxr_platform::domain::{MediaType, Owner, StudyStatus};
use cxr_platform::storage::dynamodb::DynamoTable;
use cxr_platform::storage::postgres::Database;
use cxr_platform::storage::postgres::studies::NewStudy;
use cxr_platform::storage::results::{ModelRef, ResultStore};
use cxr_platform::storage::s3::{ObjectKey, ObjectStore};
use cxr_platform::testing::{LocalStack, closed_port};

/// The model server (generated DenseNet-121 weights) on a random port.
async fn model_server() -> String {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("generated-densenet121-xrv");
    cxr_model_server::in_process::serve_generated("densenet121-xrv", &dir).await.expect("model server")
}

const GENERATED_MODEL: &str = "densenet121-xrv-generated";

fn handler(db: Database, results: &DynamoTable, endpoint: &str, model: Option<ModelRef>) -> InferHandler {
    let settings = InferSettings { model, ..InferSettings::for_endpoint("cxr-densenet121") };
    handler_with(db, results, endpoint, settings)
}

fn handler_with(db: Database, results: &DynamoTable, endpoint: &str, settings: InferSettings) -> InferHandler {
    InferHandler::new(db, ResultStore::new(results.clone()), LocalStack::get().s3_client(), sagemaker_client(endpoint), settings)
}

/// The sample event, pointed at this bucket and key.
fn event(bucket: &str, key: impl AsRef<str>) -> S3Event {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/s3-object-created.json")).expect("sample event");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    json["Records"][0]["s3"]["bucket"]["name"] = bucket.into();
    json["Records"][0]["s3"]["object"]["key"] = key.as_ref().into();
    serde_json::from_value(json).expect("an S3 event")
}

async fn upload(store: &ObjectStore, db: &Database, media_type: MediaType, body: Vec<u8>) -> cxr_platform::storage::postgres::studies::StudyRecord {
    let study =
        db.create_study(&NewStudy { owner: Owner::new("alice").expect("owner"), s3_bucket: store.bucket().to_owned(), media_type }).await.expect("study");
    store.put(&study.s3_key, body, media_type.as_str()).await.expect("upload");
    study
}

fn png() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let image = image::DynamicImage::ImageLuma8(image::ImageBuffer::from_fn(300, 260, |x, y| image::Luma([((x * 5 + y * 3) % 256) as u8])));
    image.write_to(&mut out, image::ImageFormat::Png).expect("png");
    out.into_inner()
}

#[tokio::test]
async fn an_upload_event_runs_the_model_and_stores_findings_once() {
    let stack = LocalStack::get();
    let db = stack.fresh_database().await;
    let store = stack.fresh_bucket().await;
    let table = stack.fresh_table().await;
    let handler = handler(db.clone(), &table, &model_server().await, None);

    let study = upload(&store, &db, MediaType::Png, png()).await;
    let report = handler.handle(&event(store.bucket(), &study.s3_key)).await.expect("handled");
    assert_eq!((report.done, report.cached, report.failed, report.ignored), (1, 0, 0, 0));
    let stored = db.find_study(&study.owner, study.id).await.expect("find").expect("study");
    assert_eq!((stored.status, stored.width, stored.height), (StudyStatus::Done, Some(300), Some(260)));
    let run = db.latest_inference(study.row_id).await.expect("run").expect("a run");
    assert_eq!(run.model_name, GENERATED_MODEL);
    assert!(run.findings.len() >= 18, "18 labels (and CAM boxes): {}", run.findings.len());

    // The heatmap is in S3 under its content-addressed key, a PNG.
    let heatmap = run.heatmap_key.as_ref().map(ObjectKey::as_str).expect("a heatmap key");
    assert!(heatmap.starts_with(&format!("heatmaps/{}/", stored.sha256.expect("sha").to_hex())), "{heatmap}");
    let png_bytes = store.get(&ObjectKey::new(heatmap).expect("key"), 1 << 20).await.expect("heatmap object").bytes;
    assert!(png_bytes.starts_with(b"\x89PNG"), "a PNG");

    // So is the preview, by content.
    let preview = stored.preview_key.as_ref().map(ObjectKey::as_str).expect("a preview key");
    assert_eq!(preview, format!("previews/{}.png", stored.sha256.expect("sha").to_hex()));
    let preview_png = store.get(&ObjectKey::new(preview).expect("key"), 1 << 22).await.expect("preview object").bytes;
    assert!(preview_png.starts_with(b"\x89PNG"), "a PNG");

    // DynamoDB holds the hot copy and the cache entry.
    let results = ResultStore::new(table.clone());
    let snapshot = results.snapshot(study.id).await.expect("read").expect("hot copy");
    assert_eq!(
        (snapshot.status, snapshot.findings.len(), snapshot.heatmap_key.as_ref().map(ObjectKey::as_str)),
        (StudyStatus::Done, run.findings.len(), Some(heatmap))
    );
    let model = ModelRef { name: GENERATED_MODEL.into(), version: "0".into() };
    let cached = results.cached(&stored.sha256.expect("sha"), &model).await.expect("read").expect("cache entry");
    assert_eq!(cached.findings, run.findings);

    // S3 may deliver the same event again: nothing changes.
    let again = handler.handle(&event(store.bucket(), &study.s3_key)).await.expect("handled");
    assert_eq!(again.ignored, 1);
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM inference_runs").fetch_one(db.pool()).await.expect("count");
    assert_eq!(runs, 1);

    // An object of no study is ignored.
    let stray = handler.handle(&event(store.bucket(), "elsewhere/file.png")).await.expect("handled");
    assert_eq!(stray.ignored, 1);
}

#[tokio::test]
async fn bad_uploads_fail_the_study_with_a_reason() {
    let stack = LocalStack::get();
    let db = stack.fresh_database().await;
    let store = stack.fresh_bucket().await;
    let handler = handler(db.clone(), &stack.fresh_table().await, &model_server().await, None);
    // Declared DICOM, uploaded PNG.
    let study = upload(&store, &db, MediaType::Dicom, png()).await;
    let report = handler.handle(&event(store.bucket(), &study.s3_key)).await.expect("handled");
    assert_eq!(report.failed, 1);
    let stored = db.find_study(&study.owner, study.id).await.expect("find").expect("study");
    assert_eq!(stored.status, StudyStatus::Failed);
    assert!(stored.failure.as_deref().is_some_and(|f| f.contains("image/png")), "{:?}", stored.failure);
}

#[tokio::test]
async fn an_unavailable_endpoint_leaves_the_study_retryable() {
    let stack = LocalStack::get();
    let db = stack.fresh_database().await;
    let store = stack.fresh_bucket().await;
    let table = stack.fresh_table().await;
    let down = handler(db.clone(), &table, &format!("http://127.0.0.1:{}", closed_port()), None);
    let study = upload(&store, &db, MediaType::Png, png()).await;
    let result = down.handle(&event(store.bucket(), &study.s3_key)).await;
    assert!(matches!(result, Err(InferError::Endpoint(EndpointError::Unavailable(_)))), "{result:?}");
    let stored = db.find_study(&study.owner, study.id).await.expect("find").expect("study");
    assert_eq!(stored.status, StudyStatus::Uploaded, "retryable, not failed");

    // The retry, with the endpoint back, finishes it.
    let up = handler(db.clone(), &table, &model_server().await, None);
    let report = up.handle(&event(store.bucket(), &study.s3_key)).await.expect("retry");
    assert_eq!(report.done, 1);
}

/// The same image is never inferred twice by the same model: the second
/// study is answered from the cache while the endpoint is down. And when
/// the DynamoDB writes of the first result were lost (table missing), the
/// cache is rebuilt from PostgreSQL, the system of record.
#[tokio::test]
async fn the_same_image_is_inferred_once_even_when_dynamodb_lost_the_result() {
    let stack = LocalStack::get();
    let db = stack.fresh_database().await;
    let store = stack.fresh_bucket().await;
    let table = stack.fresh_table().await;
    let model = ModelRef { name: GENERATED_MODEL.into(), version: "0".into() };
    let image = png();

    // First result: DynamoDB writes fail (no such table), PostgreSQL commits.
    let lost = DynamoTable::from_client(stack.dynamodb_client(), cxr_platform::testing::unique_name("missing"));
    let first = upload(&store, &db, MediaType::Png, image.clone()).await;
    let report = handler(db.clone(), &lost, &model_server().await, None).handle(&event(store.bucket(), &first.s3_key)).await.expect("handled");
    assert_eq!((report.done, report.cached), (1, 0));
    let sha = db.find_study(&first.owner, first.id).await.expect("find").expect("study").sha256.expect("sha");
    let results = ResultStore::new(table.clone());
    assert!(results.cached(&sha, &model).await.expect("read").is_none());

    // Second study, same bytes, endpoint down: answered from PostgreSQL,
    // and the DynamoDB cache entry is repaired on the way.
    let down = handler(db.clone(), &table, &format!("http://127.0.0.1:{}", closed_port()), Some(model.clone()));
    let second = upload(&store, &db, MediaType::Png, image.clone()).await;
    let report = down.handle(&event(store.bucket(), &second.s3_key)).await.expect("answered from the cache");
    assert_eq!((report.done, report.cached), (1, 1));
    let a = db.latest_inference(first.row_id).await.expect("run").expect("run");
    let b = db.latest_inference(second.row_id).await.expect("run").expect("run");
    assert_eq!((&a.findings, &a.heatmap_key), (&b.findings, &b.heatmap_key));
    assert!(results.cached(&sha, &model).await.expect("read").is_some(), "cache repaired");

    // Third, served by DynamoDB alone.
    let third = upload(&store, &db, MediaType::Png, image).await;
    let report = down.handle(&event(store.bucket(), &third.s3_key)).await.expect("answered from the cache");
    assert_eq!((report.done, report.cached), (1, 1));
}

/// Locally nothing sends S3 events: the relay notices the upload and
/// delivers the event S3 would have sent; a study whose image has not
/// arrived is left alone; a failed delivery is delivered again.
#[tokio::test]
async fn the_local_relay_delivers_s3_events_for_uploads() {
    let stack = LocalStack::get();
    let db = stack.fresh_database().await;
    let store = stack.fresh_bucket().await;
    let table = stack.fresh_table().await;
    let owner = Owner::new("alice").expect("owner");
    let waiting = db.create_study(&NewStudy { owner: owner.clone(), s3_bucket: store.bucket().to_owned(), media_type: MediaType::Png }).await.expect("study");
    let uploaded = upload(&store, &db, MediaType::Png, png()).await;

    let down = handler(db.clone(), &table, &format!("http://127.0.0.1:{}", closed_port()), None);
    let mut relay = LocalRelay::new(&down, store.clone());
    relay.retry_after = std::time::Duration::ZERO;
    let report = relay.sweep().await.expect("sweep");
    assert_eq!((report.delivered, report.retrying), (1, 1), "one upload, endpoint down");
    assert_eq!(db.find_study(&owner, uploaded.id).await.expect("find").expect("study").status, StudyStatus::Uploaded);

    let up = handler(db.clone(), &table, &model_server().await, None);
    let mut relay = LocalRelay::new(&up, store.clone());
    let report = relay.sweep().await.expect("sweep");
    assert_eq!((report.delivered, report.retrying), (1, 0));
    assert_eq!(db.find_study(&owner, uploaded.id).await.expect("find").expect("study").status, StudyStatus::Done);
    assert_eq!(db.find_study(&owner, waiting.id).await.expect("find").expect("study").status, StudyStatus::Created);
    assert_eq!(relay.sweep().await.expect("sweep").delivered, 0, "nothing left to deliver");
}

/// A study another invocation is processing (within its lease) is not
/// processed twice: the event fails, to be retried.
#[tokio::test]
async fn a_study_in_flight_elsewhere_is_retried_not_processed_twice() {
    let stack = LocalStack::get();
    let db = stack.fresh_database().await;
    let store = stack.fresh_bucket().await;
    let table = stack.fresh_table().await;
    let study = upload(&store, &db, MediaType::Png, png()).await;
    let facts = cxr_platform::imaging::describe(&png(), MediaType::Png).expect("facts");
    db.record_upload(study.row_id, &facts).await.expect("uploaded");
    assert!(db.claim_for_inference(study.row_id, std::time::Duration::from_secs(45)).await.expect("claim").is_some());
    let other = handler(db.clone(), &table, &model_server().await, None);
    let result = other.handle(&event(store.bucket(), &study.s3_key)).await;
    assert!(matches!(result, Err(InferError::InFlight)), "{result:?}");
    // A claim older than the lease is taken over.
    let mut settings_short = handler(db.clone(), &table, &model_server().await, None);
    settings_short.settings.lease = std::time::Duration::ZERO;
    let report = settings_short.handle(&event(store.bucket(), &study.s3_key)).await.expect("taken over");
    assert_eq!(report.done, 1);
}

/// Images over SageMaker's 6 MB request limit are sent by reference: the
/// endpoint gets `{"s3_uri": ...}` and the model server reads the object.
#[tokio::test]
async fn large_images_are_sent_to_the_endpoint_by_s3_reference() {
    let stack = LocalStack::get();
    let db = stack.fresh_database().await;
    let store = stack.fresh_bucket().await;
    let table = stack.fresh_table().await;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("generated-densenet121-xrv");
    let reader = cxr_model_server::image_source::S3Images::with_client(stack.s3_client());
    let endpoint = cxr_model_server::in_process::serve_generated_with("densenet121-xrv", &dir, reader).await.expect("model server");

    let settings = InferSettings { inline_max_bytes: 100, ..InferSettings::for_endpoint("cxr-densenet121") };
    let by_reference = handler_with(db.clone(), &table, &endpoint, settings);
    let study = upload(&store, &db, MediaType::Png, png()).await;
    let report = by_reference.handle(&event(store.bucket(), &study.s3_key)).await.expect("handled");
    assert_eq!((report.done, report.failed), (1, 0));
    let run = db.latest_inference(study.row_id).await.expect("run").expect("a run");
    assert!(run.findings.len() >= 18);

    // The model server's answers to bad references.
    let client = sagemaker_client(&endpoint);
    for body in [r#"{"s3_uri": "s3://no-such-bucket-here/x.png"}"#, r#"{"s3_uri": "not a uri"}"#, r#"{"image": 1}"#] {
        let answer = client.invoke_endpoint().endpoint_name("cxr").content_type("application/json").body(body.as_bytes().to_vec().into()).send().await;
        let status = answer.err().and_then(|e| e.raw_response().map(|r| r.status().as_u16()));
        assert_eq!(status, Some(422), "{body}");
    }
}

fn sagemaker_client(endpoint: &str) -> aws_sdk_sagemakerruntime::Client {
    aws_sdk_sagemakerruntime::Client::new(&LocalStack::get().sdk_config_at(endpoint))
}
