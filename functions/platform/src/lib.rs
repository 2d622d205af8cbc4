//! Shared library of the chest X-ray platform's Lambda functions.
//!
//! - [`config`]: typed settings, read once from the environment.
//! - [`telemetry`]: the one `tracing` set-up (JSON inside Lambda).
//! - [`domain`]: types that validate on construction (owners, studies,
//!   boxes, label sets, digests).
//! - [`storage`]: adapters for the data lake and its satellites: S3
//!   (images), PostgreSQL on RDS (system of record), DynamoDB (hot results)
//!   and DocumentDB (warehouse).
//! - [`jobs`]: what scheduled jobs share: locking, runs, watermarks,
//!   checkpoints and resumption.
//! - [`imaging`]: what an uploaded image is, from its headers.
//!
//! Each adapter, `imaging` and `jobs` sit behind a cargo feature of the same
//! name (`s3`, `postgres`, `dynamodb`, `documentdb`, `imaging`, `jobs`,
//! `secrets` for credentials read from Secrets Manager at start;
//! `testing` for tests only), so a function compiles only what it uses.

pub mod aws;
pub mod config;
/// The domain types (crate `cxr-domain`), re-exported under their old path.
pub use cxr_domain as domain;
#[cfg(feature = "imaging")]
pub mod imaging;
#[cfg(feature = "jobs")]
pub mod jobs;
#[cfg(feature = "secrets")]
pub mod secrets;
pub mod storage;
pub mod telemetry;

#[cfg(feature = "testing")]
pub mod testing;
