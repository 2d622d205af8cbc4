//! The model server inside another process, on a random loopback port:
//! what the inference tests of other crates (and the end-to-end test) call
//! instead of starting a binary.

use std::path::Path;
use std::time::{Duration, Instant};

use cxr_inference::models::Classifier;

use crate::config::ServeConfig;

/// Writes generated weights of `kind` to `dir` (once per directory), serves
/// them on `127.0.0.1:<random>` and returns the base URL once `/ping`
/// answers 200.
pub async fn serve_generated(kind: &str, dir: &Path) -> anyhow::Result<String> {
    serve_generated_with(kind, dir, crate::image_source::S3Images::default()).await
}

/// [`serve_generated`], reading S3-referenced images with `s3_images`.
pub async fn serve_generated_with(kind: &str, dir: &Path, s3_images: crate::image_source::S3Images) -> anyhow::Result<String> {
    let manifest = crate::generated_manifest(kind).ok_or_else(|| anyhow::anyhow!("unknown model kind {kind:?}"))?;
    Classifier::write_generated_once(dir, &manifest)?;
    let config = ServeConfig {
        model_dir: dir.to_owned(),
        model_s3_uri: None,
        addr: "127.0.0.1:0".parse()?,
        max_batch_size: 4,
        max_concurrent_requests: 16,
        max_body_bytes: 64 << 20,
        max_side: 16384,
        dtype: "f32".into(),
    };
    let (app, _device_thread) = crate::build_with(&config, s3_images).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let started = Instant::now();
    while !ready(addr).await {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(120), "the model server did not warm up in 120 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(format!("http://{addr}"))
}

/// `/ping` through a raw HTTP/1.0 request: no HTTP client needed.
async fn ready(addr: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else { return false };
    if stream.write_all(b"GET /ping HTTP/1.0\r\n\r\n").await.is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}
