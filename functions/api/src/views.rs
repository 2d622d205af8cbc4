//! What the API answers about studies, built from the hot copy or from
//! PostgreSQL, with short-lived presigned URLs made per request.

use cxr_platform::domain::{MediaType, ObjectKey, Owner, PixelBox, StudyId, StudyStatus};
use cxr_platform::storage::postgres::studies::{AnnotationChangeKind, AnnotationRecord, AnnotationRevision, FindingRecord, FindingSource};
use cxr_platform::storage::results::{ModelRef, StudySnapshot};
use cxr_platform::storage::s3::PresignedUrl;
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
    pub model: Option<Model>,
    /// Whether that model's weights were trained; `false` for generated
    /// weights, whose numbers mean nothing clinically (absent: not known).
    pub model_trained: Option<bool>,
    /// The latest run's decision threshold per label; a label not named
    /// here is positive at 0.5.
    pub thresholds: std::collections::BTreeMap<String, f32>,
    /// The latest run's findings: one per label (`source` `model`), and
    /// boxes derived from the Grad-CAM of the top label (`source` `cam`).
    pub findings: Vec<Finding>,
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
        model: snapshot.model.map(Model::from),
        model_trained: snapshot.model_trained,
        thresholds: snapshot.thresholds,
        findings: snapshot.findings.into_iter().map(Finding::from).collect(),
        image_url,
        preview_url,
        heatmap_url,
    })
}

// The API's own views of what storage records hold: the records derive no
// OpenAPI schema, so a storage change cannot silently change the contract.

/// The model that produced a result.
#[derive(Debug, Serialize, ToSchema)]
pub struct Model {
    pub name: String,
    pub version: String,
}

impl From<ModelRef> for Model {
    fn from(m: ModelRef) -> Self {
        Self { name: m.name, version: m.version }
    }
}

/// Where a finding came from.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Output of the model's head (probability; a box if the model has one).
    Model,
    /// A box derived from a class activation map (its number is a CAM
    /// score, not a probability).
    Cam,
}

/// One finding: a label's probability, or a box with its score.
#[derive(Debug, Serialize, ToSchema)]
pub struct Finding {
    pub label: String,
    /// The label's probability, or the score of the box.
    pub probability: f32,
    /// In original-image pixels, for CAM-derived (and box-predicting) findings.
    #[serde(rename = "box")]
    pub bbox: Option<PixelBox>,
    pub source: Source,
}

impl From<FindingRecord> for Finding {
    fn from(f: FindingRecord) -> Self {
        let source = match f.source {
            FindingSource::Model => Source::Model,
            FindingSource::Cam => Source::Cam,
        };
        Self { label: f.label, probability: f.probability, bbox: f.bbox, source }
    }
}

/// A radiologist's label (and box) on a study.
#[derive(Debug, Serialize, ToSchema)]
pub struct Annotation {
    pub id: i64,
    pub label_set: String,
    pub label: String,
    #[serde(rename = "box")]
    pub bbox: Option<PixelBox>,
    pub author: Owner,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Who changed it last and when (the author and `created_at` until it
    /// is edited).
    pub updated_by: Owner,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<AnnotationRecord> for Annotation {
    fn from(a: AnnotationRecord) -> Self {
        Self {
            id: a.id,
            label_set: a.label_set,
            label: a.label,
            bbox: a.bbox,
            author: a.author,
            created_at: a.created_at,
            updated_by: a.updated_by,
            updated_at: a.updated_at,
        }
    }
}

/// What a change did to an annotation.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Created,
    Updated,
    Deleted,
}

/// One state of an annotation's history: what it was after `change`, who
/// made the change and when.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revision {
    pub annotation_id: i64,
    pub change: Change,
    pub label_set: String,
    pub label: String,
    #[serde(rename = "box")]
    pub bbox: Option<PixelBox>,
    pub changed_by: Owner,
    #[serde(with = "time::serde::rfc3339")]
    pub changed_at: OffsetDateTime,
}

impl From<AnnotationRevision> for Revision {
    fn from(r: AnnotationRevision) -> Self {
        let change = match r.change {
            AnnotationChangeKind::Created => Change::Created,
            AnnotationChangeKind::Updated => Change::Updated,
            AnnotationChangeKind::Deleted => Change::Deleted,
        };
        Self {
            annotation_id: r.annotation_id,
            change,
            label_set: r.label_set,
            label: r.label,
            bbox: r.bbox,
            changed_by: r.changed_by,
            changed_at: r.changed_at,
        }
    }
}

/// A URL a client can use without credentials, for one method on one key.
/// Every header listed must be sent exactly as given: they are signed.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadUrl {
    pub method: String,
    pub url: String,
    /// `[name, value]` pairs to send exactly as given.
    #[schema(value_type = Vec<Vec<String>>)]
    pub headers: Vec<(String, String)>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl From<PresignedUrl> for UploadUrl {
    fn from(p: PresignedUrl) -> Self {
        Self { method: p.method, url: p.url, headers: p.headers, expires_at: p.expires_at }
    }
}
