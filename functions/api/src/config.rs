//! The API's settings, read once from the environment.

use std::collections::HashMap;
use std::time::Duration;

use cxr_platform::config::{ConfigError, Env};
use cxr_platform::domain::Owner;

#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// `API_DEV_TOKENS` (`token=owner,token=owner`): bearer tokens accepted
    /// when there is no API Gateway authorizer (local runs). Unset in AWS,
    /// where the JWT authorizer's `sub` claim is the caller.
    pub dev_tokens: HashMap<String, Owner>,
    /// `UPLOAD_URL_TTL_SECS`: how long a presigned upload URL works.
    pub upload_url_ttl: Duration,
    /// `MAX_UPLOAD_BYTES`: largest image accepted through a presigned PUT.
    pub max_upload_bytes: u64,
}

impl ApiSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut dev_tokens = HashMap::new();
        for pair in env.get("API_DEV_TOKENS").unwrap_or_default().split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let malformed = |reason: String| ConfigError::Malformed { name: "API_DEV_TOKENS", reason };
            let (token, owner) = pair.split_once('=').ok_or_else(|| malformed(format!("{pair:?} is not token=owner")))?;
            if token.len() < 16 {
                return Err(malformed("tokens must be at least 16 characters".into()));
            }
            dev_tokens.insert(token.to_owned(), Owner::new(owner).map_err(|e| malformed(e.to_string()))?);
        }
        let upload_url_ttl = env.seconds_or("UPLOAD_URL_TTL_SECS", Duration::from_secs(300))?;
        let max_upload_bytes = env.parsed_or("MAX_UPLOAD_BYTES", 50 * 1024 * 1024u64)?;
        Ok(Self { dev_tokens, upload_url_ttl, max_upload_bytes })
    }
}
