//! `GET /v1/health`: whether the API can reach what it needs.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::app::AppState;

pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let database = state.db.ping().await.map_err(|e| e.to_string());
    let images = state.images.check_bucket().await.map_err(|e| e.to_string());
    let ok = database.is_ok() && images.is_ok();
    let check = |r: &Result<(), String>| match r {
        Ok(()) => serde_json::json!({ "status": "ok" }),
        Err(e) => serde_json::json!({ "status": "unavailable", "detail": e }),
    };
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "unavailable" },
        "checks": { "database": check(&database), "images": check(&images) },
    });
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}
