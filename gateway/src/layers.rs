//! What wraps every request, whatever its route: a request id, the server span and the
//! metrics, the answer to a panic, and compression; and the request timeout, which
//! [`api::router`](crate::api) applies to the routes it bounds.
//!
//! The request id comes from the caller's `x-request-id` when it is usable (an id a
//! proxy in front of the gateway assigned ties its logs to ours), else a new UUID. It is
//! returned in `x-request-id` on every response and recorded in the request's span, so
//! every log line of the request carries it.

use std::any::Any;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{Extensions, HeaderMap, HeaderName, StatusCode, Version};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::error::ApiError;
use crate::metrics::{self, Metrics};
use crate::spans;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id taken from a caller.
const MAX_REQUEST_ID: usize = 128;

tokio::task_local! {
    /// The id of the request being served. The answer to a panic is written without the
    /// request at hand, but within its task.
    static CURRENT_REQUEST_ID: String;
}

/// Wraps every route of `router`, and its fallbacks, in the layers every request goes
/// through. Outermost first: request id, compression, span, metrics, panic.
pub fn around_every_request<S>(router: Router<S>, metrics: Metrics) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    // The panic is caught inside the metrics and the span, so both see its 500.
    router
        .layer(CatchPanicLayer::custom(panicked))
        .layer(middleware::from_fn_with_state(metrics, metrics::track_http))
        .layer(middleware::from_fn(spans::server_span))
        .layer(middleware::from_fn(remember_request_id))
        .layer(CompressionLayer::new().compress_when(DefaultPredicate::new().and(is_json)))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(middleware::from_fn(drop_unusable_request_id))
}

/// Bounds each request of `router` to `limit`: past it, the handler is dropped and the
/// caller answered 504 `timeout`.
pub fn with_timeout<S>(router: Router<S>, limit: Duration) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.layer(middleware::from_fn_with_state(limit, request_timeout))
}

/// The middleware of [`with_timeout`], for routers that are not plain [`Router`]s.
pub async fn request_timeout(
    State(limit): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(format!(
            "the request was not answered within {} and was abandoned; it may have taken effect, check before retrying",
            humantime::format_duration(limit)
        ))
        .into_response(),
    }
}

/// The request id in the span and for [`panicked`], both inside this layer.
async fn remember_request_id(request: Request, next: Next) -> Response {
    let id = spans::request_id(&request).unwrap_or_default();
    CURRENT_REQUEST_ID.scope(id, next.run(request)).await
}

/// A caller's id goes into logs and traces: one that is too long or holds other than
/// the characters of usual ids (UUIDs, ULIDs, base64, `host:pid-counter`) is replaced by
/// a new one.
async fn drop_unusable_request_id(mut request: Request, next: Next) -> Response {
    let usable = request
        .headers()
        .get(&REQUEST_ID)
        .is_none_or(|id| usable_request_id(id.as_bytes()));
    if !usable {
        request.headers_mut().remove(&REQUEST_ID);
    }
    next.run(request).await
}

fn usable_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(b))
}

/// A panic is a bug: logged with its text, answered 500 with the request id to quote,
/// never with the text, which may hold anything.
fn panicked(panic: Box<dyn Any + Send + 'static>) -> Response {
    let text = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no text)");
    tracing::error!(panic = text, "a request handler panicked");
    let request_id = CURRENT_REQUEST_ID
        .try_with(String::clone)
        .unwrap_or_default();
    ApiError::Panicked { request_id }.into_response()
}

