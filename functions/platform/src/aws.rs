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

/// The one S3 client builder: the SDK configuration, path-style addressing
/// when asked (S3-compatible servers such as the local stand-in need it;
/// see [`crate::config::S3Settings::force_path_style`]) and, for presigning
/// URLs other clients will use, another endpoint.
#[cfg(feature = "s3")]
pub fn s3_client(sdk: &SdkConfig, force_path_style: bool, endpoint: Option<&str>) -> aws_sdk_s3::Client {
    let mut builder = aws_sdk_s3::config::Builder::from(sdk).force_path_style(force_path_style);
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// Set by Lambda for every function, and by nothing else.
pub const LAMBDA_RUNTIME_API: &str = "AWS_LAMBDA_RUNTIME_API";

/// True when the process runs inside Lambda.
pub fn in_lambda() -> bool {
    std::env::var_os(LAMBDA_RUNTIME_API).is_some()
}
