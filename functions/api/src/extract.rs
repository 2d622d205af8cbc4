//! The API's JSON body and query extractors: axum's, with their rejections
//! mapped once to problem+json (400 with axum's own explanation; 415 for a
//! body that is not JSON, 413 for one over the limit), so no handler maps
//! them by hand.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::problem::ApiError;

/// A JSON request body (`Content-Type: application/json`).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        axum::Json::<T>::from_request(request, state).await.map(|axum::Json(value)| Self(value)).map_err(|e| match e.status() {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(e.body_text()),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(e.body_text()),
            // Syntax and data errors alike: the body is malformed.
            _ => ApiError::BadRequest(e.body_text()),
        })
    }
}

/// The query string.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// JSON Schema's integers, for `deserialize_with`: `201` and `201.0` alike
/// (serde's integer types take only the first; the OpenAPI document says
/// `integer`, which includes the second).
pub fn json_integer<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i128>,
{
    use serde::Deserialize;
    use serde::de::Error;
    let number = serde_json::Number::deserialize(deserializer)?;
    let value = match (number.as_i64(), number.as_u64(), number.as_f64()) {
        (Some(i), _, _) => i128::from(i),
        (_, Some(u), _) => i128::from(u),
        // Whole and well inside i128, so the cast is exact.
        (_, _, Some(f)) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e30 => f as i128,
        _ => return Err(D::Error::custom(format!("invalid type: {number} is not an integer"))),
    };
    T::try_from(value).map_err(|_| D::Error::custom(format!("{number} is out of range")))
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    struct Body {
        #[serde(deserialize_with = "super::json_integer")]
        n: u64,
    }

    #[test]
    fn integers_as_json_schema_means_them() {
        let n = |text: &str| serde_json::from_str::<Body>(text).map(|b| b.n).ok();
        assert_eq!((n(r#"{"n": 201}"#), n(r#"{"n": 201.0}"#), n(r#"{"n": 2.01e2}"#)), (Some(201), Some(201), Some(201)));
        assert_eq!((n(r#"{"n": 201.5}"#), n(r#"{"n": -1}"#), n(r#"{"n": 1e300}"#), n(r#"{"n": "201"}"#)), (None, None, None, None));
    }
}
