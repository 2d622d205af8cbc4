//! The Router inside Lambda: lambda_http's adapter, behind one check of our
//! own. aws_lambda_events 1.2 `expect`s that a body flagged base64 decodes
//! (`Body::from_maybe_encoded`); API Gateway always encodes correctly, but
//! an event that lies would panic in the adapter, costing the invocation a
//! panic instead of a clear error (fuzz target `api_gateway_event`). The
//! adapter between `lambda_runtime::run` and the Router is the extension
//! point lambda_http's own `adapter_is_boxable` test keeps open.

use axum::Router;
use base64::Engine;
use lambda_http::lambda_runtime::{self, Diagnostic, LambdaEvent, Service};
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, BoxFuture};

/// Serves `app` to the Lambda runtime until the runtime stops.
pub async fn run(app: Router) -> Result<(), lambda_http::Error> {
    lambda_runtime::run(RefuseUndecodableBodies(Adapter::from(app))).await
}

/// The event's body, when it is flagged base64, decodes as base64: the
/// condition under which lambda_http turns the event into a request
/// without panicking.
pub fn body_decodes(event: &LambdaRequest) -> bool {
    #[allow(unreachable_patterns)] // other event kinds exist when lambda_http's features turn them on
    let (encoded, body) = match event {
        LambdaRequest::ApiGatewayV2(event) => (event.is_base64_encoded, event.body.as_deref()),
        _ => return true,
    };
    !encoded || body.is_none_or(|body| base64::engine::general_purpose::STANDARD.decode(body).is_ok())
}

/// Answers an invocation error for an event whose body is flagged base64
/// but does not decode; passes every other event to lambda_http.
struct RefuseUndecodableBodies<S>(S);

impl<S> Service<LambdaEvent<LambdaRequest>> for RefuseUndecodableBodies<S>
where
    S: Service<LambdaEvent<LambdaRequest>>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<Diagnostic>,
{
    type Response = S::Response;
    type Error = Diagnostic;
    type Future = BoxFuture<'static, Result<S::Response, Diagnostic>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Diagnostic>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, event: LambdaEvent<LambdaRequest>) -> Self::Future {
        if !body_decodes(&event.payload) {
            tracing::warn!(request_id = %event.context.request_id, "event body flagged base64 does not decode; refused");
            return Box::pin(std::future::ready(Err(Diagnostic {
                error_type: "UndecodableBody".into(),
                error_message: "the event's body is flagged base64 but does not decode".into(),
            })));
        }
        let response = self.0.call(event);
        Box::pin(async move { response.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(encoded: bool, body: &str) -> LambdaRequest {
        let text = format!(
            r#"{{"version":"2.0","routeKey":"$default","rawPath":"/","rawQueryString":"","headers":{{}},"requestContext":{{"http":{{"method":"POST","path":"/","protocol":"HTTP/1.1","sourceIp":"127.0.0.1","userAgent":"t"}},"requestId":"r","routeKey":"$default","stage":"$default","time":"01/Jan/2026:00:00:00 +0000","timeEpoch":0,"accountId":"1","apiId":"a","domainName":"d","domainPrefix":"d"}},"isBase64Encoded":{encoded},"body":"{body}"}}"#
        );
        serde_json::from_str(&text).expect("an API Gateway v2 event")
    }

    #[test]
    fn only_a_body_flagged_base64_that_does_not_decode_is_refused() {
        assert!(body_decodes(&event(true, "aGVsbG8=")));
        assert!(body_decodes(&event(false, "not base64 at all!")));
        assert!(!body_decodes(&event(true, "not base64 at all!")));
    }
}
