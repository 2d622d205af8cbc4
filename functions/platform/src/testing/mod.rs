//! Test helpers for integration tests that run against the local stack
//! (`infra/local/dev.sh up`). Each helper hands out a fresh, uniquely named
//! resource (database, bucket, table, warehouse database), so tests run in
//! parallel without seeing each other's data.
//!
//! Endpoints come from the process environment (set by
//! `infra/local/dev.sh test`) or else from `.stack/env`, which `dev.sh up`
//! writes, so a plain `cargo test` works once the stack is up.
//!
//! - [`stack`]: the running local stack and fresh resources on it.
//! - [`http`]: serving a router on a random port, and calling it.
//! - [`fixtures`]: image and DICOM files.
//! - [`crash`]: killing a job at a checkpoint.
//! - [`seed`]: generated data-lake content, table fingerprints.

pub mod crash;
pub mod fixtures;
pub mod http;
pub mod seed;
pub mod stack;

pub use crash::{job_checkpoint, kill_at_checkpoint};
pub use fixtures::{TINY_PNG, identifiable_dicom, identifiable_dicom_image, png_with_text};
pub use http::{call, serve};
pub use seed::{seed, table_fingerprint};
pub use stack::{LocalStack, closed_port, silent_port};

/// `prefix` plus 16 random hex digits: valid as a database, bucket (after
/// `_` -> `-`) and table name.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}
