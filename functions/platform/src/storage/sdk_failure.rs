//! The SDK failure classifier the S3 and DynamoDB adapters share.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

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
