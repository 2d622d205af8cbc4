//! Predictions, result copies, idempotency, limits and the OpenAPI document,
//! through the API against the local stack and the real model server.

use std::time::Duration;

use crate::common::{ALICE, BOB, call, model_server, png, runtime_client, start_with};
use cxr_api::app::{AppState, router};
use cxr_platform::config::DynamoSettings;
use cxr_platform::storage::dynamodb::DynamoTable;
use cxr_platform::storage::results::{ModelRef, ResultStore};
use cxr_platform::testing::{LocalStack, closed_port, silent_port};
use serde_json::{Value, json};

async fn predict(base: &str, token: &str, body: Vec<u8>, key: Option<&str>) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request =
        reqwest::Client::new().post(format!("{base}/v1/predict")).bearer_auth(token).header("content-type", "application/octet-stream").body(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap_or(Value::Null))
}

async fn serve(state: AppState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    base
}

#[tokio::test]
async fn predict_records_the_study_answers_findings_and_never_infers_an_image_twice() {
    let (base, state) = start_with(Some(&model_server().await), |_| {}).await;
    let image = png(1);
    let (status, headers, study) = predict(&base, ALICE, image.clone(), None).await;
    assert_eq!(status, 201, "{study}");
    let id = study["id"].as_str().expect("id").to_owned();
    assert_eq!(headers.get("location").and_then(|v| v.to_str().ok()), Some(format!("/v1/studies/{id}").as_str()));
    assert_eq!((study["status"].as_str(), study["width"].as_u64(), study["height"].as_u64()), (Some("done"), Some(320), Some(256)));
    assert_eq!(study["model"]["name"].as_str(), Some("densenet121-xrv-generated"));
    let findings = study["findings"].as_array().expect("findings");
    assert!(findings.iter().filter(|f| f["source"] == "model").count() == 18, "{study}");

    // The heatmap and the image are readable through their presigned URLs.
    let heatmap = reqwest::get(study["heatmap_url"].as_str().expect("heatmap url")).await.expect("GET heatmap").bytes().await.expect("bytes");
    assert!(heatmap.starts_with(b"\x89PNG"), "heatmap is a PNG");
    let original = reqwest::get(study["image_url"].as_str().expect("image url")).await.expect("GET image").bytes().await.expect("bytes");
    assert_eq!(original.as_ref(), image.as_slice());

    // GET answers from the DynamoDB hot copy, the same findings.
    assert!(state.results.snapshot(id.parse().expect("id")).await.expect("read").is_some(), "hot copy written");
    let (status, read) = call(reqwest::Method::GET, &format!("{base}/v1/studies/{id}"), Some(ALICE), None).await;
    assert_eq!((status, &read["findings"]), (200, &study["findings"]));
    let (status, _) = call(reqwest::Method::GET, &format!("{base}/v1/studies/{id}"), Some(BOB), None).await;
    assert_eq!(status, 404, "another owner sees nothing, hot copy or not");

    // The same image again, through an API whose model endpoint is down:
    // answered from the result cache.
    let mut settings = crate::common::settings();
    settings.inference.model = Some(ModelRef { name: "densenet121-xrv-generated".into(), version: "0".into() });
    let down =
        AppState::new(state.db.clone(), state.images.clone(), state.results.clone(), runtime_client(&format!("http://127.0.0.1:{}", closed_port())), settings);
    let down_base = serve(down).await;
    let (status, _, again) = predict(&down_base, BOB, image, None).await;
    assert_eq!(status, 201, "{again}");
    assert_ne!(again["id"], study["id"], "a study of its own");
    assert_eq!(again["findings"], study["findings"]);
}