/// JSON (`application/json`, `application/problem+json`…) is what the API answers, and
/// compresses well; a webhook answered with a scenario's own body of another type (an
/// image, an archive) is sent as it is.
fn is_json(_: StatusCode, _: Version, headers: &HeaderMap, _: &Extensions) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use prometheus::Registry;
    use serde_json::{Value, json};
    use tokio::net::TcpListener;

    use super::*;

    const PANIC_TEXT: &str = "the handler's secret panic text";

    async fn slow() -> &'static str {
        tokio::time::sleep(Duration::from_secs(30)).await;
        "too late"
    }

    async fn panics() -> &'static str {
        panic!("{PANIC_TEXT}");
    }

    async fn answers() -> axum::Json<Value> {
        axum::Json(json!({"ok": true}))
    }

    /// The layer stack around a slow and a panicking handler, served on a local port.
    async fn serve() -> String {
        let router = with_timeout(
            Router::new()
                .route("/slow", get(slow))
                .route("/panic", get(panics))
                .route("/ok", get(answers)),
            Duration::from_millis(100),
        );
        let app = around_every_request(router, Metrics::new(&Registry::new()));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("bound address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    async fn call(url: &str, request_id: Option<&str>) -> (StatusCode, String, Value) {
        let mut request = reqwest::Client::new().get(url);
        if let Some(id) = request_id {
            request = request.header(REQUEST_ID.as_str(), id);
        }
        let response = request.send().await.expect("the server answers");
        let status = StatusCode::from_u16(response.status().as_u16()).expect("a status");
        let id = response
            .headers()
            .get(REQUEST_ID.as_str())
            .and_then(|id| id.to_str().ok())
            .expect("every response has a request id")
            .to_owned();
        let body = response.text().await.expect("a body");
        (
            status,
            id,
            serde_json::from_str(&body).expect("a JSON body"),
        )
    }

    #[tokio::test]
    async fn a_request_over_the_timeout_is_answered_504_json() {
        let url = serve().await;
        let started = std::time::Instant::now();
        let (status, id, body) = call(&format!("{url}/slow"), None).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "cut at the timeout"
        );
        assert_eq!(body["error"]["code"], "timeout", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("100ms")),
            "{body}"
        );
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "a generated id: {id}");
    }

    #[tokio::test]
    async fn a_panic_is_a_500_with_the_request_id_and_without_its_text() {
        let url = serve().await;
        let (status, id, body) = call(&format!("{url}/panic"), Some("edge-7f3a:42")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(id, "edge-7f3a:42", "the caller's id is kept");
        assert_eq!(body["error"]["code"], "internal", "{body}");
        assert_eq!(body["error"]["details"]["request_id"], json!(id), "{body}");
        assert!(!body.to_string().contains(PANIC_TEXT), "{body}");

        let (status, id, body) = call(&format!("{url}/panic"), None).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "a generated id: {id}");
        assert_eq!(body["error"]["details"]["request_id"], json!(id), "{body}");
    }

    #[tokio::test]
    async fn an_unusable_request_id_is_replaced() {
        let url = serve().await;
        let long = "a".repeat(MAX_REQUEST_ID + 1);
        for unusable in ["two words", "<script>", "a\"b", long.as_str()] {
            let (_, id, _) = call(&format!("{url}/ok"), Some(unusable)).await;
            assert!(
                uuid::Uuid::parse_str(&id).is_ok(),
                "{unusable:?} became {id}"
            );
        }
    }

    #[test]
    fn usual_request_ids_are_usable() {
        for id in [
            "0190f6c2-8d4e-7c1a-9b2e-3f4a5b6c7d8e",
            "01J9ZQ3V5K8M2N4P6R8T0W2Y4A",
            "edge-7f3a:42",
            "dGVzdA==",
        ] {
            assert!(usable_request_id(id.as_bytes()), "{id}");
        }
        for id in ["", "a b", "a\nb", "ünï"] {
            assert!(!usable_request_id(id.as_bytes()), "{id:?}");
        }
    }

    #[test]
    fn only_json_is_compressed() {
        let with = |content_type: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, content_type.parse().expect("a header value"));
            is_json(
                StatusCode::OK,
                Version::HTTP_11,
                &headers,
                &Extensions::new(),
            )
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/problem+json"));
        assert!(!with("image/png"));
        assert!(!with("text/plain"));
        assert!(!is_json(
            StatusCode::OK,
            Version::HTTP_11,
            &HeaderMap::new(),
            &Extensions::new()
        ));
    }
}
