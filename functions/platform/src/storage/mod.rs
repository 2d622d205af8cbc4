//! Adapters for the AWS services the platform stores data in. Each one
//! wraps the real SDK client, exposes typed operations, and maps failures to
//! its own error type so callers can tell "not found" and "conflict" from
//! "the service is down".

#[cfg(feature = "documentdb")]
pub mod documentdb;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(all(feature = "dynamodb", feature = "postgres"))]
pub mod results;
#[cfg(feature = "s3")]
pub mod s3;

#[cfg(any(feature = "s3", feature = "dynamodb"))]
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
#[cfg(any(feature = "s3", feature = "dynamodb"))]
use aws_smithy_runtime_api::client::result::SdkError;
#[cfg(any(feature = "s3", feature = "dynamodb"))]
use aws_smithy_types::error::display::DisplayErrorContext;
#[cfg(any(feature = "s3", feature = "dynamodb"))]
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// What went wrong in an AWS SDK call, reduced to what callers act on.
#[cfg(any(feature = "s3", feature = "dynamodb"))]
#[derive(Debug)]
pub(crate) enum SdkFailure {
    /// The request never got an answer: connection refused, DNS, timeout.
    Unreachable(String),
    /// The service answered with an error.
    Service { status: u16, code: Option<String>, message: String },
    /// Anything else (a request the SDK could not build, an unreadable answer).
    Other(String),
}

#[cfg(any(feature = "s3", feature = "dynamodb"))]
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
