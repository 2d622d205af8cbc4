//! The inference path's settings, read once from the environment.

use std::time::Duration;

use cxr_platform::config::{ConfigError, Env};
use cxr_platform::storage::results::ModelRef;

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
}

impl InferSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let model = match (env.get("MODEL_NAME"), env.get("MODEL_VERSION")) {
            (Some(name), Some(version)) if !name.is_empty() && !version.is_empty() => Some(ModelRef { name, version }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Malformed {
                    name: "MODEL_NAME",
                    reason: "set MODEL_NAME and MODEL_VERSION together, or neither".into(),
                });
            }
        };
        Ok(Self {
            endpoint_name: env.required("MODEL_ENDPOINT_NAME", "SageMaker endpoint that serves the model")?,
            model,
            lease: env.seconds_or("INFERENCE_LEASE_SECS", Duration::from_secs(45))?,
        })
    }

    /// Settings for tests and local tools: this endpoint, model learned.
    pub fn for_endpoint(endpoint_name: impl Into<String>) -> Self {
        Self { endpoint_name: endpoint_name.into(), model: None, lease: Duration::from_secs(45) }
    }
}
