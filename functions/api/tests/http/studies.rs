//! Studies, uploads, listing and annotations through the API on a random
//! port, against the local stack.

use crate::common::{ALICE, BOB, call, start};
use cxr_api::app::{AppState, router};
use cxr_platform::domain::Owner;
use serde_json::{Value, json};

#[tokio::test]
async fn create_upload_read_and_list_owner_scoped() {
    let (base, _) = start().await;
    let png = b"\x89PNG\r\n\x1a\nnot really an image".to_vec();
    let (status, created) =
        call(reqwest::Method::POST, &format!("{base}/v1/studies"), Some(ALICE), Some(json!({"content_type": "image/png", "content_length": png.len()}))).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "created");
    let id = created["id"].as_str().expect("id").to_owned();

    // Upload through the presigned URL, with exactly the signed headers.
    let upload = &created["upload"];
    let mut put = reqwest::Client::new().put(upload["url"].as_str().expect("url"));
    for header in upload["headers"].as_array().expect("headers") {
        put = put.header(header[0].as_str().expect("name"), header[1].as_str().expect("value"));
    }
    let put = put.body(png.clone()).send().await.expect("PUT");
    assert!(put.status().is_success(), "{}", put.text().await.unwrap_or_default());

    let (status, study) = call(reqwest::Method::GET, &format!("{base}/v1/studies/{id}"), Some(ALICE), None).await;
    assert_eq!((status, study["id"].as_str()), (200, Some(id.as_str())));
    assert!(study["findings"].as_array().is_some_and(Vec::is_empty));

    // Bob sees nothing of Alice's: 404 for the study, an empty list.
    let (status, problem) = call(reqwest::Method::GET, &format!("{base}/v1/studies/{id}"), Some(BOB), None).await;
    assert_eq!((status, problem["status"].as_u64()), (404, Some(404)));
    let (_, bobs) = call(reqwest::Method::GET, &format!("{base}/v1/studies"), Some(BOB), None).await;
    assert_eq!(bobs["studies"].as_array().map(Vec::len), Some(0));
    let (_, alices) = call(reqwest::Method::GET, &format!("{base}/v1/studies"), Some(ALICE), None).await;
    assert_eq!(alices["studies"][0]["id"].as_str(), Some(id.as_str()));
}

#[tokio::test]
async fn who_asks_is_checked_before_anything_else() {
    let (base, _) = start().await;
    let client = reqwest::Client::new();
    let bad_key = "not a visible-ASCII key";
    for token in [None, Some("wrong-token-0123456789")] {
        let mut request = client.post(format!("{base}/v1/predict")).header("Idempotency-Key", bad_key).body(Vec::<u8>::new());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        assert_eq!(request.send().await.expect("request").status(), 401, "credentials first, then the key");
    }
    let answer = client.post(format!("{base}/v1/predict")).bearer_auth(ALICE).header("Idempotency-Key", bad_key).body(vec![1u8]).send().await.expect("request");
    assert_eq!(answer.status(), 400, "then the malformed key");
}

