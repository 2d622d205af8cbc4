//! An image that arrives in hand (`POST /v1/predict`) rather than by upload:
//! checked, recorded as a study like any upload (image in S3, facts in
//! PostgreSQL), claimed, and run through the same [`pipeline`]. The API's
//! handler only reads the body and maps [`PredictError`] to its answer.
//!
//! [`pipeline`]: crate::pipeline

use std::time::Duration;

use bytes::Bytes;
use cxr_platform::domain::{MediaType, Owner, StudyId, StudyStatus};
use cxr_platform::imaging::{DescribeError, describe};
use cxr_platform::storage::postgres::DbError;
use cxr_platform::storage::postgres::studies::NewStudy;
use cxr_platform::storage::results::StudySnapshot;
use cxr_platform::storage::s3::ObjectStore;

use crate::pipeline::{InferError, Inference, Outcome};

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    /// Nothing was recorded: the bytes are not an image this platform reads.
    #[error("the body is not a PNG, JPEG or DICOM file")]
    UnsupportedMediaType,
    /// Nothing was recorded: the header says PNG, JPEG or DICOM but it
    /// cannot be read as one.
    #[error("the image cannot be read: {0}")]
    Unreadable(#[from] DescribeError),
    /// The model looked at the image and refused it; the study is recorded
    /// as failed with this reason.
    #[error("{reason}")]
    Refused { study: StudyId, reason: String },
    /// The study is recorded (`study`) but did not finish here: the
    /// endpoint was unavailable or at capacity (the study stays `uploaded`
    /// and finishes on its own), or storage failed.
    #[error("{source}")]
    Unfinished { study: StudyId, source: InferError },
    /// Storage failed before a study was recorded.
    #[error(transparent)]
    NotRecorded(InferError),
}

impl PredictError {
    /// The recorded study the error is about, if one was recorded.
    pub fn study(&self) -> Option<StudyId> {
        match self {
            Self::Refused { study, .. } | Self::Unfinished { study, .. } => Some(*study),
            _ => None,
        }
    }
}

impl Inference {
    /// Records `image` as a study of `owner` and infers it now; the study as
    /// stored, findings included.
    ///
    /// The study is claimed before its image lands in `images`, so the S3
    /// event that upload fires finds it in flight and leaves it to this call.
    pub async fn predict(&self, owner: &Owner, image: Bytes, images: &ObjectStore, lease: Duration) -> Result<StudySnapshot, PredictError> {
        let media_type = MediaType::sniff(&image).ok_or(PredictError::UnsupportedMediaType)?;
        let facts = describe(&image, media_type)?;
        let db = &self.db;
        let study = db
            .create_study(&NewStudy { owner: owner.clone(), s3_bucket: images.bucket().to_owned(), media_type })
            .await
            .map_err(|e| PredictError::NotRecorded(e.into()))?;
        let id = study.id;
        let unfinished = |source: InferError| PredictError::Unfinished { study: id, source };
        let study = db.record_upload(study.row_id, &facts).await.map_err(|e| unfinished(e.into()))?;
        let study = db
            .claim_for_inference(study.row_id, lease)
            .await
            .map_err(|e| unfinished(e.into()))?
            // Just created, so nobody else can hold it.
            .ok_or_else(|| unfinished(InferError::InFlight))?;
        if let Err(err) = images.put_new(&study.s3_key, image.clone(), media_type.as_str()).await {
            // Nothing to retry from: the caller still has the image and retries.
            let _ = db.set_study_status(study.row_id, StudyStatus::Failed, Some("the image could not be stored")).await;
            return Err(unfinished(InferError::Storage(err)));
        }
        match self.run(&study, &image, &facts, images).await.map_err(unfinished)? {
            // The pipeline read the stored study back for its DynamoDB copy.
            Outcome::Done { snapshot: Some(snapshot), .. } => Ok(*snapshot),
            Outcome::Done { snapshot: None, .. } => {
                let finished = db.find_study(owner, id).await.map_err(|e| unfinished(e.into()))?.ok_or_else(|| unfinished(DbError::NotFound.into()))?;
                Ok(StudySnapshot::read(db, &finished).await.map_err(|e| unfinished(e.into()))?.0)
            }
            Outcome::Failed(reason) => Err(PredictError::Refused { study: id, reason }),
        }
    }
}
