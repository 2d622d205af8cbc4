//! Verifies OpenID Connect JWTs the way API Gateway's JWT authorizer does
//! in AWS: signature against the issuer's JWKS, issuer, audience (`aud`, or
//! `client_id` for access tokens), expiry. It is used only where no
//! authorizer stands in front of the API (locally, against the OpenID
//! provider `dev.sh up` starts in place of Cognito), so the web app's
//! sign-in code and the caller it yields are the same in both places.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cxr_platform::config::{ConfigError, Env};
use cxr_platform::domain::Owner;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::RwLock;

/// `OIDC_ISSUER` and `OIDC_AUDIENCE`: whose tokens, for which client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcSettings {
    pub issuer: String,
    pub audience: String,
}

impl OidcSettings {
    /// `None` when `OIDC_ISSUER` is unset (in AWS, API Gateway verifies).
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let Some(issuer) = env.get("OIDC_ISSUER").filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let audience = env
            .get("OIDC_AUDIENCE")
            .filter(|v| !v.is_empty())
            .ok_or(ConfigError::Missing { name: "OIDC_AUDIENCE", hint: "the client id tokens are issued for, with OIDC_ISSUER" })?;
        if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
            return Err(ConfigError::Malformed { name: "OIDC_ISSUER", reason: "not an http(s) URL".into() });
        }
        Ok(Some(Self { issuer: issuer.trim_end_matches('/').to_owned(), audience }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("not a valid token: {0}")]
    Invalid(String),
    #[error("the token's signing key is unknown")]
    UnknownKey,
    #[error("the issuer's keys could not be fetched: {0}")]
    KeysUnavailable(String),
}

/// The issuer's keys, fetched on first use and again when a token names a
/// key not seen yet (key rotation), at most once per `REFRESH_GAP`.
pub struct OidcVerifier {
    settings: OidcSettings,
    http: reqwest::Client,
    keys: RwLock<Keys>,
}

#[derive(Default)]
struct Keys {
    by_id: HashMap<String, (Algorithm, DecodingKey)>,
    fetched_at: Option<Instant>,
}

const REFRESH_GAP: Duration = Duration::from_secs(30);
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    client_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl OidcVerifier {
    pub fn new(settings: OidcSettings) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
        Self { settings, http, keys: RwLock::new(Keys::default()) }
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// The caller a valid token names (its `sub`).
    pub async fn verify(&self, token: &str) -> Result<Owner, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let kid = header.kid.ok_or_else(|| TokenError::Invalid("no key id".into()))?;
        let (algorithm, key) = self.key(&kid).await?;
        if header.alg != algorithm {
            return Err(TokenError::Invalid("algorithm does not match the key".into()));
        }
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = LEEWAY_SECS;
        // API Gateway accepts the client id in `aud` (ID tokens) or in
        // `client_id` (Cognito access tokens): checked below, not here.
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| TokenError::Invalid(e.to_string()))?.claims;
        let audience_ok = match &claims.aud {
            Some(Audience::One(a)) => *a == self.settings.audience,
            Some(Audience::Many(all)) => all.iter().any(|a| a == &self.settings.audience),
            None => false,
        } || claims.client_id.as_deref() == Some(self.settings.audience.as_str());
        if !audience_ok {
            return Err(TokenError::Invalid("issued for another client".into()));
        }
        Owner::new(claims.sub).map_err(|e| TokenError::Invalid(e.to_string()))
    }

    async fn key(&self, kid: &str) -> Result<(Algorithm, DecodingKey), TokenError> {
        if let Some(found) = self.keys.read().await.by_id.get(kid) {
            return Ok(found.clone());
        }
        let mut keys = self.keys.write().await;
        if let Some(found) = keys.by_id.get(kid) {
            return Ok(found.clone());
        }
        if keys.fetched_at.is_some_and(|at| at.elapsed() < REFRESH_GAP) {
            return Err(TokenError::UnknownKey);
        }
        keys.fetched_at = Some(Instant::now());
        keys.by_id = self.fetch_keys().await?;
        keys.by_id.get(kid).cloned().ok_or(TokenError::UnknownKey)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, TokenError> {
        let unavailable = |e: reqwest::Error| TokenError::KeysUnavailable(e.to_string());
        self.http.get(url).send().await.and_then(reqwest::Response::error_for_status).map_err(unavailable)?.json().await.map_err(unavailable)
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, (Algorithm, DecodingKey)>, TokenError> {
        let discovery: Discovery = self.get_json(&format!("{}/.well-known/openid-configuration", self.settings.issuer)).await?;
        if discovery.issuer.trim_end_matches('/') != self.settings.issuer {
            return Err(TokenError::KeysUnavailable(format!("the provider says its issuer is {}", discovery.issuer)));
        }
        let set: JwkSet = self.get_json(&discovery.jwks_uri).await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Some(algorithm)) = (jwk.common.key_id.clone(), jwk.common.key_algorithm) else {
                continue;
            };
            let Ok(algorithm) = algorithm.to_string().parse::<Algorithm>() else {
                continue;
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, (algorithm, key));
            }
        }
        Ok(keys)
    }
}
