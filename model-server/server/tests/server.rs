//! The model server on a random port with a generated DenseNet-121 model
//! directory: the SageMaker contract, the AWS SDK's runtime client, input
//! errors, batching under concurrency, admission limits and shutdown.

use std::io::Cursor;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cxr_inference::fixtures::dicom_file;
use cxr_inference::models::Classifier;
use cxr_model_server::config::ServeConfig;
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, Rgb};

/// A generated model directory under the target directory, written once
/// and shared by every test process (written aside, then renamed).
fn model_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("generated-densenet121-xrv");
        let manifest = cxr_model_server::generated_manifest("densenet121-xrv").expect("manifest");
        Classifier::write_generated_once(&dir, &manifest).expect("write model");
        dir
    })
}

fn config(max_batch_size: usize, max_concurrent_requests: usize) -> ServeConfig {
    ServeConfig {
        model_dir: model_dir().to_owned(),
        model_s3_uri: None,
        addr: "127.0.0.1:0".parse().expect("addr"),
        max_batch_size,
        max_concurrent_requests,
        max_body_bytes: 2 * 1024 * 1024,
        max_side: 4096,
        dtype: "f32".into(),
    }
}

/// Starts the app on a random port and waits for `/ping` to answer 200.
async fn start(config: ServeConfig) -> SocketAddr {
    let (app, _thread) = cxr_model_server::build(&config).await.expect("build");
    let base = cxr_platform::testing::serve(app).await;
    let addr: SocketAddr = base.trim_start_matches("http://").parse().expect("addr");
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(response) = client.get(format!("http://{addr}/ping")).send().await
            && response.status() == 200
        {
            return addr;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the server never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

fn png() -> Vec<u8> {
    encode(DynamicImage::ImageLuma8(ImageBuffer::from_fn(320, 280, |x, y| Luma([((x * 7 + y * 3) % 256) as u8]))), ImageFormat::Png)
}

async fn invoke(addr: SocketAddr, body: Vec<u8>) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    let response = reqwest::Client::new().post(format!("http://{addr}/invocations")).body(body).send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let json = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, json, headers)
}

#[tokio::test]
async fn png_jpeg_and_dicom_get_findings() {
    let addr = start(config(8, 64)).await;
    let jpeg = encode(DynamicImage::ImageRgb8(ImageBuffer::from_fn(256, 300, |x, y| Rgb([x as u8, y as u8, 128]))), ImageFormat::Jpeg);
    let png16 = encode(DynamicImage::ImageLuma16(ImageBuffer::from_fn(240, 240, |x, y| Luma([(x * 200 + y) as u16]))), ImageFormat::Png);
    for (name, body, format) in [("png", png(), "png"), ("png16", png16, "png"), ("jpeg", jpeg, "jpeg"), ("dicom", dicom_file(300, 260), "dicom")] {
        let (status, json, _) = invoke(addr, body).await;
        assert_eq!(status, 200, "{name}: {json}");
        assert_eq!(json["image"]["format"], format, "{name}");
        let findings = json["findings"].as_array().expect("findings");
        assert_eq!(findings.len(), 18, "{name}");
        assert_eq!(findings[0]["label"], "Atelectasis");
        assert!(findings.iter().all(|f| f["probability"].as_f64().is_some_and(|p| (0.0..=1.0).contains(&p))));
        assert_eq!(json["model"]["trained"], false, "generated weights say so");
        assert!(json["timings_ms"]["total"].as_f64().is_some());
    }
}

#[tokio::test]
async fn bad_inputs_get_clear_4xx_answers() {
    let addr = start(config(8, 64)).await;
    let problem = |json: &serde_json::Value| json["detail"].as_str().unwrap_or_default().to_owned();

    let (status, json, _) = invoke(addr, b"GIF89a not an x-ray".to_vec()).await;
    assert_eq!((status, json["status"].as_u64()), (415, Some(415)));
    assert!(problem(&json).contains("not a PNG, JPEG or DICOM"), "{json}");

    let (status, json, _) = invoke(addr, Vec::new()).await;
    assert_eq!(status, 400, "{json}");

    let mut truncated = png();
    truncated.truncate(100);
    let (status, json, _) = invoke(addr, truncated).await;
    assert_eq!(status, 400, "{json}");
    assert!(problem(&json).contains("corrupt"), "{json}");

    // Over the body limit (2 MiB here): refused before it is read whole.
    let (status, _, _) = invoke(addr, vec![0x89; 3 * 1024 * 1024]).await;
    assert_eq!(status, 413);

    // A small file whose header claims 5000 x 5000 pixels (limit 4096 a side).
    let (status, json, _) = invoke(addr, dicom_file(5000, 2)).await;
    assert_eq!(status, 413, "{json}");
    assert!(problem(&json).contains("5000"), "{json}");
}

