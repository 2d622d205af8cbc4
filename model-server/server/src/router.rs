//! The HTTP surface: SageMaker's container contract (`GET /ping`,
//! `POST /invocations`), the runtime API path the AWS SDK calls
//! (`POST /endpoints/{name}/invocations`, so `aws-sdk-sagemakerruntime`
//! works against this server locally), and `GET /metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cxr_inference::decode::{Decoded, Format, Limits, decode};
use cxr_inference::models::{Classifier, ModelInput};
use serde::Serialize;

use crate::metrics::{Metrics, StatusLabel};
use crate::problem::{ApiError, problem};
use crate::queue::Queue;

#[derive(Clone)]
pub struct AppState {
    pub classifier: Arc<Classifier>,
    pub queue: Queue,
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.limits.max_bytes;
    Router::new()
        .route("/ping", get(ping))
        .route("/invocations", post(invocations))
        .route("/endpoints/{name}/invocations", post(invocations))
        .route("/metrics", get(metrics))
        // A larger body is refused with 413 before it is read whole.
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// 200 only once the model is loaded and warmed up.
async fn ping(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok").into_response()
    } else {
        problem(StatusCode::SERVICE_UNAVAILABLE, "the model is still loading")
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.encode()).into_response()
}

/// The answer to one image.
#[derive(Debug, Serialize)]
pub struct InvocationResponse {
    pub model: ModelInfo,
    pub image: ImageInfo,
    /// Every label, in the model's output order.
    pub findings: Vec<Finding>,
    /// CAM-derived boxes (not yet produced: always empty).
    pub boxes: Vec<serde_json::Value>,
    /// Grad-CAM overlay (not yet produced: always null).
    pub heatmap: Option<String>,
    /// Images in the device batch this one ran in.
    pub batch_size: usize,
    pub timings_ms: Timings,
}

#[derive(Debug, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    /// False when the weights are generated, not trained: the
    /// probabilities then mean nothing clinically.
    pub trained: bool,
}

#[derive(Debug, Serialize)]
pub struct ImageInfo {
    pub format: Format,
    pub width: usize,
    pub height: usize,
    pub bit_depth: u16,
}

#[derive(Debug, Serialize)]
pub struct Finding {
    pub label: String,
    pub probability: f32,
}

#[derive(Debug, Serialize)]
pub struct Timings {
    pub decode: f64,
    pub queue: f64,
    pub inference: f64,
    pub total: f64,
}

async fn invocations(State(state): State<AppState>, body: Bytes) -> Response {
    let result = invoke(&state, body).await;
    let response = match result {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(err) => {
            if err.status().is_server_error() {
                tracing::error!(error = %err, "invocation failed");
            }
            err.into_response()
        }
    };
    state.metrics.requests.get_or_create(&StatusLabel { status: response.status().as_u16() }).inc();
    response
}

async fn invoke(state: &AppState, body: Bytes) -> Result<InvocationResponse, ApiError> {
    let started = Instant::now();
    if !state.ready.load(Ordering::Acquire) {
        return Err(ApiError::NotReady);
    }
    let permit = state.queue.admit()?;
    // Decoding and preprocessing are CPU work: off the async threads.
    let (classifier, limits) = (state.classifier.clone(), state.limits);
    let (decoded, input): (Decoded, ModelInput) = tokio::task::spawn_blocking(move || {
        let decoded = decode(&body, &limits)?;
        let input = classifier.preprocess(&decoded);
        Ok::<_, ApiError>((decoded, input))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let decoded_at = Instant::now();
    state.metrics.decode_seconds.observe((decoded_at - started).as_secs_f64());
    let prediction = state.queue.infer(input, decoded_at, &permit).await?;
    drop(permit);
    let manifest = &state.classifier.manifest;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    Ok(InvocationResponse {
        model: ModelInfo { name: manifest.name.clone(), version: manifest.version.clone(), trained: manifest.trained },
        image: ImageInfo { format: decoded.format, width: decoded.pixels.width, height: decoded.pixels.height, bit_depth: decoded.bit_depth },
        findings: manifest
            .labels
            .iter()
            .zip(prediction.probabilities)
            .map(|(label, probability)| Finding { label: label.clone(), probability })
            .collect(),
        boxes: Vec::new(),
        heatmap: None,
        batch_size: prediction.batch_size,
        timings_ms: Timings {
            decode: ms(decoded_at - started),
            queue: ms(prediction.queued),
            inference: ms(prediction.inference),
            total: ms(started.elapsed()),
        },
    })
}
