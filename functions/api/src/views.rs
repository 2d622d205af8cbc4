//! What the API answers about studies, built from the hot copy or from
//! PostgreSQL, with short-lived presigned URLs made per request.

use cxr_platform::domain::{MediaType, StudyId, StudyStatus};
use cxr_platform::storage::postgres::studies::FindingRecord;
use cxr_platform::storage::results::{ModelRef, StudySnapshot};
use cxr_platform::storage::s3::ObjectKey;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::problem::ApiError;
use crate::state::AppState;

/// A study: its status and, once inferred, findings and image URLs.
#[derive(Debug, Serialize, ToSchema)]
pub struct StudyView {
    pub id: StudyId,
    pub status: StudyStatus,
    pub media_type: MediaType,
    /// Image size in pixels, once the upload has been read.
    pub width: Option<u32>,
    pub height: Option<u32>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Why the study failed (status `failed`).
    pub failure: Option<String>,
    /// The model of the latest run.
    pub model: Option<ModelRef>,
    /// Whether that model's weights were trained; `false` for generated
    /// weights, whose numbers mean nothing clinically (absent: not known).
    pub model_trained: Option<bool>,
    /// The latest run's decision threshold per label; a label not named
    /// here is positive at 0.5.
    pub thresholds: std::collections::BTreeMap<String, f32>,
    /// The latest run's findings: one per label (`source` `model`), and
    /// boxes derived from the Grad-CAM of the top label (`source` `cam`).
    pub findings: Vec<FindingRecord>,
    /// A short-lived GET URL for the uploaded file, as uploaded (DICOM
    /// stays DICOM).
    pub image_url: Option<String>,
    /// A short-lived GET URL for a PNG of the image a browser can show
    /// (DICOM rendered with its window; long side at most 1024 px), once
    /// inferred.
    pub preview_url: Option<String>,
    /// A short-lived GET URL for the Grad-CAM heatmap of the top label: an
    /// RGBA PNG to stretch over the whole image.
    pub heatmap_url: Option<String>,
}

/// Where a study is read (`Location` of answers that name one).
pub fn study_path(id: StudyId) -> String {
    format!("/v1/studies/{id}")
}

pub async fn study_view(state: &AppState, snapshot: StudySnapshot) -> Result<StudyView, ApiError> {
    let ttl = state.settings.upload_url_ttl;
    let presign = |key: &ObjectKey| {
        let key = key.clone();
        async move { Ok::<_, ApiError>(state.images.presign_get(&key, ttl).await?.url) }
    };
    let image_url = match snapshot.status {
        StudyStatus::Created => None,
        _ => Some(presign(&snapshot.image_key).await?),
    };
    let heatmap_url = match &snapshot.heatmap_key {
        Some(key) => Some(presign(key).await?),
        None => None,
    };
    let preview_url = match &snapshot.preview_key {
        Some(key) => Some(presign(key).await?),
        None => None,
    };
    Ok(StudyView {
        id: snapshot.id,
        status: snapshot.status,
        media_type: snapshot.media_type,
        width: snapshot.width,
        height: snapshot.height,
        created_at: snapshot.created_at,
        updated_at: snapshot.updated_at,
        failure: snapshot.failure,
        model: snapshot.model,
        model_trained: snapshot.model_trained,
        thresholds: snapshot.thresholds,
        findings: snapshot.findings,
        image_url,
        preview_url,
        heatmap_url,
    })
}
