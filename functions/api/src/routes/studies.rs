//! Studies: create one (with a presigned upload URL), read one, list the
//! caller's. Another owner's study answers 404, exactly like a missing one.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use base64::Engine;
use cxr_platform::domain::{MediaType, StudyId, StudyStatus};
use cxr_platform::storage::postgres::studies::{FindingRecord, NewStudy, StudyRecord};
use cxr_platform::storage::s3::{ObjectKey, PresignedUrl};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::app::AppState;
use crate::auth::Caller;
use crate::problem::ApiError;

/// `POST /v1/studies` body: what the client is about to upload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateStudy {
    /// `image/png`, `image/jpeg` or `application/dicom`.
    pub content_type: String,
    /// Exact size in bytes of the file to upload.
    pub content_length: u64,
}

#[derive(Debug, Serialize)]
pub struct CreatedStudy {
    pub id: StudyId,
    pub status: StudyStatus,
    /// PUT the file here with exactly these headers before `expires_at`.
    pub upload: PresignedUrl,
}

#[derive(Debug, Serialize)]
pub struct StudyView {
    pub id: StudyId,
    pub status: StudyStatus,
    pub media_type: MediaType,
    pub width: Option<u32>,
    pub height: Option<u32>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub failure: Option<String>,
    /// The latest model run's findings (empty until inference is done).
    pub findings: Vec<FindingRecord>,
    pub model: Option<ModelView>,
    /// A short-lived GET URL for the image, once it is uploaded.
    pub image_url: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ModelView {
    pub name: String,
    pub version: String,
}

pub async fn create(State(state): State<AppState>, Caller(owner): Caller, body: Result<Json<CreateStudy>, axum::extract::rejection::JsonRejection>) -> Result<(StatusCode, Json<CreatedStudy>), ApiError> {
    let Json(request) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let media_type: MediaType = request
        .content_type
        .parse()
        .map_err(|_| ApiError::UnsupportedMediaType(format!("{:?} is not image/png, image/jpeg or application/dicom", request.content_type)))?;
    if request.content_length == 0 {
        return Err(ApiError::Unprocessable("content_length must be at least 1".into()));
    }
    if request.content_length > state.settings.max_upload_bytes {
        return Err(ApiError::PayloadTooLarge(format!(
            "{} bytes is more than the {}-byte limit for a single upload",
            request.content_length, state.settings.max_upload_bytes
        )));
    }
    let study = state.db.create_study(&NewStudy { owner, s3_bucket: state.images.bucket().to_owned(), media_type }).await?;
    let key = ObjectKey::new(study.s3_key.clone()).map_err(|e| ApiError::Internal(e.to_string()))?;
    let upload = state.images.presign_put(&key, media_type.as_str(), request.content_length, state.settings.upload_url_ttl).await?;
    Ok((StatusCode::CREATED, Json(CreatedStudy { id: study.id, status: study.status, upload })))
}

pub async fn get(State(state): State<AppState>, Caller(owner): Caller, Path(id): Path<String>) -> Result<Json<StudyView>, ApiError> {
    // A malformed id is as unknown as someone else's.
    let id: StudyId = id.parse().map_err(|_| ApiError::NotFound)?;
    let study = state.db.find_study(&owner, id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(view(&state, study).await?))
}

async fn view(state: &AppState, study: StudyRecord) -> Result<StudyView, ApiError> {
    let run = state.db.latest_inference(study.row_id).await?;
    let uploaded = !matches!(study.status, StudyStatus::Created);
    let image_url = if uploaded {
        let key = ObjectKey::new(study.s3_key.clone()).map_err(|e| ApiError::Internal(e.to_string()))?;
        Some(state.images.presign_get(&key, state.settings.upload_url_ttl).await?.url)
    } else {
        None
    };
    Ok(StudyView {
        id: study.id,
        status: study.status,
        media_type: study.media_type,
        width: study.width,
        height: study.height,
        created_at: study.created_at,
        updated_at: study.updated_at,
        failure: study.failure,
        model: run.as_ref().map(|r| ModelView { name: r.model_name.clone(), version: r.model_version.clone() }),
        findings: run.map(|r| r.findings).unwrap_or_default(),
        image_url,
    })
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub status: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct StudyPage {
    pub studies: Vec<StudySummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct StudySummary {
    pub id: StudyId,
    pub status: StudyStatus,
    pub media_type: MediaType,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The cursor is opaque to callers: base64url of `created_at|row id`.
fn encode_cursor(study: &StudyRecord) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}|{}", study.created_at.unix_timestamp_nanos(), study.row_id))
}

fn decode_cursor(cursor: &str) -> Option<(OffsetDateTime, i64)> {
    let text = String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (nanos, id) = text.split_once('|')?;
    Some((OffsetDateTime::from_unix_timestamp_nanos(nanos.parse().ok()?).ok()?, id.parse().ok()?))
}

pub async fn list(State(state): State<AppState>, Caller(owner): Caller, Query(query): Query<ListQuery>) -> Result<Json<StudyPage>, ApiError> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be between 1 and 100".into()));
    }
    let status = query
        .status
        .as_deref()
        .map(|s| StudyStatus::parse(s).ok_or_else(|| ApiError::BadRequest(format!("unknown status {s:?}"))))
        .transpose()?;
    let after = query.cursor.as_deref().map(|c| decode_cursor(c).ok_or_else(|| ApiError::BadRequest("malformed cursor".into()))).transpose()?;
    // One more than asked: tells whether there is a next page.
    let mut studies = state.db.list_studies(&owner, status, after, limit + 1).await?;
    let more = studies.len() > limit as usize;
    studies.truncate(limit as usize);
    let next_cursor = if more { studies.last().map(encode_cursor) } else { None };
    Ok(Json(StudyPage {
        studies: studies
            .into_iter()
            .map(|s| StudySummary { id: s.id, status: s.status, media_type: s.media_type, created_at: s.created_at })
            .collect(),
        next_cursor,
    }))
}
