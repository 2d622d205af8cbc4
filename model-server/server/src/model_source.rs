//! Where the model files come from: a directory (SageMaker unpacks the
//! model artefact to /opt/ml/model), or an S3 prefix copied into that
//! directory at start-up (`MODEL_S3_URI=s3://bucket/prefix`), for EC2 or
//! local runs without an artefact.

use std::path::Path;

use anyhow::Context;
use aws_config::BehaviorVersion;
use cxr_inference::models::ModelManifest;

/// Largest model.json accepted (the weights are streamed to disk).
const MANIFEST_LIMIT: usize = 1024 * 1024;

/// The model server's one S3 client (model artifacts, images sent by
/// reference): the SDK's standard chain, path-style addressing when
/// `S3_FORCE_PATH_STYLE` is set (S3-compatible servers). The server does not
/// link the platform's crates, hence its own.
pub async fn s3_client() -> aws_sdk_s3::Client {
    let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let force_path_style = std::env::var("S3_FORCE_PATH_STYLE").is_ok_and(|v| v == "true" || v == "1");
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(force_path_style).build())
}

/// Copies `model.json` and the weights it names from `uri` into `dir`.
pub async fn fetch_from_s3(uri: &str, dir: &Path) -> anyhow::Result<()> {
    let rest = uri.strip_prefix("s3://").with_context(|| format!("MODEL_S3_URI {uri:?} is not an s3:// URI"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_end_matches('/');
    let key = |name: &str| if prefix.is_empty() { name.to_owned() } else { format!("{prefix}/{name}") };
    let client = s3_client().await;

    let manifest_bytes = client
        .get_object()
        .bucket(bucket)
        .key(key("model.json"))
        .send()
        .await
        .with_context(|| format!("reading s3://{bucket}/{}", key("model.json")))?
        .body
        .collect()
        .await
        .context("reading model.json")?
        .into_bytes();
    anyhow::ensure!(manifest_bytes.len() <= MANIFEST_LIMIT, "model.json is larger than {MANIFEST_LIMIT} bytes");
    let manifest: ModelManifest = serde_json::from_slice(&manifest_bytes).context("model.json is not a model manifest")?;
    anyhow::ensure!(
        !manifest.weights.contains('/') && !manifest.weights.contains(".."),
        "the manifest's weights file must be a plain file name, not {:?}",
        manifest.weights
    );
    tokio::fs::create_dir_all(dir).await.with_context(|| format!("creating {}", dir.display()))?;

    // The weights go to a partial file first, then are renamed: a crash
    // never leaves a truncated file that looks complete.
    let mut object = client
        .get_object()
        .bucket(bucket)
        .key(key(&manifest.weights))
        .send()
        .await
        .with_context(|| format!("reading s3://{bucket}/{}", key(&manifest.weights)))?;
    let partial = dir.join(format!("{}.partial", manifest.weights));
    let mut file = tokio::fs::File::create(&partial).await.with_context(|| format!("creating {}", partial.display()))?;
    while let Some(chunk) = object.body.try_next().await.context("downloading the weights")? {
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await.context("writing the weights")?;
    }
    tokio::io::AsyncWriteExt::flush(&mut file).await?;
    tokio::fs::rename(&partial, dir.join(&manifest.weights)).await?;
    tokio::fs::write(dir.join("model.json"), &manifest_bytes).await?;
    tracing::info!(uri, dir = %dir.display(), "model copied from S3");
    Ok(())
}
