//! `POST /v1/predict`: the image in the request, the findings in the
//! answer, for API clients. The study is recorded like any other (image in
//! S3, run in PostgreSQL, copies in DynamoDB) and runs the same pipeline as
//! an upload.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::problem::ApiError;
use crate::state::AppState;
use crate::views::{StudyView, study_path, study_view};

/// The request body of `POST /v1/predict`, for the OpenAPI document: the
/// raw bytes of an image file.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct ImageFile(Vec<u8>);

/// Predict findings for the image in the body (PNG, JPEG or DICOM).
///
/// The format is taken from the file's first bytes, not from Content-Type.
/// Larger images go through `POST /v1/studies` and a presigned upload.
/// When the model endpoint is unavailable or at capacity, the answer
/// (503 or 429, with Retry-After) names the recorded study, whose
/// inference then finishes on its own: poll `GET /v1/studies/{id}`.
#[utoipa::path(post, path = "/v1/predict", tag = "predict",
    request_body(content = ImageFile, content_type = "application/octet-stream", description = "The image file: PNG, JPEG or DICOM, up to 6 MB"),
    responses(
        (status = 201, description = "Findings; the study is recorded at Location", body = StudyView),
        (status = 400, description = "Empty body", content_type = "application/problem+json"),
        (status = 413, description = "Body over the synchronous limit", content_type = "application/problem+json"),
        (status = 415, description = "Not PNG, JPEG or DICOM", content_type = "application/problem+json"),
        (status = 422, description = "Unreadable image, or refused by the model", content_type = "application/problem+json"),
        (status = 429, description = "Too many predictions at once; retry after Retry-After", content_type = "application/problem+json"),
        (status = 503, description = "Model endpoint unavailable; the study finishes later", content_type = "application/problem+json"),
    ))]
pub async fn predict(
    State(state): State<AppState>,
    Caller(owner): Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, HeaderMap, Json<StudyView>), ApiError> {
    let Ok(_slot) = state.predict_slots.clone().try_acquire_owned() else {
        return Err(ApiError::TooManyRequests("too many predictions in flight; retry shortly".into()));
    };
    let limit = state.settings.predict_max_bytes;
    let image = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(format!("the body is over {limit} bytes; upload larger images with POST /v1/studies")),
        _ => ApiError::BadRequest(e.body_text()),
    })?;
    if image.is_empty() {
        return Err(ApiError::BadRequest("the body is empty; send the image file".into()));
    }
    if image.len() > limit {
        return Err(ApiError::PayloadTooLarge(format!("{} bytes is over the {limit}-byte limit; upload larger images with POST /v1/studies", image.len())));
    }
    let snapshot = state.inference.predict(&owner, image, &state.images, state.settings.inference.lease).await?;
    let id = snapshot.id;
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&study_path(id)) {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::CREATED, headers, Json(study_view(&state, snapshot).await.map_err(|e| e.about(id))?)))
}

/// This module's routes (merged with the others in [`crate::app::routes`]).
pub fn router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(routes!(predict))
}
