//! The built-in `http` connector's `request` action (DESIGN §6): a free-form request
//! `{method, url, headers, query, body, body_type, timeout}` answered with
//! `{status, headers, body}`, the body parsed when it is JSON.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use chrono::Utc;
use reqwest::redirect;
use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::field::Empty;
use tracing::{Instrument, Span};
use weft_shared::messages::{ErrorClass, NodeError};
use weft_shared::trace;

use crate::egress::EgressPolicy;
use crate::outcome;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REDIRECTS: usize = 10;

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum BodyType {
    #[default]
    Json,
    Form,
    Raw,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestInput {
    #[serde(default = "default_method")]
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, Value>,
    #[serde(default)]
    query: BTreeMap<String, Value>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    body_type: BodyType,
    /// `"10s"`, or milliseconds.
    #[serde(default)]
    timeout: Option<Value>,
}

fn default_method() -> String {
    "GET".to_owned()
}

/// Raised by the guarded resolver or redirect policy; found again in the error chain.
#[derive(Debug)]
struct EgressRefused(String);

impl fmt::Display for EgressRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EgressRefused {}

fn permanent(message: impl Into<String>) -> NodeError {
    NodeError::new(ErrorClass::Permanent, message)
}

/// Renders a header, query or form value: strings as they are, anything else as JSON.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One shared client per process (connection pooling), with bounded waits and the
/// egress policy applied to every resolved address and redirect.
pub struct HttpEngine {
    client: reqwest::Client,
    policy: EgressPolicy,
    max_response_bytes: usize,
}

/// What one request produced, for metrics.
pub struct Exchange {
    /// The response status, `None` when no response came.
    pub status: Option<u16>,
    pub result: Result<Value, NodeError>,
}

impl HttpEngine {
    pub fn new(policy: EgressPolicy, max_response_bytes: usize) -> Result<Self, reqwest::Error> {
        let redirect_policy = policy.clone();
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("weft/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(policy.resolver())
            .redirect(redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
                }
                match literal_ip(attempt.url()) {
                    Some((host, ip)) if !redirect_policy.permits(&host, ip) => attempt.error(
                        EgressRefused(format!("redirect to internal address {ip} refused")),
                    ),
                    _ => attempt.follow(),
                }
            }))
            .build()?;
        Ok(Self {
            client,
            policy,
            max_response_bytes,
        })
    }

    /// Sends the request described by `input`, bounded by `timeout`, in a client span
    /// whose trace context goes upstream in `traceparent`.
    pub async fn request(&self, input: &Value, timeout: Duration) -> Exchange {
        let built = self
            .build(input, timeout)
            .and_then(|request| request.build().map_err(|e| transport_error(&e)));
        let mut request = match built {
            Ok(request) => request,
            Err(error) => {
                return Exchange {
                    status: None,
                    result: Err(error),
                };
            }
        };
        let span = client_span(&request);
        trace::inject_http(&span, request.headers_mut());
        let exchange = self.send(request).instrument(span.clone()).await;
        if let Some(status) = exchange.status {
            span.record("http.response.status_code", status);
        }
        if let Err(error) = &exchange.result {
            span.record("otel.status_code", "ERROR");
            match exchange.status {
                Some(status) if status >= 400 => {
                    span.record("error.type", tracing::field::display(status))
                }
                _ => span.record("error.type", error.class.as_str()),
            };
        }
        exchange
    }

    async fn send(&self, request: reqwest::Request) -> Exchange {
        let response = match self.client.execute(request).await {
            Ok(response) => response,
            Err(e) => {
                return Exchange {
                    status: None,
                    result: Err(transport_error(&e)),
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
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
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.contains("json"));
        let bytes = match self.read_body(response).await {
            Ok(bytes) => bytes,
            Err(error) => {
                return Exchange {
                    status: Some(status),
                    result: Err(error),
                };
            }
        };
        let body_text = String::from_utf8_lossy(&bytes);
        if let Some(error) =
            outcome::classify(status, retry_after.as_deref(), &body_text, Utc::now())
        {
            return Exchange {
                status: Some(status),
                result: Err(error),
            };
        }
        let body = if bytes.is_empty() {
            Value::Null
        } else if is_json {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(body_text.into_owned()))
        } else {
            Value::String(body_text.into_owned())
        };
        let mut output = Map::new();
        output.insert("status".into(), Value::from(status));
        output.insert("headers".into(), Value::Object(headers));
        output.insert("body".into(), body);
        Exchange {
            status: Some(status),
            result: Ok(Value::Object(output)),
        }
    }

    fn build(
        &self,
        input: &Value,
        task_timeout: Duration,
    ) -> Result<reqwest::RequestBuilder, NodeError> {
        let input: RequestInput = serde_json::from_value(input.clone())
            .map_err(|e| permanent(format!("invalid input for http.request: {e}")))?;
        let url = reqwest::Url::parse(&input.url)
            .map_err(|e| permanent(format!("input.url `{}` is not a URL: {e}", input.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(permanent(format!(
                "input.url: scheme `{}` is not http or https",
                url.scheme()
            )));
        }
        if let Some((host, ip)) = literal_ip(&url)
            && !self.policy.permits(&host, ip)
        {
            return Err(permanent(format!(
                "egress to internal address {ip} is refused (allow it with WEFT_EGRESS_ALLOW)"
            )));
        }
        let method = reqwest::Method::from_bytes(input.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                permanent(format!(
                    "input.method: `{}` is not an HTTP method",
                    input.method
                ))
            })?;
        let timeout = match &input.timeout {
            None => task_timeout,
            Some(value) => parse_timeout(value)?.min(task_timeout),
        };
        let mut request = self.client.request(method, url).timeout(timeout);
        for (name, value) in &input.headers {
            request = request.header(name.as_str(), text(value));
        }
        if !input.query.is_empty() {
            let pairs: Vec<(&str, String)> = input
                .query
                .iter()
                .map(|(k, v)| (k.as_str(), text(v)))
                .collect();
            request = request.query(&pairs);
        }
        request = match (input.body, input.body_type) {
            (None | Some(Value::Null), _) => request,
            (Some(body), BodyType::Json) => request.json(&body),
            (Some(Value::Object(fields)), BodyType::Form) => {
                let pairs: Vec<(String, String)> =
                    fields.iter().map(|(k, v)| (k.clone(), text(v))).collect();
                request.form(&pairs)
            }
            (Some(_), BodyType::Form) => {
                return Err(permanent(
                    "input.body must be an object when body_type is form",
                ));
            }
            (Some(body), BodyType::Raw) => request.body(text(&body)),
        };
        Ok(request)
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
                Err(e) => return Err(transport_error(&e)),
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

fn parse_timeout(value: &Value) -> Result<Duration, NodeError> {
    match value {
        Value::Number(ms) => ms
            .as_u64()
            .map(Duration::from_millis)
            .ok_or_else(|| permanent("input.timeout must be a positive number of milliseconds")),
        Value::String(text) => humantime::parse_duration(text)
            .map_err(|e| permanent(format!("input.timeout `{text}` is not a duration: {e}"))),
        _ => Err(permanent(
            "input.timeout must be a duration like \"10s\" or milliseconds",
        )),
    }
}

fn literal_ip(url: &reqwest::Url) -> Option<(String, IpAddr)> {
    let host = url.host_str()?;
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()?;
    Some((host.to_owned(), ip))
}

/// A request that got no (complete) response: refused egress is permanent, a timeout is
/// a timeout, anything else on the network is worth a retry.
fn transport_error(error: &reqwest::Error) -> NodeError {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<EgressRefused>() {
            return permanent(refused.to_string());
        }
        if cause.to_string().contains("egress to") {
            return permanent(cause.to_string());
        }
        source = cause.source();
    }
    if error.is_timeout() {
        return NodeError::new(ErrorClass::Timeout, "the request timed out");
    }
    // Not `error.to_string()`: it includes the URL, whose query may carry a credential.
    let kind = if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "the response broke off"
    } else {
        "the request failed"
    };
    let mut causes = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    let message = if causes.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {}", causes.join(": "))
    };
    NodeError::new(ErrorClass::Retryable, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn engine() -> HttpEngine {
        HttpEngine::new(EgressPolicy::default(), 1024).expect("client builds")
    }

    #[tokio::test]
    async fn invalid_input_is_a_permanent_error_naming_the_field() {
        let cases = [
            (json!({"url": "not a url"}), "input.url"),
            (json!({"url": "ftp://x.test/"}), "scheme `ftp`"),
            (
                json!({"url": "http://x.test/", "method": "FE TCH"}),
                "input.method",
            ),
            (
                json!({"url": "http://x.test/", "bogus": 1}),
                "unknown field `bogus`",
            ),
            (
                json!({"url": "http://x.test/", "body": [1], "body_type": "form"}),
                "must be an object",
            ),
        ];
        for (input, expected) in cases {
            let exchange = engine().request(&input, Duration::from_secs(1)).await;
            let error = exchange.result.expect_err("invalid input fails");
            assert_eq!(error.class, ErrorClass::Permanent);
            assert!(
                error.message.contains(expected),
                "{} does not mention {expected}",
                error.message
            );
        }
    }

    #[tokio::test]
    async fn internal_addresses_are_refused_before_any_connection() {
        for url in [
            "http://127.0.0.1:9/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:9/",
        ] {
            let exchange = engine()
                .request(&json!({"url": url}), Duration::from_secs(1))
                .await;
            let error = exchange.result.expect_err("refused");
            assert_eq!(error.class, ErrorClass::Permanent, "{url}");
            assert!(error.message.contains("egress"), "{}", error.message);
        }
        let exchange = engine()
            .request(
                &json!({"url": "http://localhost:9/"}),
                Duration::from_secs(1),
            )
            .await;
        let error = exchange
            .result
            .expect_err("a name resolving to loopback is refused too");
        assert_eq!(error.class, ErrorClass::Permanent);
        assert!(error.message.contains("egress"), "{}", error.message);
    }

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
        let input = json!({"url": format!("http://127.0.0.1:{port}/?api_key=sk_live_secret")});
        let error = engine
            .request(&input, Duration::from_secs(2))
            .await
            .result
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
