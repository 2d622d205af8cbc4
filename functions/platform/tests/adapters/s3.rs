//! The S3 adapter against the local S3 server (s3s-fs).

use std::time::Duration;

use cxr_platform::storage::s3::{ObjectKey, ObjectStore, PresignedUrl, S3Error};
use cxr_platform::testing::{LocalStack, closed_port};

fn key(k: &str) -> ObjectKey {
    ObjectKey::new(k).expect("valid key")
}

async fn send(presigned: &PresignedUrl, body: Option<Vec<u8>>, header_override: &[(&str, &str)]) -> reqwest::Response {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(presigned.method.as_bytes()).expect("method");
    let mut request = client.request(method, &presigned.url);
    for (name, value) in &presigned.headers {
        // The HTTP client sets Content-Length from the body, as a browser does.
        let overridden = header_override.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        if !overridden && !name.eq_ignore_ascii_case("content-length") {
            request = request.header(name, value);
        }
    }
    for (name, value) in header_override {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    request.send().await.expect("request reaches the local S3")
}

#[tokio::test]
async fn put_get_head_list_delete() {
    let store = LocalStack::get().fresh_bucket().await;
    let png = b"\x89PNG\r\n\x1a\nnot really a png".to_vec();

    let meta = store.put(&key("studies/a/original.png"), png.clone(), "image/png").await.expect("put");
    assert_eq!(meta.size, png.len() as u64);
    store.put(&key("studies/b/original.png"), b"second".to_vec(), "image/png").await.expect("put");
    store.put(&key("other/c"), b"third".to_vec(), "text/plain").await.expect("put");

    let object = store.get(&key("studies/a/original.png"), 1024).await.expect("get");
    assert_eq!(object.bytes.as_ref(), png.as_slice());
    assert_eq!(object.content_type.as_deref(), Some("image/png"));

    let head = store.head(&key("studies/a/original.png")).await.expect("head").expect("exists");
    assert_eq!(head.size, png.len() as u64);
    assert_eq!(head.content_type.as_deref(), Some("image/png"));

    let listed: Vec<String> = store.list("studies/").await.expect("list").into_iter().map(|o| o.key).collect();
    assert_eq!(listed, ["studies/a/original.png", "studies/b/original.png"]);

    store.delete(&key("studies/a/original.png")).await.expect("delete");
    assert!(store.head(&key("studies/a/original.png")).await.expect("head").is_none());
    // Deleting again is not an error: retries are safe.
    store.delete(&key("studies/a/original.png")).await.expect("delete twice");
    store.check_bucket().await.expect("bucket is reachable");
}

#[tokio::test]
async fn missing_objects_and_limits() {
    let store = LocalStack::get().fresh_bucket().await;
    match store.get(&key("nope"), 10).await {
        Err(S3Error::NotFound { key }) => assert_eq!(key, "nope"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(store.head(&key("nope")).await.expect("head").is_none());

    store.put(&key("big"), vec![7u8; 2048], "application/octet-stream").await.expect("put");
    match store.get(&key("big"), 1024).await {
        Err(S3Error::TooLarge { size: 2048, limit: 1024, .. }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }

    let absent = ObjectStore::from_client(LocalStack::get().s3_client(), "no-such-bucket-here");
    assert!(absent.check_bucket().await.is_err());
}

#[tokio::test]
async fn presigned_put_is_bound_to_key_content_type_and_length() {
    let store = LocalStack::get().fresh_bucket().await;
    let body = b"\x89PNG\r\n\x1a\n0123456789".to_vec();
    let url = store.presign_put(&key("studies/x/original.png"), "image/png", body.len() as u64, Duration::from_secs(300)).await.expect("presign");
    assert_eq!(url.method, "PUT");
    assert!(url.headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("content-type") && v == "image/png"), "{url:?}");

    // Another content type: the signature does not match.
    let wrong_type = send(&url, Some(body.clone()), &[("content-type", "image/jpeg")]).await;
    assert_eq!(wrong_type.status(), 403, "content type must be bound");
    // Another length: the signature does not match.
    let mut longer = body.clone();
    longer.push(0);
    let wrong_length = send(&url, Some(longer), &[]).await;
    assert_eq!(wrong_length.status(), 403, "content length must be bound");
    assert!(store.head(&key("studies/x/original.png")).await.expect("head").is_none());

    // Exactly as signed: stored.
    let ok = send(&url, Some(body.clone()), &[]).await;
    assert!(ok.status().is_success(), "{}", ok.status());
    let stored = store.get(&key("studies/x/original.png"), 1024).await.expect("uploaded");
    assert_eq!(stored.bytes.as_ref(), body.as_slice());

    // The URL makes the object once: a second PUT of other bytes (the same
    // length, which is signed) is refused and changes nothing, and the
    // condition cannot be dropped or changed, since it is signed.
    assert!(url.headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("if-none-match") && v == "*"), "{url:?}");
    let other: Vec<u8> = body.iter().rev().copied().collect();
    let again = send(&url, Some(other.clone()), &[]).await;
    assert_eq!(again.status(), 412, "a second PUT must not replace the original");
    assert!(again.text().await.unwrap_or_default().contains("PreconditionFailed"));
    let unconditional = send(&url, Some(other), &[("if-none-match", "\"0\"")]).await;
    assert_eq!(unconditional.status(), 403, "the condition is signed");
    let stored = store.get(&key("studies/x/original.png"), 1024).await.expect("still there");
    assert_eq!(stored.bytes.as_ref(), body.as_slice(), "the first upload stands");

    // The URL is for one key: pointing it elsewhere breaks the signature.
    let mut elsewhere = url.clone();
    elsewhere.url = url.url.replace("studies/x/original.png", "studies/y/original.png");
    let other_key = send(&elsewhere, Some(body), &[]).await;
    assert_eq!(other_key.status(), 403);
    assert!(store.head(&key("studies/y/original.png")).await.expect("head").is_none());
}

#[tokio::test]
async fn originals_are_written_once_whichever_way_they_arrive() {
    let store = LocalStack::get().fresh_bucket().await;
    let original = key("studies/once/original.png");
    store.put_new(&original, b"first".to_vec(), "image/png").await.expect("created");
    match store.put_new(&original, b"second".to_vec(), "image/png").await {
        Err(S3Error::AlreadyExists { key }) => assert_eq!(key, original.as_str()),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    // A multipart upload onto an existing original is refused at completion.
    let upload_id = store.create_multipart_upload(&original, "image/png").await.expect("multipart");
    let part = store.presign_upload_part(&original, &upload_id, 1, 6, Duration::from_secs(60)).await.expect("presign part");
    let answer = send(&part, Some(b"third!".to_vec()), &[]).await;
    assert!(answer.status().is_success(), "{}", answer.status());
    let etag = answer.headers()["etag"].to_str().expect("etag").to_owned();
    match store.complete_multipart_upload(&original, &upload_id, &[(1, etag)]).await {
        Err(S3Error::AlreadyExists { .. }) => {}
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(store.get(&original, 1024).await.expect("get").bytes.as_ref(), b"first");
}

#[tokio::test]
async fn presigned_get_reads_one_object_until_it_expires() {
    let store = LocalStack::get().fresh_bucket().await;
    store.put(&key("preview.png"), b"pixels".to_vec(), "image/png").await.expect("put");
    store.put(&key("secret.png"), b"other".to_vec(), "image/png").await.expect("put");

    let url = store.presign_get(&key("preview.png"), Duration::from_secs(60)).await.expect("presign");
    let ok = send(&url, None, &[]).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.bytes().await.expect("body").as_ref(), b"pixels");

    let mut tampered = url.clone();
    tampered.url = url.url.replace("preview.png", "secret.png");
    assert_eq!(send(&tampered, None, &[]).await.status(), 403);

    let short = store.presign_get(&key("preview.png"), Duration::from_secs(1)).await.expect("presign");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(send(&short, None, &[]).await.status(), 403, "expired URL must be refused");
}

#[tokio::test]
async fn long_lived_presigned_urls_are_reused_for_a_while_short_ones_never() {
    let store = LocalStack::get().fresh_bucket().await;
    store.put(&key("image.png"), b"pixels".to_vec(), "image/png").await.expect("put");
    let first = store.presign_get(&key("image.png"), Duration::from_secs(900)).await.expect("presign");
    let short = store.presign_get(&key("image.png"), Duration::from_secs(60)).await.expect("presign");
    // Past a second, a new signature would carry another X-Amz-Date.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = store.presign_get(&key("image.png"), Duration::from_secs(900)).await.expect("presign");
    assert_eq!(again, first, "a 15-minute URL signed a second ago is handed out again");
    let short_again = store.presign_get(&key("image.png"), Duration::from_secs(60)).await.expect("presign");
    assert_ne!(short_again.url, short.url, "a 1-minute URL is signed afresh each time");
    assert_eq!(send(&again, None, &[]).await.status(), 200);
}

#[tokio::test]
async fn unreachable_server_is_a_clear_error() {
    let stack = LocalStack::get();
    let client = stack.s3_client_at(&format!("http://127.0.0.1:{}", closed_port()));
    let store = ObjectStore::from_client(client, "images");
    match store.get(&key("k"), 10).await {
        Err(e @ S3Error::Unavailable(_)) => assert!(e.to_string().contains("unreachable"), "{e}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}