/// A DICOM file through predict: decoded by the model server (12-bit,
/// MONOCHROME2), its non-identifying attributes kept with the study.
#[tokio::test]
async fn predict_takes_dicom() {
    let (base, state) = start_with(Some(&model_server().await), |_| {}).await;
    let (status, _, study) = predict(&base, ALICE, cxr_inference::fixtures::dicom_file(300, 360), None).await;
    assert_eq!(status, 201, "{study}");
    assert_eq!((study["media_type"].as_str(), study["width"].as_u64(), study["height"].as_u64()), (Some("application/dicom"), Some(300), Some(360)));
    assert_eq!(study["status"].as_str(), Some("done"));
    let id = study["id"].as_str().expect("id").parse().expect("uuid");
    let stored = state.db.find_study(&cxr_platform::domain::Owner::new("alice").expect("owner"), id).await.expect("find").expect("study");
    assert_eq!((stored.modality.as_deref(), stored.bit_depth), (Some("DX"), Some(12)));
    assert!(stored.s3_key.as_str().ends_with(".dcm"), "{}", stored.s3_key);
    // The browser gets a PNG rendering of the DICOM file.
    let preview = reqwest::get(study["preview_url"].as_str().expect("preview url")).await.expect("GET preview").bytes().await.expect("bytes");
    assert!(preview.starts_with(b"\x89PNG"), "the preview is a PNG");
}

#[tokio::test]
async fn predict_refuses_bad_input_and_leaves_the_study_retryable_when_the_endpoint_is_down() {
    let (base, state) = start_with(None, |s| s.predict_max_bytes = 100_000).await;
    let (status, _, problem) = predict(&base, ALICE, Vec::new(), None).await;
    assert_eq!(status, 400, "{problem}");
    let (status, _, problem) = predict(&base, ALICE, b"GIF89a not accepted".to_vec(), None).await;
    assert_eq!(status, 415, "{problem}");
    let (status, _, problem) = predict(&base, ALICE, b"\x89PNG\r\n\x1a\ntruncated".to_vec(), None).await;
    assert_eq!(status, 422, "{problem}");
    let (status, _, problem) = predict(&base, ALICE, vec![0x89; 200_000], None).await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(problem["status"].as_u64(), Some(413), "a problem body, not axum's text");

    // Endpoint down: 503 + Retry-After naming the recorded study, which
    // stays `uploaded` for the S3-event path to finish.
    let (status, headers, problem) = predict(&base, ALICE, png(2), None).await;
    assert_eq!(status, 503, "{problem}");
    assert!(headers.contains_key("retry-after"));
    let id = problem["study_id"].as_str().expect("the study is named").to_owned();
    let (_, study) = call(reqwest::Method::GET, &format!("{base}/v1/studies/{id}"), Some(ALICE), None).await;
    assert_eq!(study["status"].as_str(), Some("uploaded"));

    // The S3 event (delivered by the local relay) finishes it once the
    // model is back.
    let stack = LocalStack::get();
    let handler = cxr_infer::InferHandler::new(
        state.db.clone(),
        state.results.clone(),
        stack.s3_client(),
        runtime_client(&model_server().await),
        cxr_infer::InferSettings::for_endpoint("cxr-densenet121"),
    );
    let mut relay = cxr_infer::local_relay::LocalRelay::new(&handler, state.images.clone());
    assert_eq!(relay.sweep().await.expect("sweep").delivered, 1);
    let (_, study) = call(reqwest::Method::GET, &format!("{base}/v1/studies/{id}"), Some(ALICE), None).await;
    assert_eq!(study["status"].as_str(), Some("done"), "{study}");

    // Full: 429 with Retry-After.
    let (busy_base, busy) = start_with(None, |s| s.predict_max_in_flight = 1).await;
    let _held = busy.predict_slots.clone().acquire_owned().await.expect("slot");
    let (status, headers, _) = predict(&busy_base, ALICE, png(3), None).await;
    assert_eq!(status, 429);
    assert!(headers.contains_key("retry-after"));
}

