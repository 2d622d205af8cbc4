//! `GET /v1/health`: whether the API can reach what it needs.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::routes;

use crate::state::AppState;

/// Whether PostgreSQL, S3 and DynamoDB answer. No authentication.
#[utoipa::path(get, path = "/v1/health", tag = "health", security(()),
    responses(
        (status = 200, description = "Everything reachable", body = serde_json::Value),
        (status = 503, description = "A backing service is unreachable", body = serde_json::Value),
    ))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let (database, images, results) = tokio::join!(
        async { state.db.ping().await.map_err(|e| e.to_string()) },
        async { state.images.check_bucket().await.map_err(|e| e.to_string()) },
        async { state.results.check().await.map_err(|e| e.to_string()) },
    );
    let ok = database.is_ok() && images.is_ok() && results.is_ok();
    let check = |r: &Result<(), String>| match r {
        Ok(()) => serde_json::json!({ "status": "ok" }),
        Err(e) => serde_json::json!({ "status": "unavailable", "detail": e }),
    };
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "unavailable" },
        "checks": { "database": check(&database), "images": check(&images), "results": check(&results) },
    });
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}

/// This module's routes (merged with the others in [`crate::app::routes`]).
pub fn router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(routes!(health))
}
