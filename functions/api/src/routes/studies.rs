//! Studies: create one (with presigned upload URLs), read one, list the
//! caller's. Another owner's study answers 404, exactly like a missing one.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine;
use cxr_platform::domain::{MediaType, StudyId, StudyStatus};
use cxr_platform::storage::postgres::studies::{NewStudy, StudyFilter, StudyOrder, StudyPosition, StudyRecord};
use cxr_platform::storage::results::StudySnapshot;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use cxr_infer::pipeline::DYNAMODB_DEGRADED;

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery};
use crate::problem::ApiError;
use crate::state::AppState;
use crate::views::{StudyView, UploadUrl, study_path, study_view};

/// `POST /v1/studies` body: what the client is about to upload.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStudy {
    /// `image/png`, `image/jpeg` or `application/dicom` (anything else: 415).
    #[schema(value_type = MediaType, example = "image/png")]
    pub content_type: String,
    /// Exact size in bytes of the file to upload (the maximum is the
    /// server's image limit).
    #[schema(minimum = 1)]
    #[serde(deserialize_with = "crate::extract::json_integer")]
    pub content_length: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedStudy {
    pub id: StudyId,
    pub status: StudyStatus,
    /// How to upload the image: one PUT, or a multipart upload for files
    /// over the single-PUT limit.
    pub upload: UploadInstructions,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UploadInstructions {
    /// PUT the whole file to `url` with exactly `headers`, before `expires_at`.
    Single(UploadUrl),
    /// PUT each part to its URL, then POST the parts' ETags to `complete_url`.
    Multipart(MultipartInstructions),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MultipartInstructions {
    pub upload_id: String,
    pub part_size: u64,
    pub parts: Vec<PartUpload>,
    /// `POST` here with `{"upload_id", "parts": [{"part_number", "etag"}]}`.
    pub complete_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PartUpload {
    pub part_number: i32,
    /// Bytes `[offset, offset + size)` of the file.
    pub offset: u64,
    pub size: u64,
    pub upload: UploadUrl,
}

/// Create a study and get where to upload its image.
///
/// The content type is checked again from the file's first bytes when it
/// arrives; a file that is not what was declared fails the study.
#[utoipa::path(post, path = "/v1/studies", operation_id = "create_study", tag = "studies",
    request_body = CreateStudy,
    responses(
        (status = 201, description = "Study created; upload the image as instructed", body = CreatedStudy),
        (status = 413, description = "content_length over the image limit", content_type = "application/problem+json"),
        (status = 415, description = "content_type not PNG, JPEG or DICOM, or the body not application/json", content_type = "application/problem+json"),
        (status = 422, description = "content_length 0, or Idempotency-Key reused for another request", content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Caller(owner): Caller,
    ApiJson(request): ApiJson<CreateStudy>,
) -> Result<(StatusCode, Json<CreatedStudy>), ApiError> {
    // Exactly one of the documented values (no parameters, no case games).
    let media_type = MediaType::ALL
        .into_iter()
        .find(|m| m.as_str() == request.content_type)
        .ok_or_else(|| ApiError::UnsupportedMediaType(format!("{:?} is not image/png, image/jpeg or application/dicom", request.content_type)))?;
    let settings = &state.settings;
    if request.content_length == 0 {
        return Err(ApiError::Unprocessable("content_length must be at least 1".into()));
    }
    if request.content_length > settings.max_image_bytes {
        return Err(ApiError::PayloadTooLarge(format!("{} bytes is more than the {}-byte image limit", request.content_length, settings.max_image_bytes)));
    }
    let study = state.db.create_study(&NewStudy { owner, s3_bucket: state.images.bucket().to_owned(), media_type }).await?;
    let key = &study.s3_key;
    let ttl = settings.upload_url_ttl;
    let upload = if request.content_length <= settings.max_upload_bytes {
        UploadInstructions::Single(state.images.presign_put(key, media_type.as_str(), request.content_length, ttl).await?.into())
    } else {
        let upload_id = state.images.create_multipart_upload(key, media_type.as_str()).await?;
        let part_size = settings.multipart_part_bytes;
        let mut parts = Vec::new();
        let mut offset = 0;
        while offset < request.content_length {
            let size = part_size.min(request.content_length - offset);
            let part_number = i32::try_from(parts.len() + 1).map_err(|_| ApiError::Internal("too many parts".into()))?;
            let upload = state.images.presign_upload_part(key, &upload_id, part_number, size, ttl).await?;
            parts.push(PartUpload { part_number, offset, size, upload: upload.into() });
            offset += size;
        }
        UploadInstructions::Multipart(MultipartInstructions { upload_id, part_size, parts, complete_url: format!("{}/upload/complete", study_path(study.id)) })
    };
    Ok((StatusCode::CREATED, Json(CreatedStudy { id: study.id, status: study.status, upload })))
}

/// One study: status, findings, presigned image and heatmap URLs.
///
/// Finished studies are read from DynamoDB's hot copy; others (and any
/// finished study whose copy is missing, which is then rewritten, or
/// unreadable) from PostgreSQL.
#[utoipa::path(get, path = "/v1/studies/{id}", operation_id = "get_study", tag = "studies",
    params(("id" = String, Path, format = Uuid, description = "Study id")),
    responses(
        (status = 200, description = "The study", body = StudyView),
        (status = 404, description = "No such study of this caller", content_type = "application/problem+json"),
    ))]
pub async fn get(State(state): State<AppState>, Caller(owner): Caller, Path(id): Path<String>) -> Result<Json<StudyView>, ApiError> {
    // A malformed id is as unknown as someone else's.
    let id: StudyId = id.parse().map_err(|_| ApiError::NotFound)?;
    let copy_missing = match state.results.snapshot(id).await {
        Ok(Some(snapshot)) if snapshot.owner == owner => {
            return Ok(Json(study_view(&state, snapshot).await?));
        }
        Ok(Some(_)) => return Err(ApiError::NotFound),
        Ok(None) => true,
        Err(err) => {
            tracing::warn!(event = DYNAMODB_DEGRADED, error = %err, "hot copy unreadable; reading PostgreSQL");
            // A DynamoDB that just failed a read would most likely fail
            // (or time out on) the repair too; the next read repairs it.
            false
        }
    };
    let study = state.db.find_study(&owner, id).await?.ok_or(ApiError::NotFound)?;
    let snapshot = current_snapshot(&state, &study).await?;
    if copy_missing
        && snapshot.is_finished()
        && let Err(err) = state.results.put_snapshot(&snapshot).await
    {
        tracing::warn!(event = DYNAMODB_DEGRADED, error = %err, study = %id, "hot copy not repaired");
    }
    Ok(Json(study_view(&state, snapshot).await?))
}

/// A study and its latest run, as PostgreSQL has them.
pub async fn current_snapshot(state: &AppState, study: &StudyRecord) -> Result<StudySnapshot, ApiError> {
    Ok(StudySnapshot::read(&state.db, study).await?.0)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only studies in this status.
    #[param(inline)]
    pub status: Option<StudyStatus>,
    /// Only studies annotated with this label, or whose latest run gives it
    /// at least `min_probability`.
    pub label: Option<String>,
    /// For `label`: the smallest model probability that counts (default 0.5).
    #[param(minimum = 0.0, maximum = 1.0)]
    pub min_probability: Option<f32>,
    /// Created at or after this time (RFC 3339).
    #[param(format = DateTime)]
    pub created_from: Option<String>,
    /// Created before this time (RFC 3339).
    #[param(format = DateTime)]
    pub created_before: Option<String>,
    /// `newest` (default), or `priority`: unreviewed studies waiting past
    /// the wait limit first, then the highest positive probability first.
    #[param(inline)]
    pub sort: Option<ListOrder>,
    /// Page size (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (opaque; one this server did not
    /// make is refused with 400).
    #[param(pattern = "^[A-Za-z0-9_-]+$", max_length = 400)]
    pub cursor: Option<String>,
}

/// `newest` (default) or `priority`: studies not yet reviewed (no
/// annotation) that have waited longer than the worklist's wait limit
/// first, oldest first; then by priority (the highest positive
/// probability), highest first.
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListOrder {
    Newest,
    Priority,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StudyPage {
    pub studies: Vec<StudySummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StudySummary {
    pub id: StudyId,
    pub status: StudyStatus,
    pub media_type: MediaType,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The highest probability among the latest run's positive findings
    /// (0: none positive; absent before inference).
    pub priority: Option<f32>,
    /// The label of that probability (absent when none is positive).
    pub priority_label: Option<String>,
    /// With `sort=priority`: not yet reviewed and waiting longer than the
    /// wait limit, so listed first whatever its priority.
    pub overdue: bool,
}

/// The cursor is opaque to callers: base64url of `created_at|row id`
/// (newest first), or `p|as_of|rank|score|created_at|row id` (priority).
fn encode_cursor(position: &StudyPosition, order: StudyOrder) -> String {
    let text = match (position, order) {
        (StudyPosition::Newest { created_at, row_id }, _) => {
            format!("{}|{row_id}", created_at.unix_timestamp_nanos())
        }
        (StudyPosition::Priority { rank, score, created_at, row_id }, StudyOrder::Priority { as_of, .. }) => {
            format!("p|{}|{rank}|{score}|{}|{row_id}", as_of.unix_timestamp_nanos(), created_at.unix_timestamp_nanos())
        }
        (StudyPosition::Priority { .. }, StudyOrder::Newest) => String::new(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// The position a cursor names, and for priority cursors the `as_of`
/// their listing started at.
fn decode_cursor(cursor: &str) -> Option<(StudyPosition, Option<OffsetDateTime>)> {
    let text = String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let time = |s: &str| OffsetDateTime::from_unix_timestamp_nanos(s.parse().ok()?).ok();
    let parts: Vec<&str> = text.split('|').collect();
    match parts.as_slice() {
        [created_at, row_id] => Some((StudyPosition::Newest { created_at: time(created_at)?, row_id: row_id.parse().ok()? }, None)),
        ["p", as_of, rank, score, created_at, row_id] => Some((
            StudyPosition::Priority { rank: rank.parse().ok()?, score: score.parse().ok()?, created_at: time(created_at)?, row_id: row_id.parse().ok()? },
            Some(time(as_of)?),
        )),
        _ => None,
    }
}

fn timestamp(name: &str, value: Option<&str>) -> Result<Option<OffsetDateTime>, ApiError> {
    value
        .map(|v| {
            OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                .map_err(|e| ApiError::BadRequest(format!("{name} is not an RFC 3339 time: {e}")))
        })
        .transpose()
}

/// The caller's studies, newest first, one page at a time.
#[utoipa::path(get, path = "/v1/studies", operation_id = "list_studies", tag = "studies",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of studies", body = StudyPage),
        (status = 400, description = "Malformed filter or cursor", content_type = "application/problem+json"),
    ))]
pub async fn list(State(state): State<AppState>, Caller(owner): Caller, ApiQuery(query): ApiQuery<ListQuery>) -> Result<Json<StudyPage>, ApiError> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be between 1 and 100".into()));
    }
    let min_probability = query.min_probability.unwrap_or(0.5);
    if !(0.0..=1.0).contains(&min_probability) {
        return Err(ApiError::BadRequest("min_probability must be between 0 and 1".into()));
    }
    let filter = StudyFilter {
        status: query.status,
        label: query.label.clone(),
        label_min_probability: min_probability,
        created_from: timestamp("created_from", query.created_from.as_deref())?,
        created_before: timestamp("created_before", query.created_before.as_deref())?,
    };
    let after = query.cursor.as_deref().map(|c| decode_cursor(c).ok_or_else(|| ApiError::BadRequest("malformed cursor".into()))).transpose()?;
    let order = match query.sort.unwrap_or(ListOrder::Newest) {
        ListOrder::Newest => StudyOrder::Newest,
        ListOrder::Priority => StudyOrder::Priority {
            max_wait: state.settings.worklist_max_wait,
            // Later pages keep the first page's "now", so no study moves
            // between pages as time passes.
            as_of: after.and_then(|(_, as_of)| as_of).unwrap_or_else(OffsetDateTime::now_utc),
        },
    };
    let after = match (after, order) {
        (Some((position @ StudyPosition::Newest { .. }, _)), StudyOrder::Newest) => Some(position),
        (Some((position @ StudyPosition::Priority { .. }, _)), StudyOrder::Priority { .. }) => Some(position),
        (Some(_), _) => {
            return Err(ApiError::BadRequest("this cursor belongs to a listing in another order".into()));
        }
        (None, _) => None,
    };
    // One more than asked: tells whether there is a next page.
    let mut studies = state.db.list_studies(&owner, &filter, order, after, limit + 1).await?;
    let more = studies.len() > limit as usize;
    studies.truncate(limit as usize);
    let next_cursor = if more { studies.last().map(|(_, position)| encode_cursor(position, order)) } else { None };
    Ok(Json(StudyPage {
        studies: studies
            .into_iter()
            .map(|(s, position)| StudySummary {
                id: s.id,
                status: s.status,
                media_type: s.media_type,
                created_at: s.created_at,
                priority: s.priority,
                priority_label: s.priority_label,
                overdue: matches!(position, StudyPosition::Priority { rank: 0, .. }),
            })
            .collect(),
        next_cursor,
    }))
}

/// This module's routes (merged with the others in [`crate::app::routes`]).
pub fn router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(get))
}
