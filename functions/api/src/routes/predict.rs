//! `POST /v1/predict`: the image in the request, the findings in the
//! answer, for API clients. The study is recorded like any other (image in
//! S3, run in PostgreSQL, copies in DynamoDB) and runs the same pipeline as
//! an upload.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use cxr_infer::Outcome;
use cxr_platform::domain::MediaType;
use cxr_platform::imaging::describe;
use cxr_platform::storage::postgres::studies::NewStudy;
use cxr_platform::storage::s3::ObjectKey;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::problem::ApiError;
use crate::routes::studies::current_snapshot;
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
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries of this request safe")),
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
    let media_type = MediaType::sniff(&image).ok_or_else(|| ApiError::UnsupportedMediaType("the body is not a PNG, JPEG or DICOM file".into()))?;
    let facts = describe(&image, media_type).map_err(|e| ApiError::Unprocessable(format!("the image cannot be read: {e}")))?;

    let db = &state.db;
    let study = db.create_study(&NewStudy { owner: owner.clone(), s3_bucket: state.images.bucket().to_owned(), media_type }).await?;
    let id = study.id;
    let study = db.record_upload(study.row_id, &facts).await.map_err(|e| ApiError::from(e).about(id))?;
    // Claimed before the image lands in S3, so the upload event it fires
    // finds the study in flight and leaves it to this request.
    let study = db
        .claim_for_inference(study.row_id, state.settings.inference.lease)
        .await
        .map_err(|e| ApiError::from(e).about(id))?
        .ok_or_else(|| ApiError::Internal("a new study could not be claimed".into()).about(id))?;
    let key = ObjectKey::new(study.s3_key.clone()).map_err(|e| ApiError::Internal(e.to_string()).about(id))?;
    if let Err(err) = state.images.put(&key, image.clone(), media_type.as_str()).await {
        // Nothing to retry from: the caller still has the image and retries.
        let _ = db.set_study_status(study.row_id, cxr_platform::domain::StudyStatus::Failed, Some("the image could not be stored")).await;
        return Err(ApiError::from(err).about(id));
    }
    let snapshot = match state.inference.run(&study, &image, &facts, &state.images).await.map_err(|e| ApiError::from(e).about(id))? {
        // The pipeline read the stored study back for its DynamoDB copy.
        Outcome::Done { snapshot: Some(snapshot), .. } => *snapshot,
        Outcome::Done { snapshot: None, .. } => {
            let finished = db.find_study(&owner, id).await.map_err(|e| ApiError::from(e).about(id))?.ok_or_else(|| ApiError::NotFound.about(id))?;
            current_snapshot(&state, &finished).await.map_err(|e| e.about(id))?
        }
        Outcome::Failed(reason) => return Err(ApiError::Unprocessable(reason).about(id)),
    };
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
