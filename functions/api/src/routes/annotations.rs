//! Radiologist annotations on a study: labels from a known label set,
//! boxes inside the image.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use cxr_platform::domain::{LabelSets, PixelBox, StudyId};
use cxr_platform::storage::postgres::studies::{AnnotationRecord, NewAnnotation, StudyRecord};
use serde::Deserialize;

use crate::app::AppState;
use crate::auth::Caller;
use crate::problem::ApiError;

/// `POST /v1/studies/{id}/annotations` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAnnotation {
    /// Defaults to `vinbigdata`, the data mart's categories.
    #[serde(default = "default_label_set")]
    pub label_set: String,
    pub label: String,
    /// `[x_min, y_min]` from the top-left, in original pixels; omit for an
    /// image-level label.
    #[serde(rename = "box")]
    #[schema(value_type = Option<PixelBox>)]
    pub bbox: Option<serde_json::Value>,
}

fn default_label_set() -> String {
    "vinbigdata".into()
}

async fn owned_study(state: &AppState, owner: &cxr_platform::domain::Owner, id: &str) -> Result<StudyRecord, ApiError> {
    let id: StudyId = id.parse().map_err(|_| ApiError::NotFound)?;
    state.db.find_study(owner, id).await?.ok_or(ApiError::NotFound)
}

/// Add a radiologist annotation: a label of a known label set, with an
/// optional box inside the image.
#[utoipa::path(post, path = "/v1/studies/{id}/annotations", operation_id = "create_annotation", tag = "annotations",
    params(("id" = String, Path, description = "Study id (UUID)"),
           ("Idempotency-Key" = Option<String>, Header, description = "Makes retries of this request safe")),
    request_body = CreateAnnotation,
    responses(
        (status = 201, description = "Annotation stored", body = AnnotationRecord),
        (status = 400, description = "Malformed body", content_type = "application/problem+json"),
        (status = 404, description = "No such study of this caller", content_type = "application/problem+json"),
        (status = 409, description = "A box before the image has been read", content_type = "application/problem+json"),
        (status = 422, description = "Unknown label set or label, or a box outside the image", content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Caller(owner): Caller,
    Path(id): Path<String>,
    body: Result<Json<CreateAnnotation>, JsonRejection>,
) -> Result<(StatusCode, Json<AnnotationRecord>), ApiError> {
    let Json(request) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let study = owned_study(&state, &owner, &id).await?;
    let set = LabelSets::builtin().get(&request.label_set).ok_or_else(|| ApiError::Unprocessable(format!("unknown label set {:?}", request.label_set)))?;
    if !set.contains(&request.label) {
        return Err(ApiError::Unprocessable(format!("{:?} is not a label of {}", request.label, set.name)));
    }
    let bbox = match request.bbox {
        None => None,
        Some(raw) => {
            let bbox: PixelBox = serde_json::from_value(raw).map_err(|e| ApiError::Unprocessable(format!("box: {e}")))?;
            // Bounds are known once the upload has been read.
            let (Some(width), Some(height)) = (study.width, study.height) else {
                return Err(ApiError::Conflict("the image has not been processed yet; boxes can be added once it has".into()));
            };
            Some(bbox.within(width, height).map_err(|e| ApiError::Unprocessable(e.to_string()))?)
        }
    };
    let annotation = NewAnnotation { label_set: set.name.clone(), label: request.label, bbox, author: owner };
    let record = state.db.add_annotation(study.row_id, &annotation).await?;
    Ok((StatusCode::CREATED, Json(record)))
}

/// The study's annotations, oldest first.
#[utoipa::path(get, path = "/v1/studies/{id}/annotations", operation_id = "list_annotations", tag = "annotations",
    params(("id" = String, Path, description = "Study id (UUID)")),
    responses(
        (status = 200, description = "Annotations", body = Vec<AnnotationRecord>),
        (status = 404, description = "No such study of this caller", content_type = "application/problem+json"),
    ))]
pub async fn list(State(state): State<AppState>, Caller(owner): Caller, Path(id): Path<String>) -> Result<Json<Vec<AnnotationRecord>>, ApiError> {
    let study = owned_study(&state, &owner, &id).await?;
    Ok(Json(state.db.annotations(study.row_id).await?))
}
