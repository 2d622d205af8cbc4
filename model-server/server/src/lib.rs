//! The model server: loads a model directory, warms the model up, and serves
//! it over HTTP with dynamic batching ([`queue`]) behind SageMaker's
//! container contract ([`router`]).

pub mod config;
pub mod image_source;
pub mod in_process;
pub mod metrics;
pub mod model_source;
pub mod problem;
pub mod queue;
pub mod router;
pub mod training;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Device;
use cxr_inference::decode::Limits;
use cxr_inference::models::{Architecture, Classifier, ModelManifest, Output, Preprocessing};

use crate::config::ServeConfig;
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::router::{AppState, router};

/// The labels of TorchXRayVision's `densenet121-res224-all`, in output order.
pub const XRV_ALL_LABELS: [&str; 18] = [
    "Atelectasis",
    "Consolidation",
    "Infiltration",
    "Pneumothorax",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Effusion",
    "Pneumonia",
    "Pleural_Thickening",
    "Cardiomegaly",
    "Nodule",
    "Mass",
    "Hernia",
    "Lung Lesion",
    "Fracture",
    "Lung Opacity",
    "Enlarged Cardiomediastinum",
];

/// Manifests of the generated (untrained) models `generate-model` writes.
pub fn generated_manifest(kind: &str) -> Option<ModelManifest> {
    let (architecture, labels, preprocessing, output): (Architecture, Vec<&str>, Preprocessing, Output) = match kind {
        "densenet121-xrv" => (Architecture::Densenet121Xrv, XRV_ALL_LABELS.to_vec(), Preprocessing::Xrv224, Output::Sigmoid),
        "resnet50-pneumonia" => (Architecture::Resnet50 { hidden: 256 }, vec!["Pneumonia"], Preprocessing::Imagenet224, Output::Sigmoid),
        "resnet50-covid3" => (Architecture::Resnet50 { hidden: 256 }, vec!["COVID-19", "Pneumonia", "Normal"], Preprocessing::Imagenet224, Output::Softmax),
        _ => return None,
    };
    Some(ModelManifest {
        name: format!("{kind}-generated"),
        version: "0".into(),
        architecture,
        labels: labels.into_iter().map(str::to_owned).collect(),
        preprocessing,
        output,
        thresholds: Vec::new(),
        trained: false,
        weights: "model.safetensors".into(),
        provenance: None,
        base_weights: None,
    })
}

/// Loads the model, starts the device thread and returns the router; the
/// server answers `/ping` with 200 once warm-up has finished.
pub async fn build(config: &ServeConfig) -> anyhow::Result<(axum::Router, std::thread::JoinHandle<()>)> {
    build_with(config, image_source::S3Images::default()).await
}

/// [`build`], reading S3-referenced images with `s3_images`.
pub async fn build_with(config: &ServeConfig, s3_images: image_source::S3Images) -> anyhow::Result<(axum::Router, std::thread::JoinHandle<()>)> {
    if let Some(uri) = &config.model_s3_uri {
        model_source::fetch_from_s3(uri, &config.model_dir).await?;
    }
    // The CUDA build uses the first GPU when there is one; otherwise CPU.
    let device = Device::cuda_if_available(0)?;
    let dtype = match config.dtype.as_str() {
        "f16" => candle_core::DType::F16,
        "bf16" => candle_core::DType::BF16,
        _ => candle_core::DType::F32,
    };
    anyhow::ensure!(
        !(device.is_cpu() && dtype == candle_core::DType::BF16),
        "--dtype bf16 needs a GPU (candle has no bf16 matrix multiply on CPU); use f32 or f16"
    );
    let classifier = Arc::new(Classifier::load(&config.model_dir, &device, dtype)?);
    tracing::info!(model = %classifier.manifest.name, version = %classifier.manifest.version, trained = classifier.manifest.trained, ?device, ?dtype, "model loaded");
    let metrics = Arc::new(Metrics::new(config.max_batch_size));
    let (queue, warm, thread) = Queue::start(classifier.clone(), config.max_batch_size, config.max_concurrent_requests, metrics.clone())?;
    let ready = Arc::new(AtomicBool::new(false));
    let flag = ready.clone();
    tokio::spawn(async move {
        match warm.await {
            Ok(Ok(())) => flag.store(true, Ordering::Release),
            Ok(Err(e)) => tracing::error!(error = %e, "warm-up failed; /ping stays 503"),
            Err(_) => tracing::error!("the inference thread ended during warm-up"),
        }
    });
    let limits = Limits { max_bytes: config.max_body_bytes, max_side: config.max_side, ..Limits::default() };
    Ok((router(AppState { classifier, queue, ready, metrics, limits, s3_images }), thread))
}

/// Serves until SIGTERM or Ctrl-C, then stops accepting connections and
/// finishes the requests in flight (SageMaker allows 30 s) before returning.
pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let (app, thread) = build(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "model server listening");
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    // The router (and with it the queue's sender) is gone: the device
    // thread drains what is left and ends.
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    tracing::info!("model server stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
    tracing::info!("shutdown signal: finishing requests in flight");
}
