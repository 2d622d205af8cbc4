//! The one Router, served by lambda_http in Lambda (API Gateway HTTP API,
//! payload v2) and by axum as a plain server elsewhere: same code both ways.
//! Routes are registered through utoipa-axum, so the OpenAPI document at
//! `/v1/openapi.json` is built from the very handlers that are served.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use cxr_infer::Inference;
use cxr_infer::endpoint::ModelEndpoint;
use cxr_platform::aws::load_sdk_config;
use cxr_platform::config::{DynamoSettings, Env, PostgresSettings, S3Settings};
use cxr_platform::storage::dynamodb::DynamoTable;
use cxr_platform::storage::postgres::Database;
use cxr_platform::storage::results::ResultStore;
use cxr_platform::storage::s3::ObjectStore;
use tokio::sync::Semaphore;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::ApiSettings;
use crate::oidc::OidcVerifier;
use crate::problem::ApiError;
use crate::routes::{annotations, health, label_sets, predict, studies, uploads};

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

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Chest X-ray abnormality detection API",
        description = "Studies, presigned uploads, predictions, results and radiologist annotations. \
                       Errors are RFC 9457 problems (application/problem+json). \
                       POST requests accept an Idempotency-Key header: a retried request with the same key \
                       and body gets the first answer again (header Idempotent-Replayed: true) and creates nothing twice."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "studies"), (name = "predict"), (name = "annotations"), (name = "health"))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A Cognito JWT in AWS (checked by API Gateway); a development token locally"))
                    .build(),
            ),
        );
    }
}

/// The routes and the OpenAPI document describing exactly them.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::health))
        .routes(routes!(studies::list, studies::create))
        .routes(routes!(studies::get))
        .routes(routes!(uploads::complete))
        .routes(routes!(predict::predict))
        .routes(routes!(annotations::list, annotations::create))
        .routes(routes!(annotations::update, annotations::delete))
        .routes(routes!(annotations::history))
        .routes(routes!(label_sets::list))
        .split_for_parts()
}

pub fn router(state: AppState) -> Router {
    let (routes, openapi) = routes();
    let document = Arc::new(openapi.to_pretty_json().unwrap_or_default());
    routes
        .route(
            "/v1/openapi.json",
            get(move || {
                let document = document.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], document.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::NotFound })
        // Bodies up to the synchronous prediction limit (JSON bodies are tiny).
        .layer(axum::extract::DefaultBodyLimit::max(state.settings.predict_max_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::idempotency::idempotent_posts))
        .with_state(state)
}
