//! Radiologist annotations on a study: labels from a known label set,
//! boxes inside the image. Edits and deletions keep the history (who
//! changed what and when); the list shows the current state.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use cxr_platform::domain::{LabelSet, Owner};
use cxr_platform::domain::{LabelSets, PixelBox, StudyId};
use cxr_platform::storage::postgres::studies::{AnnotationChange, NewAnnotation, StudyRecord};
use serde::Deserialize;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::extract::ApiJson;
use crate::problem::ApiError;
use crate::state::AppState;
use crate::views::{Annotation, Revision};

/// `POST /v1/studies/{id}/annotations` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAnnotation {
    /// Defaults to `vinbigdata`, the data mart's categories; the sets and
    /// their labels are at `GET /v1/label-sets`.
    #[serde(default = "default_label_set")]
    #[schema(min_length = 1)]
    pub label_set: String,
    #[schema(min_length = 1)]
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

async fn owned_study(state: &AppState, owner: &Owner, id: &str) -> Result<StudyRecord, ApiError> {
    let id: StudyId = id.parse().map_err(|_| ApiError::NotFound)?;
    state.db.find_study(owner, id).await?.ok_or(ApiError::NotFound)
}

fn label_set(name: &str) -> Result<&'static LabelSet, ApiError> {
    LabelSets::builtin().get(name).ok_or_else(|| ApiError::Unprocessable(format!("unknown label set {name:?}")))
}

fn check_label(set: &LabelSet, label: &str) -> Result<(), ApiError> {
    if set.contains(label) { Ok(()) } else { Err(ApiError::Unprocessable(format!("{label:?} is not a label of {}", set.name))) }
}

/// A box from a request body, inside the study's image.
fn checked_box(study: &StudyRecord, raw: serde_json::Value) -> Result<PixelBox, ApiError> {
    let bbox: PixelBox = serde_json::from_value(raw).map_err(|e| ApiError::Unprocessable(format!("box: {e}")))?;
    // Bounds are known once the upload has been read.
    let (Some(width), Some(height)) = (study.width, study.height) else {
        return Err(ApiError::Conflict("the image has not been processed yet; boxes can be added once it has".into()));
    };
    bbox.within(width, height).map_err(|e| ApiError::Unprocessable(e.to_string()))
}

fn annotation_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse().map_err(|_| ApiError::AnnotationNotFound)
}

/// Add a radiologist annotation: a label of a known label set, with an
/// optional box inside the image.
#[utoipa::path(post, path = "/v1/studies/{id}/annotations", operation_id = "create_annotation", tag = "annotations",
    params(("id" = String, Path, format = Uuid, description = "Study id")),
    request_body = CreateAnnotation,
    responses(
        (status = 201, description = "Annotation stored", body = Annotation),
        (status = 404, description = "No such study of this caller", content_type = "application/problem+json"),
        (status = 409, description = "A box before the image has been read", content_type = "application/problem+json"),
        (status = 422, description = "Unknown label set or label, or a box outside the image", content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Caller(owner): Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<CreateAnnotation>,
) -> Result<(StatusCode, Json<Annotation>), ApiError> {
    let study = owned_study(&state, &owner, &id).await?;
    let set = label_set(&request.label_set)?;
    check_label(set, &request.label)?;
    let bbox = request.bbox.map(|raw| checked_box(&study, raw)).transpose()?;
    let annotation = NewAnnotation { label_set: set.name.clone(), label: request.label, bbox, author: owner };
    let record = state.db.add_annotation(study.row_id, &annotation).await?;
    Ok((StatusCode::CREATED, Json(record.into())))
}

/// The study's annotations, oldest first.
#[utoipa::path(get, path = "/v1/studies/{id}/annotations", operation_id = "list_annotations", tag = "annotations",
    params(("id" = String, Path, format = Uuid, description = "Study id")),
    responses(
        (status = 200, description = "Annotations", body = Vec<Annotation>),
        (status = 404, description = "No such study of this caller", content_type = "application/problem+json"),
    ))]
pub async fn list(State(state): State<AppState>, Caller(owner): Caller, Path(id): Path<String>) -> Result<Json<Vec<Annotation>>, ApiError> {
    let study = owned_study(&state, &owner, &id).await?;
    Ok(Json(state.db.annotations(study.row_id).await?.into_iter().map(Annotation::from).collect()))
}

