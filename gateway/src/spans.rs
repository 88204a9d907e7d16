//! A server span for every HTTP request, named and described by OpenTelemetry's HTTP
//! conventions. It records the route template, never the path: a webhook's path is its
//! token, a credential. It carries the request id, so every log line of the request does.
//! Handlers fill in the run, scenario and workspace once known.
//!
//! The trace starts here: a `traceparent` sent by a caller is not continued, since
//! anyone on the internet may call a webhook, and an untrusted parent would choose our
//! trace ids and sampling.

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use tower_http::request_id::RequestId;
use tracing::Instrument;
use tracing::field::Empty;

pub async fn server_span(request: Request, next: Next) -> Response {
    let method = method_name(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let request_id = request_id(&request);
    let span = tracing::info_span!(
        "request",
        otel.name = %match &route {
            Some(route) => format!("{method} {route}"),
            None => method.to_owned(),
        },
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        http.route = route.as_deref(),
        http.response.status_code = Empty,
        error.type = Empty,
        weft.request_id = request_id.as_deref(),
        weft.run_id = Empty,
        weft.workspace_id = Empty,
        weft.scenario_id = Empty,
    );
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    // Only 5xx are the server's failures; a 4xx is the caller's.
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", status.as_str());
    }
    response
}

/// The request's id, as `SetRequestIdLayer` (in `layers`) left it.
pub fn request_id(request: &Request) -> Option<String> {
    request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .map(str::to_owned)
}

/// The method as the conventions want it: a known method, else `_OTHER` (a method is
/// whatever the caller sent, and attribute values should stay few).
fn method_name(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::CONNECT,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("_OTHER", |known| known.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_are_other() {
        assert_eq!(method_name(&Method::POST), "POST");
        let odd = Method::from_bytes(b"PURGE").expect("valid method");
        assert_eq!(method_name(&odd), "_OTHER");
    }
}
