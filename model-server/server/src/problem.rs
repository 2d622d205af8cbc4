//! Errors as RFC 9457 problem responses (`application/problem+json`),
//! mapped in one place.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cxr_inference::decode::DecodeError;

use crate::queue::QueueError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("the model is still loading")]
    NotReady,
    #[error("cannot explain {0:?}: not one of the model's labels (or use \"top\")")]
    UnknownLabel(String),
    /// A JSON body that does not name a readable S3 image.
    #[error("{0}")]
    BadReference(String),
    /// The referenced image could not be read (S3 unreachable or failing).
    #[error("reading the image from S3: {0}")]
    Storage(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Decode(DecodeError::TooManyBytes { .. } | DecodeError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Decode(DecodeError::UnknownFormat | DecodeError::Unsupported { .. }) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Decode(DecodeError::Empty | DecodeError::Corrupt { .. }) => StatusCode::BAD_REQUEST,
            Self::UnknownLabel(_) | Self::BadReference(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Queue(QueueError::Overloaded(_)) => StatusCode::TOO_MANY_REQUESTS,
            Self::NotReady | Self::Queue(QueueError::Stopped) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Queue(QueueError::Inference(_)) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

pub fn problem(status: StatusCode, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    if matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        problem(self.status(), &self.to_string())
    }
}