#[tokio::test]
async fn idempotency_keys_make_retries_create_nothing_twice() {
    let (base, state) = start_with(None, |_| {}).await;
    let client = reqwest::Client::new();
    let body = json!({"content_type": "image/png", "content_length": 1000});
    let post = |key: &str, body: &Value| client.post(format!("{base}/v1/studies")).bearer_auth(ALICE).header("Idempotency-Key", key).json(body).send();
    let first = post("create-1", &body).await.expect("request");
    assert_eq!(first.status(), 201);
    assert!(!first.headers().contains_key("idempotent-replayed"));
    let first: Value = first.json().await.expect("json");
    let retry = post("create-1", &body).await.expect("request");
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers().get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
    let retry: Value = retry.json().await.expect("json");
    assert_eq!(retry["id"], first["id"], "the same study, not a second one");
    let (_, page) = call(reqwest::Method::GET, &format!("{base}/v1/studies"), Some(ALICE), None).await;
    assert_eq!(page["studies"].as_array().map(Vec::len), Some(1));

    // The same key for another request: refused.
    let other = post("create-1", &json!({"content_type": "image/png", "content_length": 2000})).await.expect("request");
    assert_eq!(other.status(), 422);
    // Keys are per caller: Bob's "create-1" is his own.
    let bobs = client.post(format!("{base}/v1/studies")).bearer_auth(BOB).header("Idempotency-Key", "create-1").json(&body).send().await.expect("request");
    assert_eq!(bobs.status(), 201);
    // A failure worth retrying is not kept: the retry runs again (503 from
    // the closed model port each time, a new study each time).
    let (status, _, a) = predict(&base, ALICE, png(4), Some("predict-1")).await;
    assert_eq!(status, 503);
    let (status, headers, b) = predict(&base, ALICE, png(4), Some("predict-1")).await;
    assert_eq!(status, 503);
    assert!(!headers.contains_key("idempotent-replayed"));
    assert_ne!(a["study_id"], b["study_id"]);
    let _ = state;
}

#[tokio::test]
async fn a_lost_hot_copy_is_rebuilt_from_postgresql_on_read() {
    let (base, state) = start_with(Some(&model_server().await), |_| {}).await;
    let (status, _, study) = predict(&base, ALICE, png(5), None).await;
    assert_eq!(status, 201, "{study}");
    let id: cxr_platform::domain::StudyId = study["id"].as_str().expect("id").parse().expect("uuid");
    // The copy is lost (as if its write had failed after the commit).
    assert!(state.results.snapshot(id).await.expect("read").is_some());
    let deleted =
        DynamoTable::from_client(LocalStack::get().dynamodb_client(), results_table(&state)).delete(&format!("study#{id}"), "snapshot").await.expect("delete");
    assert!(deleted);
    let (status, read) = call(reqwest::Method::GET, &format!("{base}/v1/studies/{id}"), Some(ALICE), None).await;
    assert_eq!((status, &read["findings"]), (200, &study["findings"]));
    assert!(state.results.snapshot(id).await.expect("read").is_some(), "rewritten by the read");

    // With DynamoDB gone altogether, reads still answer from PostgreSQL.
    let missing = ResultStore::new(DynamoTable::from_client(LocalStack::get().dynamodb_client(), cxr_platform::testing::unique_name("missing")));
    let degraded = AppState { results: missing, ..state.clone() };
    let degraded_base = serve(degraded).await;
    let (status, read) = call(reqwest::Method::GET, &format!("{degraded_base}/v1/studies/{id}"), Some(ALICE), None).await;
    assert_eq!((status, &read["findings"]), (200, &study["findings"]));

    // With DynamoDB accepting connections and never answering, likewise
    // (after the attempt timeout: this configuration makes one attempt; not
    // after the caller gives up).
    let settings = DynamoSettings { results_table: results_table(&state), attempt_timeout: Duration::from_millis(200) };
    let hung = ResultStore::new(DynamoTable::new(&LocalStack::get().sdk_config_at(&format!("http://127.0.0.1:{}", silent_port())), &settings));
    let hung_base = serve(AppState { results: hung, ..state.clone() }).await;
    let (status, read) = call(reqwest::Method::GET, &format!("{hung_base}/v1/studies/{id}"), Some(ALICE), None).await;
    assert_eq!((status, &read["findings"]), (200, &study["findings"]));
}

