//! The inference path's settings, read once from the environment.

use std::time::Duration;

use cxr_platform::config::{ConfigError, Env};
use cxr_platform::storage::results::ModelRef;

/// Below SageMaker's 6 MB request limit, with room for headers.
pub const DEFAULT_INLINE_MAX_BYTES: usize = 5_500_000;

#[derive(Clone, Debug)]
pub struct InferSettings {
    /// `MODEL_ENDPOINT_NAME`: the SageMaker endpoint (any name locally).
    pub endpoint_name: String,
    /// `MODEL_NAME` + `MODEL_VERSION`: the model the endpoint serves, so the
    /// result cache can be asked before the first call. When unset, the
    /// model is learned from the endpoint's first answer (until then every
    /// image goes to the endpoint).
    pub model: Option<ModelRef>,
    /// `INFERENCE_LEASE_SECS`: how long a study stays claimed by one
    /// inference before another may take it over (a claimant that died).
    /// Longer than the slowest inference (API Gateway stops waiting at 30 s).
    pub lease: Duration,
    /// `ENDPOINT_INLINE_MAX_BYTES`: images up to this size travel in the
    /// request body; larger ones are named by their S3 URI for the model
    /// server to read (SageMaker's real-time payload limit is 6 MB).
    pub inline_max_bytes: usize,
}

impl InferSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        // Empty counts as unset (the SAM template passes empty parameters).
        let set = |name| env.get(name).filter(|v| !v.trim().is_empty());
        let model = match (set("MODEL_NAME"), set("MODEL_VERSION")) {
            (Some(name), Some(version)) => Some(ModelRef { name, version }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Malformed { name: "MODEL_NAME", reason: "set MODEL_NAME and MODEL_VERSION together, or neither".into() });
            }
        };
        Ok(Self {
            endpoint_name: env.required("MODEL_ENDPOINT_NAME", "SageMaker endpoint that serves the model")?,
            model,
            lease: env.seconds_or("INFERENCE_LEASE_SECS", Duration::from_secs(45))?,
            inline_max_bytes: env.parsed_or("ENDPOINT_INLINE_MAX_BYTES", DEFAULT_INLINE_MAX_BYTES)?,
        })
    }

    /// Settings for tests and local tools: this endpoint, model learned.
    pub fn for_endpoint(endpoint_name: impl Into<String>) -> Self {
        Self { endpoint_name: endpoint_name.into(), model: None, lease: Duration::from_secs(45), inline_max_bytes: DEFAULT_INLINE_MAX_BYTES }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_map(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn the_model_is_both_name_and_version_or_neither() {
        let base = [("MODEL_ENDPOINT_NAME", "cxr")];
        assert_eq!(InferSettings::from_env(&env(&base)).expect("ok").model, None);
        let empty = [("MODEL_ENDPOINT_NAME", "cxr"), ("MODEL_NAME", ""), ("MODEL_VERSION", "")];
        assert_eq!(InferSettings::from_env(&env(&empty)).expect("empty is unset").model, None);
        let both = [("MODEL_ENDPOINT_NAME", "cxr"), ("MODEL_NAME", "densenet"), ("MODEL_VERSION", "2")];
        assert_eq!(InferSettings::from_env(&env(&both)).expect("ok").model, Some(ModelRef { name: "densenet".into(), version: "2".into() }));
        let half = [("MODEL_ENDPOINT_NAME", "cxr"), ("MODEL_NAME", "densenet")];
        assert!(InferSettings::from_env(&env(&half)).is_err());
        assert!(InferSettings::from_env(&env(&[])).is_err(), "the endpoint is required");
    }
}
