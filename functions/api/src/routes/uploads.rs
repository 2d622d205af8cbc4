//! Finishing a multipart upload (images over the single-PUT limit).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use cxr_platform::domain::{StudyId, StudyStatus};
use cxr_platform::storage::s3::S3Error;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::extract::ApiJson;
use crate::problem::ApiError;
use crate::routes::studies::current_snapshot;
use crate::state::AppState;
use crate::views::{StudyView, study_view};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteUpload {
    #[schema(min_length = 1)]
    pub upload_id: String,
    /// Every part, as uploaded, in ascending `part_number` order: its
    /// number and the ETag its PUT answered.
    #[schema(min_items = 1, max_items = 10000)]
    pub parts: Vec<CompletedPart>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompletedPart {
    /// S3 numbers parts 1 to 10,000.
    #[schema(minimum = 1, maximum = 10000)]
    #[serde(deserialize_with = "crate::extract::json_integer")]
    pub part_number: i32,
    #[schema(min_length = 1)]
    pub etag: String,
}

/// Assemble the uploaded parts into the study's image.
///
/// S3 then reports the new object and inference starts, as for a single PUT.
#[utoipa::path(post, path = "/v1/studies/{id}/upload/complete", operation_id = "complete_upload", tag = "studies",
    params(("id" = String, Path, format = Uuid, description = "Study id")),
    request_body = CompleteUpload,
    responses(
        (status = 202, description = "Upload complete; inference follows", body = StudyView),
        (status = 404, description = "No such study of this caller", content_type = "application/problem+json"),
        (status = 409, description = "The study's image was already uploaded", content_type = "application/problem+json"),
        (status = 422, description = "Parts missing, out of order, or not matching what was uploaded", content_type = "application/problem+json"),
    ))]
pub async fn complete(
    State(state): State<AppState>,
    Caller(owner): Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<CompleteUpload>,
) -> Result<(StatusCode, Json<StudyView>), ApiError> {
    let id: StudyId = id.parse().map_err(|_| ApiError::NotFound)?;
    let study = state.db.find_study(&owner, id).await?.ok_or(ApiError::NotFound)?;
    if study.status != StudyStatus::Created {
        return Err(ApiError::Conflict(format!("the study is {}; its image was uploaded already", study.status.as_str())));
    }
    if request.parts.is_empty() || request.parts.windows(2).any(|w| w[0].part_number >= w[1].part_number) {
        return Err(ApiError::Unprocessable("parts must be listed in ascending part_number order, at least one".into()));
    }
    let key = &study.s3_key;
    let parts: Vec<(i32, String)> = request.parts.into_iter().map(|p| (p.part_number, p.etag)).collect();
    match state.images.complete_multipart_upload(key, &request.upload_id, &parts).await {
        Ok(()) => {}
        Err(S3Error::Service { status, code, message }) if (400..500).contains(&status) => {
            return Err(ApiError::Unprocessable(format!("S3 refused the parts ({code}): {message}")));
        }
        Err(S3Error::NotFound { .. }) => return Err(ApiError::Unprocessable("no such upload_id for this study".into())),
        Err(S3Error::AlreadyExists { .. }) => return Err(ApiError::Conflict("the study's image was uploaded already; it is never replaced".into())),
        Err(err) => return Err(err.into()),
    }
    let snapshot = current_snapshot(&state, &study).await?;
    Ok((StatusCode::ACCEPTED, Json(study_view(&state, snapshot).await?)))
}

/// This module's routes (merged with the others in [`crate::app::routes`]).
pub fn router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(routes!(complete))
}
