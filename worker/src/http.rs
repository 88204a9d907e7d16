//! The one place a worker sends a request upstream: a [`PreparedRequest`] (a manifest
//! action or the `http` connector's input, credentials already in) goes out through the
//! egress-guarded client, bounded in time and in the size of what comes back, in a client
//! span that carries the trace context upstream and records no secret.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Map, Value, json};
use tracing::field::Empty;
use tracing::{Instrument, Span};
use weft_domain::connector::{Body, Carrying, PreparedRequest};
use weft_domain::limits;
use weft_domain::messages::{ErrorClass, NodeError};
use weft_runtime::egress::{EgressPolicy, GuardedClient, SendError};
use weft_runtime::trace;

/// An upstream answer, whatever its status.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub retry_after: Option<String>,
    /// `{status, headers, body}`, the body parsed when it is JSON.
    pub value: Value,
    /// The body as text, for error records.
    pub text: String,
}

/// One shared client per process (connection pooling).
pub struct HttpEngine {
    client: GuardedClient,
    max_response_bytes: usize,
}

fn permanent(message: impl Into<String>) -> NodeError {
    NodeError::new(ErrorClass::Permanent, message)
}

impl HttpEngine {
    pub fn new(policy: EgressPolicy, max_response_bytes: usize) -> Result<Self, reqwest::Error> {
        let client = GuardedClient::new(policy, concat!("weft/", env!("CARGO_PKG_VERSION")))?;
        Ok(Self {
            client,
            max_response_bytes,
        })
    }

    /// The guarded client, for token endpoints.
    pub fn client(&self) -> &GuardedClient {
        &self.client
    }

    /// Sends `request`, bounded by `timeout` (and by its own, when shorter).
    pub async fn send(
        &self,
        request: PreparedRequest,
        timeout: Duration,
    ) -> Result<Response, NodeError> {
        let timeout = request.timeout.map_or(timeout, |own| own.min(timeout));
        let carrying = request.carrying;
        let mut builder = self
            .client
            .request(request.method, request.url)
            .headers(request.headers)
            .timeout(timeout);
        builder = match request.body {
            Body::Empty => builder,
            Body::Json(value) => builder.json(&value),
            Body::Form(pairs) => builder.form(&pairs),
            Body::Raw(text) => builder.body(text),
        };
        let mut request = builder
            .build()
            .map_err(|e| permanent(SendError::Http(e).describe()))?;
        let span = client_span(&request);
        trace::inject_http(&span, request.headers_mut());
        let result = self
            .exchange(request, carrying)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(response) => {
                span.record("http.response.status_code", response.status);
                if response.status >= 400 {
                    span.record("otel.status_code", "ERROR");
                    span.record("error.type", tracing::field::display(response.status));
                }
            }
            Err(error) => {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", error.class.as_str());
            }
        }
        result
    }

    async fn exchange(
        &self,
        request: reqwest::Request,
        carrying: Carrying,
    ) -> Result<Response, NodeError> {
        let response = self
            .client
            .execute(request, carrying)
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let headers: Map<String, Value> = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    Value::from(String::from_utf8_lossy(value.as_bytes()).into_owned()),
                )
            })
            .collect();
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.contains("json"));
        let bytes = self.read_body(response).await?;
        let text = limits::text_without_nul(String::from_utf8_lossy(&bytes).into_owned());
        let body = if bytes.is_empty() {
            Value::Null
        } else if is_json {
            let parsed =
                serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(text.clone()));
            // A result nested deeper could not be decoded on its way back to the scheduler.
            limits::check_json_depth(&parsed).map_err(|too_deep| {
                NodeError::new(
                    ErrorClass::Permanent,
                    format!("the upstream response body is {too_deep}"),
                )
            })?;
            limits::without_nul(parsed)
        } else {
            Value::String(text.clone())
        };
        Ok(Response {
            status,
            retry_after,
            value: json!({"status": status, "headers": headers, "body": body}),
            text,
        })
    }

    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, NodeError> {
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > self.max_response_bytes {
                        return Err(permanent(format!(
                            "upstream response is over the limit of {} bytes (WEFT_MAX_RESPONSE_BYTES)",
                            self.max_response_bytes
                        )));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(bytes),
                Err(e) => return Err(transport_error(&SendError::Http(e))),
            }
        }
    }
}

/// The span of one request upstream, with OpenTelemetry's HTTP client attributes. The
/// URL is recorded without its query, fragment and user info: any of them may carry a
/// credential. Headers are not recorded at all.
fn client_span(request: &reqwest::Request) -> Span {
    let url = request.url();
    let method = request.method().as_str();
    tracing::info_span!(
        "http_request",
        otel.name = method,
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = method,
        server.address = url.host_str(),
        server.port = url.port_or_known_default(),
        url.full = %without_secrets(url),
        http.response.status_code = Empty,
        error.type = Empty,
    )
}

fn without_secrets(url: &reqwest::Url) -> reqwest::Url {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    // Fails only for URLs that cannot have user info, which then have none.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url
}

/// A request that got no (complete) response: refused egress or a refused redirect is
/// permanent, a timeout is a timeout, anything else on the network is worth a retry. The
/// message never holds the URL, whose query may carry a credential.
pub fn transport_error(error: &SendError) -> NodeError {
    if let Some(refused) = error.refusal() {
        return permanent(refused.to_string());
    }
    if let SendError::Redirect(refused) = error {
        return permanent(refused.to_string());
    }
    if error.is_timeout() {
        return NodeError::new(ErrorClass::Timeout, "the request timed out");
    }
    NodeError::new(ErrorClass::Retryable, error.describe())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_domain::connector::prepare_http;

    #[test]
    fn recorded_urls_keep_no_credentials() {
        let url = reqwest::Url::parse("https://user:pw@api.test:8443/v1/items?api_key=sk_1#frag")
            .expect("valid URL");
        assert_eq!(
            without_secrets(&url).as_str(),
            "https://api.test:8443/v1/items"
        );
    }

    #[tokio::test]
    async fn network_errors_are_retryable_and_never_echo_the_url() {
        let allow_loopback = EgressPolicy::new(vec!["127.0.0.0/8".parse().expect("rule")]);
        let engine = HttpEngine::new(allow_loopback, 1024).expect("client builds");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        let request = prepare_http(
            &json!({"url": format!("http://127.0.0.1:{port}/?api_key=sk_live_secret")}),
        )
        .expect("valid");
        let error = engine
            .send(request, Duration::from_secs(2))
            .await
            .expect_err("nothing listens");
        assert_eq!(error.class, ErrorClass::Retryable);
        assert!(
            error.message.starts_with("could not connect"),
            "{}",
            error.message
        );
        assert!(
            !error.message.contains("sk_live_secret"),
            "{}",
            error.message
        );
    }
}
