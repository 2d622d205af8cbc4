//! The one Router, served by lambda_http in Lambda (API Gateway HTTP API,
//! payload v2) and by axum as a plain server elsewhere: same code both ways.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use cxr_platform::aws::load_sdk_config;
use cxr_platform::config::{Env, PostgresSettings, S3Settings};
use cxr_platform::storage::postgres::Database;
use cxr_platform::storage::s3::ObjectStore;

use crate::config::ApiSettings;
use crate::problem::ApiError;
use crate::routes::{annotations, health, studies};

#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    pub images: ObjectStore,
    pub settings: Arc<ApiSettings>,
}

impl AppState {
    pub async fn from_env(env: &Env) -> anyhow::Result<Self> {
        let settings = ApiSettings::from_env(env)?;
        let db = Database::connect(&PostgresSettings::from_env(env)?).await?;
        let sdk = load_sdk_config().await?;
        let images = ObjectStore::new(&sdk, &S3Settings::from_env(env)?);
        Ok(Self { db, images, settings: Arc::new(settings) })
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/health", get(health::health))
        .route("/v1/studies", get(studies::list).post(studies::create))
        .route("/v1/studies/{id}", get(studies::get))
        .route("/v1/studies/{id}/annotations", get(annotations::list).post(annotations::create))
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
}
