//! The Router inside Lambda: lambda_http's adapter, behind one check of our
//! own. lambda_http 1.3 turns an event into a request with three
//! `unwrap`/`expect`s on what the event says: aws_lambda_events 1.2
//! `expect`s that a body flagged base64 decodes (`Body::from_maybe_encoded`),
//! `build_request_uri` unwraps `Url::parse` of the scheme, Host and path, and
//! the request builder `expect`s the URL plus the raw query string to be a
//! URI. API Gateway always sends events that pass, but an event that lies
//! would panic in the adapter, costing the invocation a panic instead of a
//! clear error (fuzz target `api_gateway_event`: a Host with a leading
//! space). The adapter between `lambda_runtime::run` and the Router is the
//! extension point lambda_http's own `adapter_is_boxable` test keeps open.

use axum::Router;
use base64::Engine;
use lambda_http::lambda_runtime::{self, Diagnostic, LambdaEvent, Service};
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, BoxFuture};

/// Serves `app` to the Lambda runtime until the runtime stops.
pub async fn run(app: Router) -> Result<(), lambda_http::Error> {
    lambda_runtime::run(RefuseMalformedEvents(Adapter::from(app))).await
}

/// Whether lambda_http can turn the event into a request without
/// panicking: a body flagged base64 decodes, and the URL it builds (the
/// same steps as its `into_api_gateway_v2_request` and `build_request_uri`)
/// parses, first as a URL, then with the raw query string as a URI.
pub fn event_converts(event: &LambdaRequest) -> bool {
    #[allow(unreachable_patterns)] // other event kinds exist when lambda_http's features turn them on
    let event = match event {
        LambdaRequest::ApiGatewayV2(event) => event,
        _ => return true,
    };
    let body_decodes = !event.is_base64_encoded || event.body.as_deref().is_none_or(|body| base64::engine::general_purpose::STANDARD.decode(body).is_ok());
    body_decodes && uri_of(event).is_some()
}

/// The request URI lambda_http builds for an HTTP API event, or `None`
/// where it would panic.
fn uri_of(event: &lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest) -> Option<lambda_http::http::Uri> {
    let raw_path = event.raw_path.as_deref().unwrap_or_default();
    let path = match event.request_context.stage.as_deref() {
        _ if std::env::var_os("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH").is_some() => raw_path.to_owned(),
        None | Some("$default") => raw_path.to_owned(),
        Some(stage) if raw_path.starts_with(&format!("/{stage}/")) => raw_path.to_owned(),
        Some(stage) => format!("/{stage}{raw_path}"),
    };
    let host = event.headers.get(lambda_http::http::header::HOST).and_then(|h| h.to_str().ok()).or(event.request_context.domain_name.as_deref());
    let mut uri = match host {
        None => url::Url::parse(&format!("http://localhost{path}")).ok()?.path().to_owned(),
        Some(host) => {
            let scheme = event.headers.get("x-forwarded-proto").and_then(|s| s.to_str().ok()).unwrap_or("https");
            url::Url::parse(&format!("{scheme}://{host}{path}")).ok()?.to_string()
        }
    };
    if let Some(query) = event.raw_query_string.as_deref().filter(|q| !q.is_empty()) {
        uri.push('?');
        uri.push_str(query);
    }
    uri.parse().ok()
}

/// Answers an invocation error for an event lambda_http would panic on
/// ([`event_converts`]); passes every other event to lambda_http.
struct RefuseMalformedEvents<S>(S);

impl<S> Service<LambdaEvent<LambdaRequest>> for RefuseMalformedEvents<S>
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
        if !event_converts(&event.payload) {
            tracing::warn!(request_id = %event.context.request_id, "event cannot become a request (body flagged base64 that does not decode, or no valid URL); refused");
            return Box::pin(std::future::ready(Err(Diagnostic {
                error_type: "MalformedEvent".into(),
                error_message: "the event's body is flagged base64 but does not decode, or its host, path and query make no URL".into(),
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
        event_with(encoded, body, "/", "", "api.example.com")
    }

    fn event_with(encoded: bool, body: &str, path: &str, query: &str, host: &str) -> LambdaRequest {
        let text = format!(
            r#"{{"version":"2.0","routeKey":"$default","rawPath":"{path}","rawQueryString":"{query}","headers":{{"host":"{host}"}},"requestContext":{{"http":{{"method":"POST","path":"/","protocol":"HTTP/1.1","sourceIp":"127.0.0.1","userAgent":"t"}},"requestId":"r","routeKey":"$default","stage":"$default","time":"01/Jan/2026:00:00:00 +0000","timeEpoch":0,"accountId":"1","apiId":"a","domainName":"d","domainPrefix":"d"}},"isBase64Encoded":{encoded},"body":"{body}"}}"#
        );
        serde_json::from_str(&text).expect("an API Gateway v2 event")
    }

    #[test]
    fn only_a_body_flagged_base64_that_does_not_decode_is_refused() {
        assert!(event_converts(&event(true, "aGVsbG8=")));
        assert!(event_converts(&event(false, "not base64 at all!")));
        assert!(!event_converts(&event(true, "not base64 at all!")));
    }

    #[test]
    fn events_that_make_no_url_are_refused_and_the_others_convert() {
        for (path, query, host) in
            [("/v1/studies", "limit=5&status=done", "api.example.com"), ("/v1/studies/%20x", "", "d.execute-api.eu-west-1.amazonaws.com")]
        {
            let event = event_with(false, "", path, query, host);
            assert!(event_converts(&event), "{path}?{query} at {host}");
            // What lambda_http itself does with it: no panic.
            let _ = lambda_http::Request::from(event);
        }
        // The fuzzer's finding: a Host with a leading space.
        assert!(!event_converts(&event_with(false, "", "/v1/studies", "", " api.example.com")));
        // A query string no URI can hold.
        assert!(!event_converts(&event_with(false, "", "/v1/studies", "a=\\u0001", "api.example.com")));
    }
}
