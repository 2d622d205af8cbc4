//! The whole upload path, as a clinician's app drives it, across the
//! functions: the API creates a study and a presigned URL, the image is
//! PUT to S3 (s3s-fs), the local relay delivers S3's ObjectCreated event to
//! the `infer` handler, which runs the real model server (CPU, generated
//! DenseNet-121 weights) through the SageMaker runtime client; the app polls
//! the result, adds annotations, lists; another owner sees none of it.
//! Everything runs in this process on random ports, against the local
//! stack (PostgreSQL, s3s-fs, dynalite).

mod common;

use std::time::Duration;

use common::{ALICE, BOB, Platform, put, sample_image};
use cxr_coco_export::deidentify::{UidKey, deidentify};
use cxr_coco_export::export::{ExportOptions, image_path, run_export};
use cxr_coco_export::mart::DataMart;
use cxr_platform::domain::MediaType;
use cxr_platform::testing::{LocalStack, call};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_goes_from_upload_to_findings_and_annotations() {
    let platform = Platform::start().await;
    let api = platform.api.clone();

    // 1. Create a study for the sample image.
    let image = sample_image();
    let (id, created) = platform.create_png_study(&image).await;

    // 2. Upload through the presigned URL, with exactly the signed headers.
    let upload = &created["upload"];
    assert_eq!(upload["kind"], "single");
    let put = put(upload, image.clone()).await;
    assert!(put.status().is_success(), "{}", put.text().await.unwrap_or_default());

    // 3. Poll until the S3 event has been delivered and the model answered.
    let study = platform.wait_done(&id).await;
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

    platform.stop().await;
}

/// A second PUT to a study's upload URL after inference (the URL still
/// valid) is refused, and neither the image the API hands out nor the one
/// the COCO export writes changes: they stay the image that was analysed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analysed_original_cannot_be_replaced_through_its_upload_url() {
    let platform = Platform::start().await;
    let api = platform.api.clone();
    let image = sample_image();
    let (id, created) = platform.create_png_study(&image).await;
    let first = put(&created["upload"], image.clone()).await;
    assert!(first.status().is_success(), "{}", first.text().await.unwrap_or_default());
    let analysed = platform.wait_done(&id).await;

    // Another image of the same length (the length is signed), same URL.
    let mut other = image.clone();
    other[image.len() / 2..].reverse();
    let second = put(&created["upload"], other).await;
    assert_eq!(second.status(), 412, "S3 refuses to replace the original");
    assert!(second.text().await.unwrap_or_default().contains("PreconditionFailed"), "a clear answer for the client");

    tokio::time::sleep(Duration::from_millis(600)).await; // past a relay pass
    let (status, study) = call(reqwest::Method::GET, &format!("{api}/studies/{id}"), Some(ALICE), None).await;
    assert_eq!(status, 200);
    assert_eq!((&study["status"], &study["findings"]), (&analysed["status"], &analysed["findings"]));
    let served = reqwest::get(study["image_url"].as_str().expect("image url")).await.expect("image").bytes().await.expect("bytes");
    assert_eq!(served.as_ref(), image.as_slice(), "image_url still returns the analysed image");

    // The COCO export (of annotated studies) writes the analysed image.
    let (status, _) = call(reqwest::Method::POST, &format!("{api}/studies/{id}/annotations"), Some(ALICE), Some(json!({"label": "Cardiomegaly"}))).await;
    assert_eq!(status, 201);
    let mart_dir = tempfile::tempdir().expect("temp dir");
    let mart = DataMart::Local { root: mart_dir.path().to_owned() };
    let key = UidKey::new("e2e-deidentify-secret");
    let report = run_export(
        &platform.db,
        &LocalStack::get().s3_client(),
        &mart,
        &key,
        &ExportOptions { chunk_studies: 10, validation_percent: 0, include_model_boxes: false, model_score_threshold: 0.5, dry_run: false, time_budget: None },
    )
    .await
    .expect("export");
    assert_eq!(report.exported, 1, "{report:?}");
    let row_id: i64 = sqlx::query_scalar("SELECT id FROM studies").fetch_one(platform.db.pool()).await.expect("study row");
    let exported = std::fs::read(mart_dir.path().join(image_path(row_id, MediaType::Png))).expect("exported image");
    assert_eq!(exported, deidentify(MediaType::Png, &image, &key).expect("de-identified"), "the export holds the analysed image");
    platform.stop().await;
}
