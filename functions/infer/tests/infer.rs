//! The upload -> inference path against the local stack (PostgreSQL, S3)
//! and the real model server (in-process, generated DenseNet-121 weights),
//! reached through the real `aws-sdk-sagemakerruntime` client.

use std::path::PathBuf;

use aws_lambda_events::s3::S3Event;
use cxr_infer::{InferError, InferHandler, InferSettings};
use cxr_platform::domain::{MediaType, Owner, StudyStatus};
use cxr_platform::storage::postgres::studies::NewStudy;
use cxr_platform::storage::s3::{ObjectKey, ObjectStore};
use cxr_platform::testing::{LocalStack, closed_port};

fn model_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("generated-densenet121-xrv");
    let manifest = cxr_model_server::generated_manifest("densenet121-xrv").expect("manifest");
    cxr_inference::models::Classifier::write_generated_once(&dir, &manifest).expect("model");
    dir
}

/// The model server on a random port; its base URL.
async fn model_server() -> String {
    let config = cxr_model_server::config::ServeConfig {
        model_dir: model_dir(),
        model_s3_uri: None,
        addr: "127.0.0.1:0".parse().expect("addr"),
        max_batch_size: 4,
        max_concurrent_requests: 16,
        max_body_bytes: 64 << 20,
        max_side: 16384,
        dtype: "f32".into(),
    };
    let (app, _thread) = cxr_model_server::build(&config).await.expect("model server");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(base.trim_start_matches("http://")).is_err() || !ready(&base).await {
        assert!(started.elapsed().as_secs() < 60, "model server not ready");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    base
}

async fn ready(base: &str) -> bool {
    // /ping through a raw HTTP/1.0 request: no HTTP client needed here.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await else { return false };
    let _ = stream.write_all(b"GET /ping HTTP/1.0\r\n\r\n").await;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

fn handler(db: cxr_platform::storage::postgres::Database, endpoint: &str) -> InferHandler {
    let stack = LocalStack::get();
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(stack.sdk_config().credentials_provider().expect("credentials"))
        .endpoint_url(endpoint)
        .build();
    InferHandler {
        db,
        s3: stack.s3_client(),
        runtime: aws_sdk_sagemakerruntime::Client::new(&sdk),
        settings: InferSettings { endpoint_name: "cxr-densenet121".into() },
    }
}

/// The sample event, pointed at this bucket and key.
fn event(bucket: &str, key: &str) -> S3Event {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/s3-object-created.json")).expect("sample event");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    json["Records"][0]["s3"]["bucket"]["name"] = bucket.into();
    json["Records"][0]["s3"]["object"]["key"] = key.into();
    serde_json::from_value(json).expect("an S3 event")
}

async fn upload(store: &ObjectStore, db: &cxr_platform::storage::postgres::Database, media_type: MediaType, body: Vec<u8>) -> cxr_platform::storage::postgres::studies::StudyRecord {
    let study = db
        .create_study(&NewStudy { owner: Owner::new("alice").expect("owner"), s3_bucket: store.bucket().to_owned(), media_type })
        .await
        .expect("study");
    store.put(&ObjectKey::new(study.s3_key.clone()).expect("key"), body, media_type.as_str()).await.expect("upload");
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
    let handler = handler(db.clone(), &model_server().await);

    let study = upload(&store, &db, MediaType::Png, png()).await;
    let report = handler.handle(&event(store.bucket(), &study.s3_key)).await.expect("handled");
    assert_eq!((report.done, report.failed, report.ignored), (1, 0, 0));
    let stored = db.find_study(&study.owner, study.id).await.expect("find").expect("study");
    assert_eq!((stored.status, stored.width, stored.height), (StudyStatus::Done, Some(300), Some(260)));
    let run = db.latest_inference(study.row_id).await.expect("run").expect("a run");
    assert_eq!(run.model_name, "densenet121-xrv-generated");
    assert!(run.findings.len() >= 18, "18 labels (and CAM boxes): {}", run.findings.len());

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
    let handler = handler(db.clone(), &model_server().await);
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
    let down = handler(db.clone(), &format!("http://127.0.0.1:{}", closed_port()));
    let study = upload(&store, &db, MediaType::Png, png()).await;
    let result = down.handle(&event(store.bucket(), &study.s3_key)).await;
    assert!(matches!(result, Err(InferError::EndpointUnavailable(_))), "{result:?}");
    let stored = db.find_study(&study.owner, study.id).await.expect("find").expect("study");
    assert_eq!(stored.status, StudyStatus::Uploaded, "retryable, not failed");

    // The retry, with the endpoint back, finishes it.
    let up = handler(db.clone(), &model_server().await);
    let report = up.handle(&event(store.bucket(), &study.s3_key)).await.expect("retry");
    assert_eq!(report.done, 1);
}
