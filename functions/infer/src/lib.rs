//! The inference path. After an upload, S3 reports the new object
//! ([`s3_event`]); `POST /v1/predict` in the API arrives with the image in
//! hand ([`predict`]). Both claim the study and run the same [`pipeline`]: result cache,
//! model [`endpoint`] (`aws-sdk-sagemakerruntime`), one PostgreSQL
//! transaction, DynamoDB copies. Locally, [`local_relay`] delivers the S3
//! events that S3 itself would.

pub mod endpoint;
pub mod local_relay;
pub mod pipeline;
pub mod predict;
pub mod s3_event;
pub mod settings;

pub use pipeline::{InferError, Inference, Outcome};
pub use predict::PredictError;
pub use s3_event::{InferHandler, InferReport, MAX_IMAGE_BYTES};
pub use settings::InferSettings;