fn results_table(state: &AppState) -> String {
    state.results.table_name().to_owned()
}

#[tokio::test]
async fn large_images_upload_in_parts() {
    let (base, state) = start_with(None, |_| {}).await;
    let size: u64 = 11 * 1024 * 1024;
    let (status, created) =
        call(reqwest::Method::POST, &format!("{base}/v1/studies"), Some(ALICE), Some(json!({"content_type": "application/dicom", "content_length": size})))
            .await;
    assert_eq!(status, 201, "{created}");
    let upload = &created["upload"];
    assert_eq!(upload["kind"].as_str(), Some("multipart"));
    let parts = upload["parts"].as_array().expect("parts");
    assert_eq!(parts.len(), 3, "5 + 5 + 1 MiB");
    let file: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let client = reqwest::Client::new();
    let mut etags = Vec::new();
    for part in parts {
        let (offset, len) = (part["offset"].as_u64().expect("offset") as usize, part["size"].as_u64().expect("size") as usize);
        let mut put = client.put(part["upload"]["url"].as_str().expect("url"));
        for header in part["upload"]["headers"].as_array().expect("headers") {
            put = put.header(header[0].as_str().expect("name"), header[1].as_str().expect("value"));
        }
        let answer = put.body(file[offset..offset + len].to_vec()).send().await.expect("PUT part");
        assert!(answer.status().is_success(), "{}", answer.text().await.unwrap_or_default());
        etags.push(json!({"part_number": part["part_number"], "etag": answer.headers()["etag"].to_str().expect("etag")}));
    }
    let complete = format!("{base}{}", upload["complete_url"].as_str().expect("complete url"));
    let (status, problem) =
        call(reqwest::Method::POST, &complete, Some(ALICE), Some(json!({"upload_id": upload["upload_id"], "parts": [etags[1].clone(), etags[0].clone()]})))
            .await;
    assert_eq!(status, 422, "parts out of order: {problem}");
    let (status, _) = call(reqwest::Method::POST, &complete, Some(BOB), Some(json!({"upload_id": upload["upload_id"], "parts": etags.clone()}))).await;
    assert_eq!(status, 404);
    let (status, study) = call(reqwest::Method::POST, &complete, Some(ALICE), Some(json!({"upload_id": upload["upload_id"], "parts": etags}))).await;
    assert_eq!(status, 202, "{study}");
    let id: cxr_platform::domain::StudyId = created["id"].as_str().expect("id").parse().expect("uuid");
    let key = cxr_platform::storage::postgres::studies::image_key(id, cxr_platform::domain::MediaType::Dicom);
    let object = state.images.head(&cxr_platform::storage::s3::ObjectKey::new(key).expect("key")).await.expect("head").expect("the object");
    assert_eq!(object.size, size);
}

