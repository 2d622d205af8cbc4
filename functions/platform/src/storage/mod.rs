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

// S3 and DynamoDB share the smithy runtime, so one classifier serves both.
#[cfg(any(feature = "s3", feature = "dynamodb"))]
mod sdk_failure;
#[cfg(any(feature = "s3", feature = "dynamodb"))]
pub(crate) use sdk_failure::SdkFailure;