/// `PATCH /v1/studies/{id}/annotations/{annotation_id}` body: the fields
/// to change. `"box": null` turns the annotation into an image-level label.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAnnotation {
    /// A label of the annotation's label set.
    #[schema(min_length = 1)]
    pub label: Option<String>,
    /// The new box; `null` removes it; absent leaves it.
    #[serde(rename = "box", default, deserialize_with = "present")]
    #[schema(value_type = Option<PixelBox>)]
    pub bbox: Option<Option<serde_json::Value>>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<serde_json::Value>>, D::Error> {
    Ok(Some(Option::<serde_json::Value>::deserialize(d)?))
}

/// Change an annotation's label or box. The change is kept in the
/// annotation's history with who made it.
#[utoipa::path(patch, path = "/v1/studies/{id}/annotations/{annotation_id}", operation_id = "update_annotation", tag = "annotations",
    params(("id" = String, Path, format = Uuid, description = "Study id"),
           ("annotation_id" = i64, Path, description = "Annotation id")),
    request_body = UpdateAnnotation,
    responses(
        (status = 200, description = "The annotation as changed", body = Annotation),
        (status = 404, description = "No such study of this caller, or no such annotation on it", content_type = "application/problem+json"),
        (status = 409, description = "A box before the image has been read", content_type = "application/problem+json"),
        (status = 422, description = "Unknown label, nothing to change, or a box outside the image", content_type = "application/problem+json"),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Caller(owner): Caller,
    Path((id, annotation)): Path<(String, String)>,
    ApiJson(request): ApiJson<UpdateAnnotation>,
) -> Result<Json<Annotation>, ApiError> {
    let study = owned_study(&state, &owner, &id).await?;
    let annotation = annotation_id(&annotation)?;
    if request.label.is_none() && request.bbox.is_none() {
        return Err(ApiError::Unprocessable("nothing to change: give a label, a box, or both".into()));
    }
    let current = state.db.annotations(study.row_id).await?.into_iter().find(|a| a.id == annotation).ok_or(ApiError::AnnotationNotFound)?;
    if let Some(label) = &request.label {
        check_label(label_set(&current.label_set)?, label)?;
    }
    let bbox = match request.bbox {
        None => None,
        Some(None) => Some(None),
        Some(Some(raw)) => Some(Some(checked_box(&study, raw)?)),
    };
    let change = AnnotationChange { label: request.label, bbox };
    let record = state.db.update_annotation(study.row_id, annotation, &change, &owner).await?.ok_or(ApiError::AnnotationNotFound)?;
    Ok(Json(record.into()))
}

/// Delete an annotation. It leaves the study (and the next backup,
/// warehouse load and COCO export); its history keeps what it was and who
/// deleted it.
#[utoipa::path(delete, path = "/v1/studies/{id}/annotations/{annotation_id}", operation_id = "delete_annotation", tag = "annotations",
    params(("id" = String, Path, format = Uuid, description = "Study id"),
           ("annotation_id" = i64, Path, description = "Annotation id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such study of this caller, or no such annotation on it", content_type = "application/problem+json"),
    ))]
pub async fn delete(State(state): State<AppState>, Caller(owner): Caller, Path((id, annotation)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    let study = owned_study(&state, &owner, &id).await?;
    let annotation = annotation_id(&annotation)?;
    if state.db.delete_annotation(study.row_id, annotation, &owner).await? { Ok(StatusCode::NO_CONTENT) } else { Err(ApiError::AnnotationNotFound) }
}

/// Every change to the study's annotations, oldest first, deleted ones
/// included.
#[utoipa::path(get, path = "/v1/studies/{id}/annotations/history", operation_id = "annotation_history", tag = "annotations",
    params(("id" = String, Path, format = Uuid, description = "Study id")),
    responses(
        (status = 200, description = "The history", body = Vec<Revision>),
        (status = 404, description = "No such study of this caller", content_type = "application/problem+json"),
    ))]
pub async fn history(State(state): State<AppState>, Caller(owner): Caller, Path(id): Path<String>) -> Result<Json<Vec<Revision>>, ApiError> {
    let study = owned_study(&state, &owner, &id).await?;
    Ok(Json(state.db.annotation_history(study.row_id).await?.into_iter().map(Revision::from).collect()))
}

/// This module's routes (merged with the others in [`crate::app::routes`]).
pub fn router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(update, delete)).routes(routes!(history))
}