#[tokio::test]
async fn answers_are_never_cached_or_sniffed() {
    let (base, _) = start().await;
    let client = reqwest::Client::new();
    for (path, token) in [("/v1/studies", Some(ALICE)), ("/v1/studies/not-a-study", Some(ALICE)), ("/v1/studies", None), ("/v1/health", None)] {
        let mut request = client.get(format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let answer = request.send().await.expect("request");
        let header = |name: &str| answer.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(header("cache-control").as_deref(), Some("no-store"), "{path} {}", answer.status());
        assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"), "{path} {}", answer.status());
    }
}

#[tokio::test]
async fn pages_follow_the_cursor_newest_first_and_filter_by_status() {
    let (base, _) = start().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (_, created) =
            call(reqwest::Method::POST, &format!("{base}/v1/studies"), Some(ALICE), Some(json!({"content_type": "application/dicom", "content_length": 10})))
                .await;
        ids.push(created["id"].as_str().expect("id").to_owned());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{base}/v1/studies?limit=2&cursor={c}"),
            None => format!("{base}/v1/studies?limit=2"),
        };
        let (status, page) = call(reqwest::Method::GET, &url, Some(ALICE), None).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(page["studies"].as_array().expect("studies").iter().map(|s| s["id"].as_str().expect("id").to_owned()));
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "every study once, newest first");
    let (_, done) = call(reqwest::Method::GET, &format!("{base}/v1/studies?status=done"), Some(ALICE), None).await;
    assert_eq!(done["studies"].as_array().map(Vec::len), Some(0));
    let (status, _) = call(reqwest::Method::GET, &format!("{base}/v1/studies?status=sideways"), Some(ALICE), None).await;
    assert_eq!(status, 400);
    let (status, _) = call(reqwest::Method::GET, &format!("{base}/v1/studies?cursor=%%%"), Some(ALICE), None).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn bad_requests_get_problems() {
    let (base, _) = start().await;
    let url = format!("{base}/v1/studies");
    let (status, problem) = call(reqwest::Method::POST, &url, None, Some(json!({"content_type": "image/png", "content_length": 10}))).await;
    assert_eq!((status, problem["title"].as_str()), (401, Some("Unauthorized")));
    let (status, _) = call(reqwest::Method::POST, &url, Some("wrong-token-0123456789"), Some(json!({}))).await;
    assert_eq!(status, 401);
    let (status, problem) = call(reqwest::Method::POST, &url, Some(ALICE), Some(json!({"content_type": "image/gif", "content_length": 10}))).await;
    assert_eq!(status, 415, "{problem}");
    let (status, _) = call(reqwest::Method::POST, &url, Some(ALICE), Some(json!({"content_type": "image/png", "content_length": 17 * 1024 * 1024}))).await;
    assert_eq!(status, 413);
    let (status, _) = call(reqwest::Method::POST, &url, Some(ALICE), Some(json!({"content_type": "image/png", "content_length": 0}))).await;
    assert_eq!(status, 422);
    let (status, problem) = call(reqwest::Method::POST, &url, Some(ALICE), Some(json!({"content_type": "image/png"}))).await;
    assert_eq!(status, 400, "{problem}");
    let (status, _) = call(reqwest::Method::GET, &format!("{base}/v1/studies/not-a-uuid"), Some(ALICE), None).await;
    assert_eq!(status, 404);
    let (status, _) = call(reqwest::Method::GET, &format!("{base}/v1/nothing-here"), Some(ALICE), None).await;
    assert_eq!(status, 404);
    let (status, health) = call(reqwest::Method::GET, &format!("{base}/v1/health"), None, None).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
}

