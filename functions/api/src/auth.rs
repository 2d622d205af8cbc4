//! Who is calling. In AWS, API Gateway's JWT authorizer (Cognito) has
//! already checked the token; the caller is its `sub` claim, taken from the
//! request context lambda_http attaches. Locally, a configured development
//! bearer token maps to an owner, and a JWT of the local OpenID provider
//! (the web app's sign-in) is verified as the authorizer would and names
//! its `sub`. Nothing else authenticates.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use cxr_platform::domain::Owner;
use lambda_http::request::RequestContext;

use crate::problem::ApiError;
use crate::state::AppState;

/// The authenticated caller; every study belongs to one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller(pub Owner);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(RequestContext::ApiGatewayV2(context)) = parts.extensions.get::<RequestContext>() {
            let sub = context.authorizer.as_ref().and_then(|a| a.jwt.as_ref()).and_then(|jwt| jwt.claims.get("sub"));
            return sub.and_then(|sub| Owner::new(sub.as_str()).ok()).map(Caller).ok_or(ApiError::Unauthorized);
        }
        let token =
            parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).ok_or(ApiError::Unauthorized)?;
        let token = token.trim();
        if let Some(owner) = state.settings.dev_tokens.get(token) {
            return Ok(Caller(owner.clone()));
        }
        let Some(verifier) = &state.oidc else {
            return Err(ApiError::Unauthorized);
        };
        match verifier.verify(token).await {
            Ok(owner) => Ok(Caller(owner)),
            Err(crate::oidc::TokenError::KeysUnavailable(reason)) => Err(ApiError::Unavailable(format!("cannot check sign-ins now: {reason}"))),
            Err(err) => {
                tracing::info!(error = %err, "bearer token refused");
                Err(ApiError::Unauthorized)
            }
        }
    }
}
