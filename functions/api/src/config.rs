//! The API's settings, read once from the environment.

use std::collections::HashMap;
use std::time::Duration;

use cxr_infer::InferSettings;
use cxr_platform::config::{ConfigError, Env};
use cxr_platform::domain::Owner;

use crate::oidc::OidcSettings;

/// How long an unreviewed study may wait before it tops the worklist.
pub const DEFAULT_WORKLIST_MAX_WAIT: Duration = Duration::from_secs(60 * 60);

#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// `API_DEV_TOKENS` (`token=owner,token=owner`): bearer tokens accepted
    /// when there is no API Gateway authorizer (local runs). Unset in AWS,
    /// where the JWT authorizer's `sub` claim is the caller.
    pub dev_tokens: HashMap<String, Owner>,
    /// `UPLOAD_URL_TTL_SECS`: how long presigned upload and read URLs work.
    pub upload_url_ttl: Duration,
    /// `MAX_UPLOAD_BYTES`: largest image uploaded with one presigned PUT;
    /// larger images get a multipart upload.
    pub max_upload_bytes: u64,
    /// `MAX_IMAGE_BYTES`: largest image accepted at all (the inference
    /// handler and the model server read up to this much).
    pub max_image_bytes: u64,
    /// `MULTIPART_PART_BYTES`: size of each part of a multipart upload
    /// (S3 wants at least 5 MiB for all but the last).
    pub multipart_part_bytes: u64,
    /// `PREDICT_MAX_BYTES`: largest image `POST /v1/predict` takes in its
    /// body (Lambda's synchronous payload limit is 6 MB).
    pub predict_max_bytes: usize,
    /// `PREDICT_MAX_IN_FLIGHT`: synchronous predictions one instance runs
    /// at once; more get 429 with Retry-After.
    pub predict_max_in_flight: usize,
    /// `WORKLIST_MAX_WAIT_SECS`: a study not yet reviewed that has waited
    /// longer than this tops the priority worklist whatever its score.
    pub worklist_max_wait: Duration,
    /// `OIDC_ISSUER` + `OIDC_AUDIENCE`: bearer JWTs of this OpenID
    /// provider are verified here (locally; in AWS API Gateway does it).
    pub oidc: Option<OidcSettings>,
    /// The model endpoint, model and claim lease (shared with `infer`).
    pub inference: InferSettings,
}

impl ApiSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut dev_tokens = HashMap::new();
        let raw_tokens = env.get("API_DEV_TOKENS");
        // Inside Lambda the JWT authorizer is the only way in: a token that
        // never expires and names any owner must not open the deployed API.
        if raw_tokens.is_some() && env.get(cxr_platform::aws::LAMBDA_RUNTIME_API).is_some() {
            return Err(ConfigError::Malformed { name: "API_DEV_TOKENS", reason: "development tokens are refused inside Lambda".into() });
        }
        for pair in raw_tokens.unwrap_or_default().split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let malformed = |reason: String| ConfigError::Malformed { name: "API_DEV_TOKENS", reason };
            let (token, owner) = pair.split_once('=').ok_or_else(|| malformed(format!("{pair:?} is not token=owner")))?;
            if token.len() < 16 {
                return Err(malformed("tokens must be at least 16 characters".into()));
            }
            dev_tokens.insert(token.to_owned(), Owner::new(owner).map_err(|e| malformed(e.to_string()))?);
        }
        let settings = Self {
            dev_tokens,
            upload_url_ttl: env.seconds_or("UPLOAD_URL_TTL_SECS", Duration::from_secs(300))?,
            max_upload_bytes: env.parsed_or("MAX_UPLOAD_BYTES", 50 * 1024 * 1024u64)?,
            max_image_bytes: env.parsed_or("MAX_IMAGE_BYTES", cxr_infer::MAX_IMAGE_BYTES)?,
            multipart_part_bytes: env.parsed_or("MULTIPART_PART_BYTES", 16 * 1024 * 1024u64)?,
            predict_max_bytes: env.parsed_or("PREDICT_MAX_BYTES", 6 * 1024 * 1024usize)?,
            predict_max_in_flight: env.parsed_or("PREDICT_MAX_IN_FLIGHT", 4usize)?,
            worklist_max_wait: env.seconds_or("WORKLIST_MAX_WAIT_SECS", DEFAULT_WORKLIST_MAX_WAIT)?,
            oidc: OidcSettings::from_env(env)?,
            inference: InferSettings::from_env(env)?,
        };
        if settings.multipart_part_bytes < 5 * 1024 * 1024 {
            return Err(ConfigError::Malformed { name: "MULTIPART_PART_BYTES", reason: "S3 parts are at least 5 MiB".into() });
        }
        Ok(settings)
    }

    /// Defaults for tests: these tokens, this endpoint.
    pub fn for_tests(dev_tokens: HashMap<String, Owner>, endpoint_name: &str) -> Self {
        Self {
            dev_tokens,
            upload_url_ttl: Duration::from_secs(300),
            max_upload_bytes: 50 * 1024 * 1024,
            max_image_bytes: cxr_infer::MAX_IMAGE_BYTES,
            multipart_part_bytes: 16 * 1024 * 1024,
            predict_max_bytes: 6 * 1024 * 1024,
            predict_max_in_flight: 4,
            worklist_max_wait: DEFAULT_WORKLIST_MAX_WAIT,
            oidc: None,
            inference: InferSettings::for_endpoint(endpoint_name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        let mut map: HashMap<String, String> = [("MODEL_ENDPOINT_NAME", "cxr-test")].into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        map.extend(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Env::from_map(map)
    }

    #[test]
    fn development_tokens_work_locally_and_stop_the_api_inside_lambda() {
        let tokens = ("API_DEV_TOKENS", "local-dev-token-alice=alice");
        let local = ApiSettings::from_env(&env(&[tokens])).expect("local settings");
        assert_eq!(local.dev_tokens.len(), 1);
        let lambda = (cxr_platform::aws::LAMBDA_RUNTIME_API, "127.0.0.1:9001");
        match ApiSettings::from_env(&env(&[tokens, lambda])) {
            Err(ConfigError::Malformed { name: "API_DEV_TOKENS", .. }) => {}
            other => panic!("expected API_DEV_TOKENS refused, got {other:?}"),
        }
        assert!(ApiSettings::from_env(&env(&[lambda])).expect("no tokens in Lambda").dev_tokens.is_empty());
    }
}
