//! Secrets Manager: credentials a function reads when it starts (the
//! DocumentDB login, the de-identification key) instead of deploy-time
//! environment strings that anyone with `lambda:GetFunctionConfiguration`
//! could read and that a rotation would leave stale.

use serde_json::{Map, Value};

use crate::config::Secret;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("Secrets Manager could not give {arn}: {reason}")]
    Unavailable { arn: String, reason: String },
    #[error("secret {arn} is not a JSON object")]
    NotJson { arn: String },
    #[error("secret {arn} has no string key {key:?}")]
    MissingKey { arn: String, key: String },
}

/// A JSON secret's keys.
pub struct JsonSecret {
    arn: String,
    fields: Map<String, Value>,
}

impl JsonSecret {
    /// Reads the secret's current version.
    pub async fn read(sdk: &aws_config::SdkConfig, arn: &str) -> Result<Self, SecretError> {
        let client = aws_sdk_secretsmanager::Client::new(sdk);
        let answer = client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| SecretError::Unavailable { arn: arn.to_owned(), reason: aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string() })?;
        Self::parse(arn, answer.secret_string().unwrap_or_default())
    }

    pub fn parse(arn: &str, text: &str) -> Result<Self, SecretError> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(fields)) => Ok(Self { arn: arn.to_owned(), fields }),
            _ => Err(SecretError::NotJson { arn: arn.to_owned() }),
        }
    }

    /// A key's value: a string, or a number written as one (`port`).
    pub fn get(&self, key: &str) -> Result<Secret, SecretError> {
        match self.fields.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Ok(Secret::new(s.clone())),
            Some(Value::Number(n)) => Ok(Secret::new(n.to_string())),
            _ => Err(SecretError::MissingKey { arn: self.arn.clone(), key: key.to_owned() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_and_their_absence_named() {
        let secret = JsonSecret::parse("arn:s", r#"{"username":"cxr","password":"p@ss","port":27017,"host":""}"#).expect("JSON");
        assert_eq!(secret.get("username").expect("username").expose(), "cxr");
        assert_eq!(secret.get("port").expect("port").expose(), "27017");
        assert!(matches!(secret.get("host"), Err(SecretError::MissingKey { .. })));
        assert!(matches!(secret.get("nothing"), Err(SecretError::MissingKey { .. })));
        assert!(matches!(JsonSecret::parse("arn:s", "plain text"), Err(SecretError::NotJson { .. })));
        // Nothing of the value in what a log line would print.
        assert!(!format!("{:?}", secret.get("password").expect("password")).contains("p@ss"));
    }
}
