//! The platform's HTTP API. The upload path starts here: `POST /v1/studies`
//! records a study and hands out presigned S3 upload URLs for its image
//! (one PUT, or a multipart upload for large files); `POST /v1/predict`
//! takes an image in the request and answers with findings;
//! `GET /v1/studies/{id}` reads results back (DynamoDB hot copy first).
//!
//! - [`app`]: the Router (each route module's router merged); [`openapi`]: the document as served; [`state`]: what handlers share.
//! - [`extract`]: JSON and query extractors whose rejections are problem+json.
//! - [`auth`]: the caller (JWT authorizer claims in AWS; locally dev tokens,
//!   or JWTs of the local OpenID provider verified by [`oidc`]).
//! - [`idempotency`]: `Idempotency-Key` on POSTs.
//! - [`routes`]: the endpoints; [`views`]: what they answer.
//! - [`problem`]: errors as problem+json, mapped once.
//! - [`lambda`]: the Router inside Lambda (lambda_http, with one check of events first).

pub mod app;
pub mod auth;
pub mod config;
pub mod extract;
pub mod idempotency;
pub mod lambda;
pub mod oidc;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod state;
pub mod views;
