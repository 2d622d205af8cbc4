//! The platform's HTTP API. The upload path starts here: `POST /v1/studies`
//! records a study and hands out a presigned S3 PUT URL for its image;
//! `GET /v1/studies/{id}` reads results back.
//!
//! - [`app`]: the Router and its state.
//! - [`auth`]: the caller (JWT authorizer claims in AWS, dev tokens locally).
//! - [`routes`]: the endpoints.
//! - [`problem`]: errors as problem+json, mapped once.

pub mod app;
pub mod auth;
pub mod config;
pub mod problem;
pub mod routes;
