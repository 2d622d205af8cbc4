//! The model endpoint, called through `aws-sdk-sagemakerruntime` (the
//! project's model server locally, a SageMaker endpoint in AWS).

use aws_sdk_sagemakerruntime::primitives::Blob;
use bytes::Bytes;
use cxr_platform::domain::MediaType;
use cxr_platform::domain::invocation::InvocationResponse;

/// Why the endpoint gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The model looked at the image and refused it (a 4xx with a reason):
    /// final, retrying cannot help.
    #[error("the model refused the image: {0}")]
    Refused(String),
    /// The endpoint is at capacity (429 / ThrottlingException): retry later.
    #[error("the model endpoint is at capacity: {0}")]
    Throttled(String),
    /// Unreachable, 5xx, or an answer that is not the model server's.
    #[error("the model endpoint is unavailable: {0}")]
    Unavailable(String),
}

#[derive(Clone, Debug)]
pub struct ModelEndpoint {
    client: aws_sdk_sagemakerruntime::Client,
    name: String,
    inline_max_bytes: usize,
}

impl ModelEndpoint {
    pub fn new(client: aws_sdk_sagemakerruntime::Client, name: impl Into<String>, inline_max_bytes: usize) -> Self {
        Self { client, name: name.into(), inline_max_bytes }
    }

    /// Sends one image (stored at `s3://{bucket}/{key}`); asks for the
    /// Grad-CAM heatmap and boxes of the most probable label, and for a
    /// preview PNG of the image. Images over
    /// the inline limit are sent by reference: `{"s3_uri": ...}` as JSON,
    /// which the model server reads from S3 itself.
    pub async fn invoke(&self, image: &Bytes, media_type: MediaType, bucket: &str, key: &str) -> Result<InvocationResponse, EndpointError> {
        let (content_type, body) = if image.len() <= self.inline_max_bytes {
            (media_type.as_str(), image.to_vec())
        } else {
            ("application/json", serde_json::json!({ "s3_uri": format!("s3://{bucket}/{key}") }).to_string().into_bytes())
        };
        let answer = self
            .client
            .invoke_endpoint()
            .endpoint_name(&self.name)
            .content_type(content_type)
            .accept("application/json")
            .custom_attributes("explain=top;preview=1")
            .body(Blob::new(body))
            .send()
            .await;
        let body = match answer {
            Ok(output) => output.body.map(|b| b.into_inner()).unwrap_or_default(),
            Err(err) => {
                use aws_sdk_sagemakerruntime::error::ProvideErrorMetadata;
                use aws_sdk_sagemakerruntime::operation::invoke_endpoint::InvokeEndpointError;
                let message = aws_sdk_sagemakerruntime::error::DisplayErrorContext(&err).to_string();
                // SageMaker wraps the container's own non-200 answer in a
                // ModelError (424) carrying the original status; the local
                // model server answers with that status directly.
                let original = match err.as_service_error() {
                    Some(InvokeEndpointError::ModelError(e)) => e.original_status_code().and_then(|s| u16::try_from(s).ok()),
                    _ => None,
                };
                let throttled = err.as_service_error().and_then(|e| e.code()) == Some("ThrottlingException");
                let status = original.or_else(|| err.raw_response().map(|r| r.status().as_u16()));
                return Err(match status {
                    _ if throttled => EndpointError::Throttled(message),
                    Some(429) => EndpointError::Throttled(message),
                    Some(s) if (400..500).contains(&s) && s != 424 => EndpointError::Refused(message),
                    _ => EndpointError::Unavailable(message),
                });
            }
        };
        serde_json::from_slice(&body).map_err(|e| EndpointError::Unavailable(format!("unexpected answer from the model endpoint: {e}")))
    }
}
