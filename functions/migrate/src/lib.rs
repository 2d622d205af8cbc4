//! Applies the PostgreSQL migrations on every deploy, as the CloudFormation
//! custom resource `Migrations` of `infra/template.yaml`: inside the VPC (the
//! database is private), through RDS Proxy with an IAM token like every
//! function, idempotent (applied migrations are skipped, the label sets
//! synced), and failing the deploy with the reason when it cannot.
//!
//! CloudFormation waits for an answer PUT to the request's presigned
//! `ResponseURL`; a handler that never answers leaves the stack hanging for
//! an hour, so every path, a configuration error included, answers.

use std::collections::HashMap;

use aws_lambda_events::event::cloudformation::{
    CloudFormationCustomResourceRequest, CloudFormationCustomResourceResponse, CloudFormationCustomResourceResponseStatus,
};
use cxr_platform::config::{Env, PostgresSettings};
use cxr_platform::storage::postgres::Database;

pub type CustomResourceRequest = CloudFormationCustomResourceRequest;

/// The one physical id: there is one schema per stack, and an update that
/// changed it would make CloudFormation delete the "old" one.
pub const PHYSICAL_ID: &str = "cxr-postgres-schema";

#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("CloudFormation's response URL did not take the answer: {0}")]
    NotDelivered(String),
    #[error("a request type this function does not know (not Create, Update or Delete); nowhere to answer")]
    UnknownRequest,
}

/// What a request asks for, with the fields every answer repeats.
struct Request<'a> {
    deleting: bool,
    response_url: &'a str,
    stack_id: &'a str,
    request_id: &'a str,
    logical_resource_id: &'a str,
}

impl<'a> Request<'a> {
    fn of(request: &'a CustomResourceRequest) -> Result<Self, AnswerError> {
        Ok(match request {
            CloudFormationCustomResourceRequest::Create(r) => Self::fields(false, &r.response_url, &r.stack_id, &r.request_id, &r.logical_resource_id),
            CloudFormationCustomResourceRequest::Update(r) => Self::fields(false, &r.response_url, &r.stack_id, &r.request_id, &r.logical_resource_id),
            CloudFormationCustomResourceRequest::Delete(r) => Self::fields(true, &r.response_url, &r.stack_id, &r.request_id, &r.logical_resource_id),
            _ => return Err(AnswerError::UnknownRequest),
        })
    }

    fn fields(deleting: bool, response_url: &'a str, stack_id: &'a str, request_id: &'a str, logical_resource_id: &'a str) -> Self {
        Self { deleting, response_url, stack_id, request_id, logical_resource_id }
    }
}

/// Creates and updates migrate; a delete leaves the data alone (the
/// database is retained with the stack). The outcome, success or the
/// reason of the failure, is PUT to CloudFormation; only a failure to
/// deliver that answer is this function's own error.
pub async fn answer_cloudformation(request: CustomResourceRequest, env: &Env) -> Result<(), AnswerError> {
    let fields = Request::of(&request)?;
    let outcome = if fields.deleting { Ok(HashMap::new()) } else { migrate(env).await };
    let (status, reason, data) = match outcome {
        Ok(data) => (CloudFormationCustomResourceResponseStatus::Success, None, data),
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "migrations failed");
            (CloudFormationCustomResourceResponseStatus::Failed, Some(format!("{err:#}")), HashMap::new())
        }
    };
    // Non-exhaustive upstream: filled field by field.
    let mut answer = CloudFormationCustomResourceResponse::default();
    answer.status = status;
    answer.reason = reason;
    answer.physical_resource_id = PHYSICAL_ID.to_owned();
    answer.stack_id = fields.stack_id.to_owned();
    answer.request_id = fields.request_id.to_owned();
    answer.logical_resource_id = fields.logical_resource_id.to_owned();
    answer.data = data;
    deliver(fields.response_url, &answer).await
}

/// Applies what is pending; the schema version it leaves, as the
/// resource's `SchemaVersion` attribute.
async fn migrate(env: &Env) -> anyhow::Result<HashMap<String, String>> {
    use anyhow::Context;
    let settings = PostgresSettings::from_env(env)?;
    let db = Database::connect(&settings).await.context("connecting to PostgreSQL")?;
    db.migrate().await.context("applying the migrations")?;
    let version = db.applied_migration_version().await?.unwrap_or(0);
    tracing::info!(version, "schema migrated");
    Ok(HashMap::from([("SchemaVersion".to_owned(), version.to_string())]))
}

/// The presigned URL is signed without a content type, so none is sent.
async fn deliver(url: &str, answer: &CloudFormationCustomResourceResponse) -> Result<(), AnswerError> {
    let body = serde_json::to_vec(answer).map_err(|e| AnswerError::NotDelivered(e.to_string()))?;
    let response = reqwest::Client::new().put(url).body(body).send().await.map_err(|e| AnswerError::NotDelivered(e.to_string()))?;
    if !response.status().is_success() {
        return Err(AnswerError::NotDelivered(format!("{} {}", response.status(), response.text().await.unwrap_or_default())));
    }
    Ok(())
}
