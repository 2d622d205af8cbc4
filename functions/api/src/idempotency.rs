//! `Idempotency-Key` on POSTs (the IETF httpapi draft's semantics): the
//! first request with a key is handled and its answer kept for 24 hours;
//! a retry with the same key and the same request gets that answer again
//! (`Idempotent-Replayed: true`) and creates nothing; the same key with a
//! different request is refused (422); a retry while the first is still
//! running gets 409. Answers worth retrying (429, 5xx) are not kept, so
//! the retry runs the request again.

use axum::body::{Body, to_bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cxr_platform::domain::Sha256Digest;
use cxr_platform::storage::postgres::idempotency::{Reservation, StoredResponse};

use crate::auth::Caller;
use crate::problem::ApiError;
use crate::state::AppState;

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED: &str = "idempotent-replayed";
/// A key: 1 to [`KEY_MAX_LEN`] visible ASCII characters (the OpenAPI
/// document states the same, from these constants).
pub const KEY_MAX_LEN: usize = 255;
pub const KEY_PATTERN: &str = "^[!-~]+$";

fn valid_key(key: &[u8]) -> bool {
    (1..=KEY_MAX_LEN).contains(&key.len()) && key.iter().all(|b| (b'!'..=b'~').contains(b))
}

pub async fn idempotent_posts(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST || !request.headers().contains_key(HEADER) {
        return next.run(request).await;
    }
    match handle(state, request, next).await {
        Ok(response) | Err(response) => response,
    }
}

async fn handle(state: AppState, request: Request, next: Next) -> Result<Response, Response> {
    let (mut parts, body) = request.into_parts();
    // Who asks comes first: an unauthenticated request learns nothing else.
    let Caller(owner) = Caller::from_request_parts(&mut parts, &state).await.map_err(IntoResponse::into_response)?;
    let key = parts
        .headers
        .get(HEADER)
        .map(|v| v.as_bytes())
        .filter(|k| valid_key(k))
        .and_then(|k| std::str::from_utf8(k).ok())
        .ok_or_else(|| ApiError::BadRequest(format!("Idempotency-Key must be 1 to {KEY_MAX_LEN} visible ASCII characters")).into_response())?
        .to_owned();
    let limit = state.settings.predict_max_bytes;
    let body = to_bytes(body, limit).await.map_err(|_| ApiError::PayloadTooLarge(format!("the body is over {limit} bytes")).into_response())?;
    // The key belongs to one request: method, path and body.
    let mut fingerprint = Vec::with_capacity(body.len() + 64);
    fingerprint.extend_from_slice(parts.method.as_str().as_bytes());
    fingerprint.push(b' ');
    fingerprint.extend_from_slice(parts.uri.path().as_bytes());
    fingerprint.push(b'\n');
    fingerprint.extend_from_slice(&body);
    let request_hash = Sha256Digest::of(&fingerprint);

    let reservation = state.db.reserve_idempotency_key(&owner, &key, &request_hash).await.map_err(|e| ApiError::from(e).into_response())?;
    match reservation {
        Reservation::Replay(stored) => {
            let mut response = Response::new(Body::from(stored.body));
            *response.status_mut() = axum::http::StatusCode::from_u16(stored.status).unwrap_or(axum::http::StatusCode::OK);
            if let Some(content_type) = stored.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                response.headers_mut().insert(header::CONTENT_TYPE, content_type);
            }
            response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
            Ok(response)
        }
        Reservation::InProgress => Err(ApiError::Conflict("a request with this Idempotency-Key is still being handled; retry later".into()).into_response()),
        Reservation::Mismatch => Err(ApiError::Unprocessable("this Idempotency-Key was used for a different request".into()).into_response()),
        Reservation::Reserved => {
            let response = next.run(Request::from_parts(parts, Body::from(body))).await;
            let (parts, body) = response.into_parts();
            let body = match to_bytes(body, usize::MAX).await {
                Ok(body) => body,
                Err(err) => {
                    let _ = state.db.release_idempotency_key(&owner, &key).await;
                    return Err(ApiError::Internal(format!("reading the answer: {err}")).into_response());
                }
            };
            let status = parts.status.as_u16();
            let outcome = if status == 429 || status >= 500 {
                state.db.release_idempotency_key(&owner, &key).await
            } else {
                let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
                state.db.finish_idempotency_key(&owner, &key, &StoredResponse { status, content_type, body: body.to_vec() }).await
            };
            if let Err(err) = outcome {
                // The answer stands; a retry may then run the request again.
                tracing::warn!(error = %err, "idempotency record not updated");
            }
            Ok(Response::from_parts(parts, Body::from(body)))
        }
    }
}
