//! The HTTP surface: SageMaker's container contract (`GET /ping`,
//! `POST /invocations`), the runtime API path the AWS SDK calls
//! (`POST /endpoints/{name}/invocations`, so `aws-sdk-sagemakerruntime`
//! works against this server locally), and `GET /metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use std::collections::{BTreeMap, HashMap};

use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cxr_domain::invocation::{CamBox, DECISION_THRESHOLD, Finding, Heatmap, ImageInfo, InvocationResponse, ModelInfo, Preview, encode_png};
use cxr_inference::decode::{Decoded, Limits, decode};
use cxr_inference::models::{Classifier, ModelInput};

use crate::metrics::{Metrics, StatusLabel};
use crate::problem::{ApiError, problem};
use crate::queue::{Explain, ExplainRequest, Queue};

#[derive(Clone)]
pub struct AppState {
    pub classifier: Arc<Classifier>,
    pub queue: Queue,
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// Reads images that requests name by S3 URI.
    pub s3_images: crate::image_source::S3Images,
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

/// Long side of previews, in pixels.
const PREVIEW_MAX_SIDE: u32 = 1024;

/// An option from the query string, or from SageMaker's
/// `X-Amzn-SageMaker-Custom-Attributes` header (`explain=top;preview=1`),
/// which is how a SageMaker endpoint passes options through.
fn option(query: &HashMap<String, String>, headers: &HeaderMap, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    let from_header = headers
        .get("x-amzn-sagemaker-custom-attributes")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split([',', ';']).find_map(|kv| kv.trim().strip_prefix(prefix.as_str()).map(str::to_owned)));
    query.get(name).cloned().or(from_header)
}

/// `explain=<label>` or `explain=top` (query or custom attributes).
fn explain_request(state: &AppState, query: &HashMap<String, String>, headers: &HeaderMap) -> Result<Option<ExplainRequest>, ApiError> {
    let Some(wanted) = option(query, headers, "explain") else {
        return Ok(None);
    };
    if wanted.eq_ignore_ascii_case("top") {
        return Ok(Some(ExplainRequest::Top));
    }
    state
        .classifier
        .manifest
        .labels
        .iter()
        .position(|l| l.eq_ignore_ascii_case(&wanted))
        .map(|i| Some(ExplainRequest::Label(i)))
        .ok_or(ApiError::UnknownLabel(wanted))
}

async fn invocations(State(state): State<AppState>, Query(query): Query<HashMap<String, String>>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let preview = option(&query, &headers, "preview").is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let result = match explain_request(&state, &query, &headers) {
        Ok(explain) => match state.s3_images.resolve(content_type, body, state.limits.max_bytes).await {
            Ok(image) => invoke(&state, image, explain, preview).await,
            Err(err) => Err(err),
        },
        Err(err) => Err(err),
    };
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

async fn invoke(state: &AppState, body: Bytes, explain: Option<ExplainRequest>, preview: bool) -> Result<InvocationResponse, ApiError> {
    let started = Instant::now();
    if !state.ready.load(Ordering::Acquire) {
        return Err(ApiError::NotReady);
    }
    let permit = state.queue.admit()?;
    // Decoding and preprocessing are CPU work: off the async threads.
    let (classifier, limits) = (state.classifier.clone(), state.limits);
    let (decoded, input, preview): (Decoded, ModelInput, Option<Preview>) = tokio::task::spawn_blocking(move || {
        let decoded = decode(&body, &limits)?;
        let input = classifier.preprocess(&decoded);
        let preview = if preview {
            let (png, width, height) = cxr_inference::explain::preview_png(&decoded.pixels, PREVIEW_MAX_SIDE).map_err(|e| ApiError::Internal(e.to_string()))?;
            Some(Preview { width, height, png_base64: encode_png(&png) })
        } else {
            None
        };
        Ok::<_, ApiError>((decoded, input, preview))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let decoded_at = Instant::now();
    state.metrics.decode_seconds.observe((decoded_at - started).as_secs_f64());
    let explain = explain.map(|request| Explain { request, width: decoded.pixels.width, height: decoded.pixels.height });
    let prediction = state.queue.infer(input, explain, decoded_at, &permit).await?;
    drop(permit);
    let manifest = &state.classifier.manifest;
    let (boxes, heatmap) = match &prediction.explanation {
        None => (Vec::new(), None),
        Some(explanation) => {
            let label = manifest.labels.get(explanation.label).cloned().unwrap_or_default();
            let png = cxr_inference::explain::overlay_png(&explanation.heatmap).map_err(|e| ApiError::Internal(e.to_string()))?;
            let boxes = explanation
                .boxes
                .iter()
                .map(|b| CamBox { label: label.clone(), x_min: b.x_min, y_min: b.y_min, width: b.width, height: b.height, score: b.score })
                .collect();
            let heatmap = Heatmap {
                label,
                width: explanation.heatmap.width,
                height: explanation.heatmap.height,
                scale: explanation.heatmap.scale,
                png_base64: encode_png(&png),
            };
            (boxes, Some(heatmap))
        }
    };
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    Ok(InvocationResponse {
        model: ModelInfo { name: manifest.name.clone(), version: manifest.version.clone(), trained: Some(manifest.trained) },
        image: ImageInfo { format: decoded.format, width: decoded.pixels.width, height: decoded.pixels.height, bit_depth: decoded.bit_depth },
        findings: manifest
            .labels
            .iter()
            .zip(prediction.probabilities)
            .map(|(label, probability)| Finding { label: label.clone(), probability, threshold: Some(DECISION_THRESHOLD) })
            .collect(),
        boxes,
        heatmap,
        preview,
        batch_size: prediction.batch_size,
        timings_ms: BTreeMap::from([
            ("decode".to_owned(), ms(decoded_at - started)),
            ("queue".to_owned(), ms(prediction.queued)),
            ("inference".to_owned(), ms(prediction.inference)),
            ("total".to_owned(), ms(started.elapsed())),
        ]),
    })
}