/// The sample API Gateway HTTP API (payload v2) event, through lambda_http's
/// own conversion, into the same Router: the caller is the JWT `sub`.
async fn lambda_event(state: &AppState, file: &str) -> (u16, Value) {
    use tower::ServiceExt;
    let path = format!("{}/../../events/{file}", env!("CARGO_MANIFEST_DIR"));
    let event = std::fs::read_to_string(path).expect("sample event");
    let request = lambda_http::request::from_str(&event).expect("an API Gateway v2 event");
    let (parts, body) = request.into_parts();
    let request = axum::http::Request::from_parts(parts, axum::body::Body::from(body.to_vec()));
    let response = router(state.clone()).oneshot(request).await.expect("response");
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn in_lambda_the_caller_is_the_jwt_subject() {
    let (_, state) = start().await;
    let new = cxr_platform::storage::postgres::studies::NewStudy {
        owner: Owner::new("alice").expect("owner"),
        s3_bucket: state.images.bucket().to_owned(),
        media_type: cxr_platform::domain::MediaType::Png,
    };
    let study = state.db.create_study(&new).await.expect("study");
    let (status, page) = lambda_event(&state, "api-list-studies.json").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["studies"][0]["id"].as_str(), Some(study.id.to_string().as_str()));
    // A request that reached the function without an authorizer is refused,
    // even though dev tokens are configured.
    let (status, _) = lambda_event(&state, "api-list-studies-no-authorizer.json").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn annotations_are_validated_against_labels_and_image_bounds() {
    let (base, state) = start().await;
    let (_, created) =
        call(reqwest::Method::POST, &format!("{base}/v1/studies"), Some(ALICE), Some(json!({"content_type": "image/png", "content_length": 10}))).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let url = format!("{base}/v1/studies/{id}/annotations");
    let boxed = json!({"label": "Cardiomegaly", "box": {"x_min": 100, "y_min": 200, "width": 300, "height": 150}});

    // Before the image is processed: labels yes, boxes not yet (no bounds).
    let (status, _) = call(reqwest::Method::POST, &url, Some(ALICE), Some(boxed.clone())).await;
    assert_eq!(status, 409);
    let (status, image_level) = call(reqwest::Method::POST, &url, Some(ALICE), Some(json!({"label": "ILD"}))).await;
    assert_eq!((status, image_level["box"].is_null()), (201, true), "{image_level}");

    // The upload is read: the image is 1024 x 768.
    let study = state.db.find_study(&Owner::new("alice").expect("owner"), id.parse().expect("id")).await.expect("find").expect("study");
    let facts = cxr_platform::storage::postgres::studies::ImageFacts {
        byte_size: 10,
        sha256: cxr_platform::domain::Sha256Digest::of(b"image"),
        width: 1024,
        height: 768,
        bit_depth: 8,
        modality: None,
        dicom: None,
    };
    state.db.record_upload(study.row_id, &facts).await.expect("record upload");

    let (status, annotation) = call(reqwest::Method::POST, &url, Some(ALICE), Some(boxed)).await;
    assert_eq!(status, 201, "{annotation}");
    assert_eq!((annotation["label"].as_str(), annotation["author"].as_str()), (Some("Cardiomegaly"), Some("alice")));
    let outside = json!({"label": "Nodule/Mass", "box": {"x_min": 1000, "y_min": 10, "width": 100, "height": 10}});
    let (status, problem) = call(reqwest::Method::POST, &url, Some(ALICE), Some(outside)).await;
    assert_eq!(status, 422);
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("1024x768")), "{problem}");
    for bad in [
        json!({"label": "Dragons"}),
        json!({"label_set": "nope", "label": "ILD"}),
        json!({"label": "ILD", "box": {"x_min": -1, "y_min": 0, "width": 1, "height": 1}}),
    ] {
        let (status, problem) = call(reqwest::Method::POST, &url, Some(ALICE), Some(bad)).await;
        assert_eq!(status, 422, "{problem}");
    }
    let (status, _) = call(reqwest::Method::POST, &url, Some(ALICE), Some(json!({"label": "ILD", "colour": "red"}))).await;
    assert_eq!(status, 400, "unknown fields are refused");

    let (status, list) = call(reqwest::Method::GET, &url, Some(ALICE), None).await;
    assert_eq!((status, list.as_array().map(Vec::len)), (200, Some(2)));
    let (status, _) = call(reqwest::Method::GET, &url, Some(BOB), None).await;
    assert_eq!(status, 404, "another owner sees nothing");
    let (status, _) = call(reqwest::Method::POST, &url, Some(BOB), Some(json!({"label": "ILD"}))).await;
    assert_eq!(status, 404);
}

/// A binary body through Lambda: API Gateway base64-encodes it into the
/// event, lambda_http decodes it, the handler sniffs a PNG. The model
/// endpoint is down here, so the answer is 503 naming the recorded study
/// (415 would mean the body arrived mangled).
#[tokio::test]
async fn in_lambda_predict_gets_the_binary_body() {
    let (_, state) = start().await;
    let (status, problem) = lambda_event(&state, "api-predict.json").await;
    assert_eq!(status, 503, "{problem}");
    let id = problem["study_id"].as_str().expect("a study was recorded");
    let study = state.db.find_study(&Owner::new("alice").expect("owner"), id.parse().expect("id")).await.expect("find").expect("study");
    assert_eq!((study.width, study.height), (Some(512), Some(512)));
}
