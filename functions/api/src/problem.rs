//! Every error answer is an RFC 9457 problem (`application/problem+json`);
//! errors are mapped to statuses here and nowhere else.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cxr_infer::endpoint::EndpointError;
use cxr_infer::{InferError, PredictError};
use cxr_platform::domain::StudyId;
use cxr_platform::storage::dynamodb::DynamoError;
use cxr_platform::storage::postgres::DbError;
use cxr_platform::storage::s3::S3Error;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or unknown bearer token")]
    Unauthorized,
    #[error("no such study")]
    NotFound,
    #[error("no such annotation on this study")]
    AnnotationNotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("a backing service is unavailable: {0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
    /// An error about a study that exists (it was recorded before the
    /// error): the answer names it, so the caller can follow it up.
    #[error("{inner}")]
    AboutStudy { study: StudyId, inner: Box<ApiError> },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound | Self::AnnotationNotFound => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::AboutStudy { inner, .. } => inner.status(),
        }
    }

    pub fn about(self, study: StudyId) -> Self {
        Self::AboutStudy { study, inner: Box::new(self) }
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Unavailable(m) => Self::Unavailable(m),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<S3Error> for ApiError {
    fn from(err: S3Error) -> Self {
        match err {
            S3Error::Unavailable(m) => Self::Unavailable(m),
            err @ S3Error::AlreadyExists { .. } => Self::Conflict(err.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<DynamoError> for ApiError {
    fn from(err: DynamoError) -> Self {
        match err {
            DynamoError::Unavailable(m) | DynamoError::Throttled(m) => Self::Unavailable(m),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<InferError> for ApiError {
    fn from(err: InferError) -> Self {
        match err {
            InferError::Endpoint(EndpointError::Throttled(m)) => Self::TooManyRequests(format!("the model endpoint is at capacity: {m}")),
            InferError::Endpoint(e) => Self::Unavailable(e.to_string()),
            InferError::InFlight => Self::Conflict(err.to_string()),
            InferError::Database(e) => e.into(),
            InferError::Storage(e) => e.into(),
        }
    }
}

impl From<PredictError> for ApiError {
    fn from(err: PredictError) -> Self {
        let study = err.study();
        let api = match err {
            PredictError::UnsupportedMediaType => Self::UnsupportedMediaType(err.to_string()),
            PredictError::Unreadable(_) => Self::Unprocessable(err.to_string()),
            PredictError::Refused { reason, .. } => Self::Unprocessable(reason),
            PredictError::Unfinished { source, .. } | PredictError::NotRecorded(source) => source.into(),
        };
        match study {
            Some(id) => api.about(id),
            None => api,
        }
    }
}

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The body of every error answer (RFC 9457).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    pub kind: &'static str,
    /// The status's reason phrase.
    pub title: &'static str,
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What went wrong, in words for the user.
    pub detail: String,
    /// The study the error is about, when one was recorded before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub study_id: Option<StudyId>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (study, inner) = match self {
            Self::AboutStudy { study, inner } => (Some(study), *inner),
            other => (None, other),
        };
        if let Self::Internal(detail) = &inner {
            // Details of internal errors go to the log, not to the caller.
            tracing::error!(error = %detail, "internal error");
        }
        let body = Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: inner.to_string(),
            study_id: study,
        };
        let mut response = (status, serde_json::to_string(&body).unwrap_or_default()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match inner {
            Self::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Self::TooManyRequests(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        if let Some(location) = study.and_then(|s| HeaderValue::from_str(&crate::views::study_path(s)).ok()) {
            headers.insert(header::LOCATION, location);
        }
        response
    }
}
