//! Adapters for the AWS services the platform stores data in. Each one
//! wraps the real SDK client, exposes typed operations, and maps failures to
//! its own error type so callers can tell "not found" and "conflict" from
//! "the service is down".

pub mod documentdb;
pub mod dynamodb;
pub mod postgres;
pub mod results;
pub mod s3;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// What went wrong in an AWS SDK call, reduced to what callers act on.
#[derive(Debug)]
pub(crate) enum SdkFailure {
    /// The request never got an answer: connection refused, DNS, timeout.
    Unreachable(String),
    /// The service answered with an error.
    Service { status: u16, code: Option<String>, message: String },
    /// Anything else (a request the SDK could not build, an unreadable answer).
    Other(String),
}

impl SdkFailure {
    // S3 and DynamoDB share the smithy runtime, so one classifier serves both.
    pub(crate) fn from_sdk<E>(err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match &err {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => Self::Unreachable(DisplayErrorContext(&err).to_string()),
            SdkError::ServiceError(service) => Self::Service {
                status: service.raw().status().as_u16(),
                code: service.err().code().map(str::to_owned),
                message: DisplayErrorContext(&err).to_string(),
            },
            _ => Self::Other(DisplayErrorContext(&err).to_string()),
        }
    }
}