#[tokio::test]
async fn concurrent_requests_are_batched() {
    let addr = start(config(8, 64)).await;
    let body = png();
    let requests = (0..24).map(|_| invoke(addr, body.clone()));
    let answers = futures::future::join_all(requests).await;
    assert!(answers.iter().all(|(status, _, _)| *status == 200));
    let largest = answers.iter().filter_map(|(_, json, _)| json["batch_size"].as_u64()).max().unwrap_or(0);
    assert!(largest > 1, "some requests shared a batch (largest batch {largest})");

    let metrics = reqwest::get(format!("http://{addr}/metrics")).await.expect("metrics").text().await.expect("text");
    let value = |name: &str| -> f64 { metrics.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().last()?.parse().ok()).unwrap_or(0.0) };
    let (images, batches) = (value("cxr_model_server_batch_size_sum"), value("cxr_model_server_batch_size_count"));
    assert!(images >= 24.0 && batches < images, "/metrics shows batches larger than 1: {images} images in {batches} batches");
    assert!(metrics.contains("cxr_model_server_requests_total{status=\"200\"} 24"), "{metrics}");
}

#[tokio::test]
async fn a_full_server_answers_429_with_retry_after() {
    let addr = start(config(1, 1)).await;
    let body = png();
    let answers = futures::future::join_all((0..12).map(|_| invoke(addr, body.clone()))).await;
    let refused: Vec<_> = answers.iter().filter(|(status, _, _)| *status == 429).collect();
    assert!(!refused.is_empty(), "with one place, concurrent requests are refused");
    assert!(refused.iter().all(|(_, _, headers)| headers.contains_key("retry-after")));
    assert!(answers.iter().all(|(status, _, _)| *status == 200 || *status == 429));
}

#[tokio::test]
async fn the_aws_sdk_runtime_client_works_against_it() {
    let addr = start(config(8, 64)).await;
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sagemakerruntime::config::SharedCredentialsProvider::new(aws_sdk_sagemakerruntime::config::Credentials::new(
            "local", "local", None, None, "test",
        )))
        .endpoint_url(format!("http://{addr}"))
        .build();
    let client = aws_sdk_sagemakerruntime::Client::new(&sdk);
    let output = client
        .invoke_endpoint()
        .endpoint_name("cxr-densenet121")
        .content_type("image/png")
        .accept("application/json")
        .body(aws_sdk_sagemakerruntime::primitives::Blob::new(png()))
        .send()
        .await
        .expect("invoke_endpoint");
    let json: serde_json::Value = serde_json::from_slice(output.body().expect("body").as_ref()).expect("JSON");
    assert_eq!(json["findings"].as_array().map(Vec::len), Some(18));
}

