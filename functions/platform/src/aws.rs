//! AWS SDK configuration, loaded the standard way: credentials, region and
//! endpoints come from the usual chain, including `AWS_ENDPOINT_URL` and the
//! per-service `AWS_ENDPOINT_URL_<SERVICE>` variables, which is how the local
//! stand-ins are reached. Nothing here knows whether it runs locally.

use aws_config::{BehaviorVersion, SdkConfig};

use crate::config::ConfigError;

pub async fn load_sdk_config() -> Result<SdkConfig, ConfigError> {
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    // Without a region every request fails later with a vaguer error.
    if config.region().is_none() {
        return Err(ConfigError::Missing { name: "AWS_REGION", hint: "the AWS region, e.g. eu-west-1" });
    }
    Ok(config)
}
