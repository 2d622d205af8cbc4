//! The API's state: the stores, the inference path and the settings every
//! handler shares, built once from the environment.

use std::sync::Arc;

use cxr_infer::Inference;
use cxr_infer::endpoint::ModelEndpoint;
use cxr_platform::aws::load_sdk_config;
use cxr_platform::config::{DynamoSettings, Env, PostgresSettings, S3Settings};
use cxr_platform::storage::dynamodb::DynamoTable;
use cxr_platform::storage::postgres::Database;
use cxr_platform::storage::results::ResultStore;
use cxr_platform::storage::s3::ObjectStore;
use tokio::sync::Semaphore;

use crate::config::ApiSettings;
use crate::oidc::OidcVerifier;

#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    pub images: ObjectStore,
    pub results: ResultStore,
    pub inference: Arc<Inference>,
    pub settings: Arc<ApiSettings>,
    /// Synchronous predictions running now (bounded: 429 beyond).
    pub predict_slots: Arc<Semaphore>,
    /// Verifies the local OpenID provider's JWTs (absent in AWS).
    pub oidc: Option<Arc<OidcVerifier>>,
}

impl AppState {
    pub fn new(db: Database, images: ObjectStore, results: ResultStore, runtime: aws_sdk_sagemakerruntime::Client, settings: ApiSettings) -> Self {
        let endpoint = ModelEndpoint::new(runtime, settings.inference.endpoint_name.clone(), settings.inference.inline_max_bytes);
        let inference = Arc::new(Inference::new(db.clone(), results.clone(), endpoint, settings.inference.model.clone()));
        let predict_slots = Arc::new(Semaphore::new(settings.predict_max_in_flight.max(1)));
        let oidc = settings.oidc.clone().map(|s| Arc::new(OidcVerifier::new(s)));
        Self { db, images, results, inference, settings: Arc::new(settings), predict_slots, oidc }
    }

    pub async fn from_env(env: &Env) -> anyhow::Result<Self> {
        let settings = ApiSettings::from_env(env)?;
        let db = Database::connect(&PostgresSettings::from_env(env)?).await?;
        let sdk = load_sdk_config().await?;
        let images = ObjectStore::new(&sdk, &S3Settings::from_env(env)?);
        let results = ResultStore::new(DynamoTable::new(&sdk, &DynamoSettings::from_env(env)?));
        Ok(Self::new(db, images, results, aws_sdk_sagemakerruntime::Client::new(&sdk), settings))
    }
}