#[tokio::test]
async fn sigterm_finishes_requests_in_flight() {
    let dir = model_dir();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        listener.local_addr().expect("addr").port()
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_model-server"))
        .args(["serve", "--model-dir"])
        .arg(dir)
        .args(["--addr", &format!("127.0.0.1:{port}"), "--max-batch-size", "1"])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let started = Instant::now();
    while reqwest::get(format!("http://{addr}/ping")).await.map(|r| r.status() != 200).unwrap_or(true) {
        assert!(started.elapsed() < Duration::from_secs(60), "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Several requests in flight (batch size 1: they queue), then SIGTERM.
    let body = png();
    let in_flight: Vec<_> = (0..4).map(|_| tokio::spawn(invoke(addr, body.clone()))).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(killed.success());
    for request in in_flight {
        let (status, json, _) = request.await.expect("join");
        assert_eq!(status, 200, "an admitted request is answered after SIGTERM: {json}");
    }
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("exits").expect("status");
    assert!(exit.success(), "clean exit: {exit:?}");
}

#[tokio::test]
async fn grad_cam_heatmap_and_boxes_on_request() {
    let addr = start(config(8, 64)).await;
    let client = reqwest::Client::new();
    let response = client.post(format!("http://{addr}/invocations?explain=Cardiomegaly")).body(png()).send().await.expect("request");
    assert_eq!(response.status(), 200);
    let json: serde_json::Value = response.json().await.expect("JSON");
    let heatmap = &json["heatmap"];
    assert_eq!(heatmap["label"], "Cardiomegaly");
    assert_eq!((heatmap["width"].as_u64(), heatmap["height"].as_u64()), (Some(320), Some(280)), "small images keep their size");
    use base64::Engine;
    let png_bytes = base64::engine::general_purpose::STANDARD.decode(heatmap["png_base64"].as_str().expect("png")).expect("base64");
    let overlay = image::load_from_memory(&png_bytes).expect("a PNG");
    assert_eq!((overlay.width(), overlay.height()), (320, 280));
    for b in json["boxes"].as_array().expect("boxes") {
        let (x, y, w, h) =
            (b["x_min"].as_f64().unwrap_or(-1.0), b["y_min"].as_f64().unwrap_or(-1.0), b["width"].as_f64().unwrap_or(0.0), b["height"].as_f64().unwrap_or(0.0));
        assert!(x >= 0.0 && y >= 0.0 && w > 0.0 && h > 0.0 && x + w <= 320.0 + 1e-3 && y + h <= 280.0 + 1e-3, "{b}");
        assert_eq!(b["label"], "Cardiomegaly");
    }

    // Without the option: no explanation work, nulls.
    let (_, plain, _) = invoke(addr, png()).await;
    assert!(plain["heatmap"].is_null() && plain["boxes"].as_array().is_some_and(Vec::is_empty));

    // SageMaker passes options in the custom attributes header.
    let response = client
        .post(format!("http://{addr}/endpoints/cxr/invocations"))
        .header("X-Amzn-SageMaker-Custom-Attributes", "explain=top")
        .body(png())
        .send()
        .await
        .expect("request");
    let json: serde_json::Value = response.json().await.expect("JSON");
    let top = json["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .max_by(|a, b| a["probability"].as_f64().unwrap_or(0.0).total_cmp(&b["probability"].as_f64().unwrap_or(0.0)))
        .expect("top")["label"]
        .clone();
    assert_eq!(json["heatmap"]["label"], top);

    let response = client.post(format!("http://{addr}/invocations?explain=Dragons")).body(png()).send().await.expect("request");
    assert_eq!(response.status(), 422);
}

#[tokio::test]
async fn the_model_can_come_from_an_s3_prefix() {
    // The local S3 stand-in (infra/local/dev.sh up) plays S3.
    let stack = cxr_platform::testing::LocalStack::get();
    let store = stack.fresh_bucket().await;
    for name in ["model.json", "model.safetensors"] {
        let bytes = std::fs::read(model_dir().join(name)).expect("model file");
        let key = cxr_platform::storage::s3::ObjectKey::new(format!("models/densenet/{name}")).expect("key");
        store.put(&key, bytes, "application/octet-stream").await.expect("upload");
    }
    // aws-config reads the stack's endpoint and credentials from the environment.
    for (name, value) in stack.vars() {
        // SAFETY: set before any other thread of this test reads them.
        unsafe { std::env::set_var(name, value) };
    }
    let target = tempfile::tempdir().expect("dir");
    cxr_model_server::model_source::fetch_from_s3(&format!("s3://{}/models/densenet", store.bucket()), target.path()).await.expect("fetch");
    let mut config = config(8, 64);
    config.model_dir = target.path().to_owned();
    let addr = start(config).await;
    let (status, json, _) = invoke(addr, png()).await;
    assert_eq!((status, json["model"]["name"].as_str()), (200, Some("densenet121-xrv-generated")));
    assert!(cxr_model_server::model_source::fetch_from_s3("https://example.com/x", target.path()).await.is_err());
}

#[tokio::test]
async fn half_precision_serves_and_bf16_on_cpu_is_refused_clearly() {
    let mut half = config(8, 64);
    half.dtype = "f16".into();
    let addr = start(half).await;
    let (status, json, _) = invoke(addr, png()).await;
    assert_eq!(status, 200, "{json}");

    let mut bf16 = config(8, 64);
    bf16.dtype = "bf16".into();
    let refused = cxr_model_server::build(&bf16).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("needs a GPU"), "{refused}");
}
