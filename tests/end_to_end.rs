//! The whole upload path, as a clinician's app drives it, across the
//! functions: the API creates a study and a presigned URL, the image is
//! PUT to S3 (s3s-fs), the local relay delivers S3's ObjectCreated event to
//! the `infer` handler, which runs the real model server (CPU, generated
//! DenseNet-121 weights) through the SageMaker runtime client; the app polls
//! the result, adds annotations, lists; another owner sees none of it.
//! Everything runs in this process on random ports, against the local
//! stack (PostgreSQL, s3s-fs, dynalite).

use std::time::{Duration, Instant};

use cxr_api::app::{AppState, router};
use cxr_api::config::ApiSettings;
use cxr_infer::local_relay::LocalRelay;
use cxr_infer::{InferHandler, InferSettings};
use cxr_platform::domain::Owner;
use cxr_platform::storage::results::ResultStore;
use cxr_platform::testing::{LocalStack, call, serve};
use serde_json::json;

const ALICE: &str = "e2e-alice-token-0123456789";
const BOB: &str = "e2e-bob-token-0123456789ab";

fn runtime_client(endpoint: &str) -> aws_sdk_sagemakerruntime::Client {
    aws_sdk_sagemakerruntime::Client::new(&LocalStack::get().sdk_config_at(endpoint))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_goes_from_upload_to_findings_and_annotations() {
    let stack = LocalStack::get();
    let model_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("generated-densenet121-xrv");
    let endpoint = cxr_model_server::in_process::serve_generated("densenet121-xrv", &model_dir).await.expect("model server");

    // Storage shared by the API and the inference handler, as in AWS.
    let db = stack.fresh_database().await;
    let images = stack.fresh_bucket().await;
    let results = ResultStore::new(stack.fresh_table().await);

    let tokens = [(ALICE, "alice"), (BOB, "bob")].into_iter().map(|(t, o)| (t.to_owned(), Owner::new(o).expect("owner"))).collect();
    let state = AppState::new(db.clone(), images.clone(), results.clone(), runtime_client(&endpoint), ApiSettings::for_tests(tokens, "cxr-e2e"));
    let api = format!("{}/v1", serve(router(state)).await);

    // The S3-triggered function, fed by the local relay (s3s-fs sends no
    // notifications).
    let handler = InferHandler::new(db.clone(), results.clone(), stack.s3_client(), runtime_client(&endpoint), InferSettings::for_endpoint("cxr-e2e"));
    let relay_images = images.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(async move {
        LocalRelay::new(&handler, relay_images)
            .run(Duration::from_millis(200), async {
                let _ = stopped.await;
            })
            .await;
    });

    // 1. Create a study for the sample image.
    let image = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../events/images/synthetic-chest.png")).expect("sample image");
    let (status, created) =
        call(reqwest::Method::POST, &format!("{api}/studies"), Some(ALICE), Some(json!({"content_type": "image/png", "content_length": image.len()}))).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();

    // 2. Upload through the presigned URL, with exactly the signed headers.
    let upload = &created["upload"];
    assert_eq!(upload["kind"], "single");
    let mut put = reqwest::Client::new().put(upload["url"].as_str().expect("url"));
    for header in upload["headers"].as_array().expect("headers") {
        put = put.header(header[0].as_str().expect("name"), header[1].as_str().expect("value"));
    }
    let put = put.body(image.clone()).send().await.expect("PUT");
    assert!(put.status().is_success(), "{}", put.text().await.unwrap_or_default());

    // 3. Poll until the S3 event has been delivered and the model answered.
    let started = Instant::now();
    let study = loop {
        let (status, study) = call(reqwest::Method::GET, &format!("{api}/studies/{id}"), Some(ALICE), None).await;
        assert_eq!(status, 200, "{study}");
        match study["status"].as_str() {
            Some("done") => break study,
            Some("failed") => panic!("the study failed: {study}"),
            _ => {}
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no result after 2 minutes: {study}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!((study["width"].as_u64(), study["height"].as_u64()), (Some(512), Some(512)));
    assert_eq!(study["model"]["name"], "densenet121-xrv-generated");
    let findings = study["findings"].as_array().expect("findings");
    assert_eq!(findings.iter().filter(|f| f["source"] == "model").count(), 18, "one probability per label");
    for boxed in findings.iter().filter(|f| f["source"] == "cam") {
        let b = &boxed["box"];
        let right = b["x_min"].as_f64().expect("x") + b["width"].as_f64().expect("w");
        let bottom = b["y_min"].as_f64().expect("y") + b["height"].as_f64().expect("h");
        assert!(right <= 512.0 && bottom <= 512.0, "CAM box inside the image: {b}");
    }
    let heatmap = reqwest::get(study["heatmap_url"].as_str().expect("heatmap url")).await.expect("heatmap").bytes().await.expect("bytes");
    assert!(heatmap.starts_with(b"\x89PNG"));
    let original = reqwest::get(study["image_url"].as_str().expect("image url")).await.expect("image").bytes().await.expect("bytes");
    assert_eq!(original.as_ref(), image.as_slice());
    let preview = reqwest::get(study["preview_url"].as_str().expect("preview url")).await.expect("preview").bytes().await.expect("bytes");
    assert!(preview.starts_with(b"\x89PNG"), "a PNG the browser can show");

    // 4. A radiologist annotates.
    let annotations = format!("{api}/studies/{id}/annotations");
    let (status, annotation) = call(
        reqwest::Method::POST,
        &annotations,
        Some(ALICE),
        Some(json!({"label": "Cardiomegaly", "box": {"x_min": 220, "y_min": 270, "width": 140, "height": 120}})),
    )
    .await;
    assert_eq!(status, 201, "{annotation}");
    let (status, outside) = call(
        reqwest::Method::POST,
        &annotations,
        Some(ALICE),
        Some(json!({"label": "Nodule/Mass", "box": {"x_min": 500, "y_min": 0, "width": 40, "height": 10}})),
    )
    .await;
    assert_eq!(status, 422, "{outside}");
    let (status, list) = call(reqwest::Method::GET, &annotations, Some(ALICE), None).await;
    assert_eq!((status, list.as_array().map(Vec::len)), (200, Some(1)));

    // 5. Listing: the study is there, found by status and by its annotation.
    for query in ["", "?status=done", "?label=Cardiomegaly"] {
        let (status, page) = call(reqwest::Method::GET, &format!("{api}/studies{query}"), Some(ALICE), None).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["studies"][0]["id"].as_str(), Some(id.as_str()), "{query}");
    }

    // 6. Another owner sees nothing of it.
    let (status, _) = call(reqwest::Method::GET, &format!("{api}/studies/{id}"), Some(BOB), None).await;
    assert_eq!(status, 404);
    let (status, _) = call(reqwest::Method::GET, &annotations, Some(BOB), None).await;
    assert_eq!(status, 404);
    let (status, _) = call(reqwest::Method::POST, &annotations, Some(BOB), Some(json!({"label": "ILD"}))).await;
    assert_eq!(status, 404);
    let (_, page) = call(reqwest::Method::GET, &format!("{api}/studies"), Some(BOB), None).await;
    assert_eq!(page["studies"].as_array().map(Vec::len), Some(0));

    let _ = stop.send(());
    relay.await.expect("relay stopped");
}
