//! The one Router, served by lambda_http in Lambda (API Gateway HTTP API,
//! payload v2) and by axum as a plain server elsewhere: same code both ways.
//! Routes are registered through utoipa-axum, so the OpenAPI document at
//! `/v1/openapi.json` is built from the very handlers that are served.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::routing::get;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::problem::ApiError;
use crate::routes::{annotations, health, label_sets, predict, studies, uploads};
pub use crate::state::AppState;

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
    components(schemas(crate::problem::Problem)),
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

/// The routes and the OpenAPI document describing exactly them: each route
/// module's router, merged here and nowhere else.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .merge(studies::router())
        .merge(uploads::router())
        .merge(predict::router())
        .merge(annotations::router())
        .merge(label_sets::router())
        .split_for_parts()
}

pub fn router(state: AppState) -> Router {
    let (routes, openapi) = routes();
    let document = Arc::new(serde_json::to_string_pretty(&crate::openapi::document(&openapi, &state.settings)).unwrap_or_default());
    routes
        .route(
            "/v1/openapi.json",
            get(move || {
                let document = document.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], document.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::NotFound })
        // Answers carry study data (PHI): never stored by a browser or a
        // proxy, and never content-sniffed into something executable.
        .layer(SetResponseHeaderLayer::if_not_present(header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        // Bodies up to the synchronous prediction limit (JSON bodies are tiny).
        .layer(axum::extract::DefaultBodyLimit::max(state.settings.predict_max_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::idempotency::idempotent_posts))
        .with_state(state)
}