#[tokio::test]
async fn listing_filters_by_label_and_date() {
    let (base, _) = start_with(Some(&model_server().await), |_| {}).await;
    let (_, _, study) = predict(&base, ALICE, png(6), None).await;
    let id = study["id"].as_str().expect("id").to_owned();
    let top = study["findings"].as_array().expect("findings").iter().find(|f| f["source"] == "model").expect("a finding").clone();
    let label = top["label"].as_str().expect("label");
    let p = top["probability"].as_f64().expect("probability");
    let base_ref = &base;
    let list = |query: String| async move {
        let base = base_ref;
        let (status, page) = call(reqwest::Method::GET, &format!("{base}/v1/studies?{query}"), Some(ALICE), None).await;
        assert_eq!(status, 200, "{page}");
        page["studies"].as_array().expect("studies").iter().map(|s| s["id"].as_str().expect("id").to_owned()).collect::<Vec<_>>()
    };
    let encoded = label.replace(' ', "%20");
    assert_eq!(list(format!("label={encoded}&min_probability={}", (p - 0.01).max(0.0))).await, vec![id.clone()]);
    if p < 0.99 {
        assert!(list(format!("label={encoded}&min_probability={}", (p + 0.01).min(1.0))).await.is_empty());
    }
    assert!(list("label=ILD".into()).await.is_empty());
    let (status, _) = call(reqwest::Method::POST, &format!("{base}/v1/studies/{id}/annotations"), Some(ALICE), Some(json!({"label": "ILD"}))).await;
    assert_eq!(status, 201);
    assert_eq!(list("label=ILD".into()).await, vec![id.clone()], "annotated labels count");
    assert_eq!(list("created_from=2000-01-01T00:00:00Z&status=done".into()).await, vec![id.clone()]);
    assert!(list("created_from=2999-01-01T00:00:00Z".into()).await.is_empty());
    assert!(list("created_before=2000-01-01T00:00:00Z".into()).await.is_empty());
    let (status, _) = call(reqwest::Method::GET, &format!("{base}/v1/studies?created_from=yesterday"), Some(ALICE), None).await;
    assert_eq!(status, 400);
}

/// The document is OpenAPI 3.1, valid (openapi-spec-validator, when the
/// local stack's Python tools are installed), and lists exactly the
/// served routes: every documented operation answers (401 without
/// credentials, except health), and nothing undocumented does.
#[tokio::test]
async fn the_openapi_document_is_valid_and_matches_the_routes() {
    let (base, _) = start_with(None, |_| {}).await;
    let (status, doc) = call(reqwest::Method::GET, &format!("{base}/v1/openapi.json"), None, None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);

    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().expect("path item").keys().filter(|m| ["get", "post", "put", "delete", "patch"].contains(&m.as_str())) {
            operations.push((method.clone(), path.clone()));
        }
    }
    operations.sort();
    let expected = [
        ("delete", "/v1/studies/{id}/annotations/{annotation_id}"),
        ("get", "/v1/health"),
        ("get", "/v1/label-sets"),
        ("get", "/v1/studies"),
        ("get", "/v1/studies/{id}"),
        ("get", "/v1/studies/{id}/annotations"),
        ("get", "/v1/studies/{id}/annotations/history"),
        ("patch", "/v1/studies/{id}/annotations/{annotation_id}"),
        ("post", "/v1/predict"),
        ("post", "/v1/studies"),
        ("post", "/v1/studies/{id}/annotations"),
        ("post", "/v1/studies/{id}/upload/complete"),
    ];
    assert_eq!(operations, expected.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect::<Vec<_>>());
    for (method, path) in &operations {
        let url = format!("{base}{}", path.replace("{id}", "00000000-0000-4000-8000-000000000000").replace("{annotation_id}", "1"));
        let answer = reqwest::Client::new().request(method.to_uppercase().parse().expect("method"), &url).send().await.expect("request");
        let want = if path == "/v1/health" { 200 } else { 401 };
        assert_eq!(answer.status().as_u16(), want, "{method} {path}");
    }
    let (status, _) = call(reqwest::Method::DELETE, &format!("{base}/v1/studies"), Some(ALICE), None).await;
    assert!(status == 404 || status == 405, "undocumented: {status}");

    if let Ok(python) = std::env::var("CXR_PYTHON") {
        let file = std::env::temp_dir().join(format!("{}.json", cxr_platform::testing::unique_name("openapi")));
        std::fs::write(&file, serde_json::to_vec(&doc).expect("json")).expect("write");
        let out = std::process::Command::new(python)
            .args(["-c", "import sys, json; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1]))); print('valid')"])
            .arg(&file)
            .output()
            .expect("python");
        let _ = std::fs::remove_file(&file);
        assert!(out.status.success(), "openapi-spec-validator: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
}
