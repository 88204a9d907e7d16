//! The request a manifest action and its input make (or the `http` connector's
//! free-form input), before its credentials are put in.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ids::RunId;
use http::Method;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use url::Url;

use super::path::PathTemplate;
use crate::manifest::BodyType;
use crate::messages::{ActionCall, ErrorClass, NodeError};
use crate::template::{self, Templates, is_template};

/// What a request carries that Weft put in, which decides where its redirects may lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrying {
    /// A connection's credentials (an auth header, an API key in a header or the query,
    /// a basic, bearer or OAuth token) or an OAuth client's secret: a redirect to another
    /// origin (scheme, host or port) is refused, since the credential would go with it.
    Credentials,
    /// Nothing of Weft's: redirects are followed wherever the policy permits, without the
    /// `Authorization`, `Cookie` and `Proxy-Authorization` headers once the origin changes.
    Nothing,
}

/// A request ready to send, before or after its credentials were put in.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedRequest {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Body,
    /// The request's own timeout (the action's `timeout`, the `http` input's `timeout`);
    /// the node's timeout bounds it in any case.
    pub timeout: Option<Duration>,
    /// Whether [`authorize`] put credentials in, which keeps redirects on the origin.
    pub carrying: Carrying,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Empty,
    Json(Value),
    Form(Vec<(String, String)>),
    Raw(String),
}

pub(super) fn permanent(message: impl Into<String>) -> NodeError {
    NodeError::new(ErrorClass::Permanent, message)
}

/// Header, query and form values: strings as they are, anything else as JSON.
pub(super) fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders a manifest action into a request for `input` through the task's connection.
pub fn prepare(
    call: &ActionCall,
    input: &Value,
    templates: &Templates,
) -> Result<PreparedRequest, NodeError> {
    let config = match call.connection.as_ref().map(|c| &c.config) {
        Some(Value::Object(config)) => Value::Object(config.clone()),
        _ => json!({}),
    };
    let base_scope = template::scope(&json!({ "config": config }));
    let scope = template::scope(&json!({ "input": input, "config": config }));
    let render = |field: &str, value: &Value, scope: &minijinja::Value| {
        templates
            .render_value(value, scope)
            .map_err(|e| permanent(format!("{field}: {e}")))
    };

    let base = match render(
        "base_url",
        &Value::String(call.base_url.clone()),
        &base_scope,
    )? {
        Value::String(base) => base,
        other => {
            return Err(permanent(format!("base_url renders to {other}, not a URL")));
        }
    };
    let base_url = parse_url("base_url", &base)?;
    let spec = &call.request;
    let method = parse_method("request.method", &spec.method)?;
    let path = PathTemplate::parse(&spec.path)
        .and_then(|path| path.render(templates, &scope))
        .map_err(|e| permanent(format!("request.path: {e}")))?;
    let mut url = join(&base_url, &base, &path)?;

    let mut query = Vec::new();
    for (name, value) in &spec.query {
        let rendered = render(&format!("request.query.{name}"), value, &scope)?;
        push_query(&mut query, name, &rendered);
    }
    append_query(&mut url, &query);

    let mut headers = HeaderMap::new();
    for (name, value) in &spec.headers {
        let field = format!("request.headers.{name}");
        let rendered = render(&field, value, &scope)?;
        insert_header(&mut headers, &field, name, &rendered)?;
    }

    let body = match &spec.body {
        None => Value::Null,
        Some(Value::Object(fields)) => {
            let mut rendered = Map::new();
            for (name, value) in fields {
                let field_value = render(&format!("request.body.{name}"), value, &scope)?;
                // A template that renders to null leaves its field out; a literal null
                // in the manifest is meant (e.g. to clear a field upstream).
                let from_template = matches!(value, Value::String(s) if is_template(s));
                if !(from_template && field_value.is_null()) {
                    rendered.insert(name.clone(), field_value);
                }
            }
            Value::Object(rendered)
        }
        Some(body) => render("request.body", body, &scope)?,
    };
    let body = make_body("request.body", body, spec.body_type)?;

    let timeout = spec
        .timeout
        .as_deref()
        .map(|text| {
            humantime::parse_duration(text)
                .map_err(|e| permanent(format!("request.timeout `{text}` is not a duration: {e}")))
        })
        .transpose()?;

    Ok(PreparedRequest {
        method,
        url,
        headers,
        body,
        timeout,
        carrying: Carrying::Nothing,
    })
}

/// The built-in `http` connector's input (architecture §7).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpInput {
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

/// Turns the `http` connector's free-form input `{method, url, headers, query, body,
/// body_type, timeout}` into a request. Its values are data, never templates.
pub fn prepare_http(input: &Value) -> Result<PreparedRequest, NodeError> {
    let input: HttpInput = serde_json::from_value(input.clone())
        .map_err(|e| permanent(format!("invalid input for http.request: {e}")))?;
    let mut url = parse_url("input.url", &input.url)?;
    let method = parse_method("input.method", &input.method)?;
    let mut query = Vec::new();
    for (name, value) in &input.query {
        push_query(&mut query, name, value);
    }
    append_query(&mut url, &query);
    let mut headers = HeaderMap::new();
    for (name, value) in &input.headers {
        insert_header(&mut headers, &format!("input.headers.{name}"), name, value)?;
    }
    let body = make_body(
        "input.body",
        input.body.unwrap_or(Value::Null),
        input.body_type,
    )?;
    let timeout = input.timeout.as_ref().map(parse_timeout).transpose()?;
    Ok(PreparedRequest {
        method,
        url,
        headers,
        body,
        timeout,
        carrying: Carrying::Nothing,
    })
}

fn parse_url(field: &str, text: &str) -> Result<Url, NodeError> {
    let url = Url::parse(text).map_err(|e| {
        permanent(format!(
            "{field} `{}` is not a URL: {e}",
            without_query(text)
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(permanent(format!(
            "{field}: scheme `{}` is not http or https",
            url.scheme()
        )));
    }
    Ok(url)
}

/// A URL as errors show it: its query may hold a secret.
fn without_query(text: &str) -> &str {
    text.split(['?', '#']).next().unwrap_or(text)
}

fn parse_method(field: &str, text: &str) -> Result<Method, NodeError> {
    let upper = text.to_ascii_uppercase();
    let known = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE",
    ];
    if !known.contains(&upper.as_str()) {
        return Err(permanent(format!(
            "{field}: `{text}` is not an HTTP method"
        )));
    }
    Method::from_bytes(upper.as_bytes())
        .map_err(|_| permanent(format!("{field}: `{text}` is not an HTTP method")))
}

/// Appends `path` to the base URL. The result must stay under the base URL: a path that
/// changes the host (`@evil.test/`) or climbs out of the base path (`/../`) would send the
/// connection's credentials somewhere else. "Under" counts whole segments: a base path
/// `/api` admits `/api` and `/api/…`, never `/api2/…`.
fn join(base_url: &Url, base: &str, path: &str) -> Result<Url, NodeError> {
    if path.is_empty() {
        return Ok(base_url.clone());
    }
    let joined = format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    let url = parse_url("request.path", &joined)?;
    let same_origin = url.scheme() == base_url.scheme()
        && url.host_str() == base_url.host_str()
        && url.port_or_known_default() == base_url.port_or_known_default()
        && url.username() == base_url.username()
        && url.password() == base_url.password();
    let base_path = base_url.path().trim_end_matches('/');
    let under_base = url
        .path()
        .strip_prefix(base_path)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    if !same_origin || !under_base {
        return Err(permanent(format!(
            "request.path `{}` leads outside the base URL {}",
            without_query(path),
            base_url.origin().ascii_serialization()
        )));
    }
    Ok(url)
}

/// Null leaves a parameter out; an array repeats it.
fn push_query(query: &mut Vec<(String, String)>, name: &str, value: &Value) {
    match value {
        Value::Null => {}
        Value::Array(items) => {
            for item in items.iter().filter(|item| !item.is_null()) {
                query.push((name.to_owned(), text(item)));
            }
        }
        other => query.push((name.to_owned(), text(other))),
    }
}

fn append_query(url: &mut Url, query: &[(String, String)]) {
    if query.is_empty() {
        return;
    }
    let mut pairs = url.query_pairs_mut();
    for (name, value) in query {
        pairs.append_pair(name, value);
    }
}

/// Null leaves the header out.
fn insert_header(
    headers: &mut HeaderMap,
    field: &str,
    name: &str,
    value: &Value,
) -> Result<(), NodeError> {
    if value.is_null() {
        return Ok(());
    }
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| permanent(format!("{field}: `{name}` is not a header name")))?;
    let value = HeaderValue::from_str(&text(value)).map_err(|_| {
        permanent(format!(
            "{field}: the value is not a valid header value (control characters or line breaks)"
        ))
    })?;
    headers.append(header, value);
    Ok(())
}

fn make_body(field: &str, body: Value, body_type: BodyType) -> Result<Body, NodeError> {
    Ok(match (body, body_type) {
        (Value::Null, _) => Body::Empty,
        (body, BodyType::Json) => Body::Json(body),
        (Value::Object(fields), BodyType::Form) => Body::Form(
            fields
                .iter()
                .filter(|(_, value)| !value.is_null())
                .map(|(name, value)| (name.clone(), text(value)))
                .collect(),
        ),
        (_, BodyType::Form) => {
            return Err(permanent(format!(
                "{field} must be an object when body_type is form"
            )));
        }
        (body, BodyType::Raw) => Body::Raw(text(&body)),
    })
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

/// The idempotency key of one node run: the same for every attempt and redelivery of the
/// node (or of one `for_each` item) in one run, different for any other node run.
pub fn idempotency_key(run_id: RunId, node_id: &str, item_index: Option<u32>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(run_id.as_uuid().as_bytes());
    hasher.update(node_id.as_bytes());
    // A separator no node id contains, so ("a", item 1) and ("a1", none) cannot meet.
    hasher.update([0]);
    if let Some(index) = item_index {
        hasher.update(index.to_be_bytes());
    }
    let digest = hasher.finalize();
    format!("weft-{}", hex::encode(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::connector::fixtures::*;
    use crate::ids::ConnectionId;
    use crate::manifest::{Auth, ResponseSpec};
    use crate::messages::SealedConnection;
    fn call(request: Value, base_url: &str, config: Value) -> ActionCall {
        ActionCall {
            base_url: base_url.to_owned(),
            auth: Auth::None,
            request: serde_json::from_value(request).expect("request spec"),
            response: ResponseSpec::default(),
            idempotency: None,
            connection: Some(SealedConnection {
                id: ConnectionId::nil(),
                config,
                credentials: None,
            }),
        }
    }

    fn prepared(request: Value, input: Value) -> Result<PreparedRequest, NodeError> {
        prepare(
            &call(request, "https://api.test/v1", json!({"team": "acme"})),
            &input,
            &Templates::new(),
        )
    }

    #[test]
    fn an_action_renders_path_query_headers_and_body_over_input_and_config() {
        let request = prepared(
            json!({
                "method": "post",
                "path": "/teams/{{ config.team }}/items/{{ input.id }}",
                "query": {"verbose": "{{ input.verbose }}", "tag": "{{ input.tags }}", "fixed": 1},
                "headers": {"X-Trace": "{{ input.trace }}", "X-Team": "{{ config.team }}"},
                "body": {"text": "Hi {{ input.name }}", "count": "{{ input.count }}", "thread": "{{ input.thread }}", "clear": null},
                "timeout": "5s"
            }),
            json!({"id": 7, "verbose": true, "tags": ["a", "b"], "name": "Ada", "count": 3}),
        )
        .expect("prepares");
        assert_eq!(request.method, Method::POST);
        assert_eq!(
            request.url.as_str(),
            "https://api.test/v1/teams/acme/items/7?fixed=1&tag=a&tag=b&verbose=true"
        );
        assert_eq!(header(&request, "x-team"), Some("acme"));
        assert_eq!(
            header(&request, "x-trace"),
            None,
            "a header rendering to null is left out"
        );
        assert_eq!(
            request.body,
            Body::Json(json!({"text": "Hi Ada", "count": 3, "clear": null})),
            "a field rendering to null is left out, a literal null is kept"
        );
        assert_eq!(request.timeout, Some(Duration::from_secs(5)));
    }

    #[test]
    fn the_base_url_is_a_template_over_the_config_only() {
        let shop = call(
            json!({"method": "GET", "path": "/orders"}),
            "https://{{ config.shop }}.shops.test/api",
            json!({"shop": "acme"}),
        );
        let request = prepare(&shop, &json!({}), &Templates::new()).expect("prepares");
        assert_eq!(request.url.as_str(), "https://acme.shops.test/api/orders");

        let sneaky = call(
            json!({"method": "GET", "path": "/"}),
            "https://{{ input.host }}/",
            json!({}),
        );
        let error =
            prepare(&sneaky, &json!({"host": "evil.test"}), &Templates::new()).expect_err("no");
        assert_eq!(error.class, ErrorClass::Permanent);
        assert!(error.message.starts_with("base_url:"), "{}", error.message);
    }

    #[test]
    fn form_and_raw_bodies() {
        let form = prepared(
            json!({"method": "POST", "path": "/f", "body_type": "form",
                   "body": {"a": "{{ input.a }}", "n": 2, "skip": "{{ input.none }}"}}),
            json!({"a": "x y"}),
        )
        .expect("form");
        assert_eq!(
            form.body,
            Body::Form(vec![("a".into(), "x y".into()), ("n".into(), "2".into())])
        );
        let raw = prepared(
            json!({"method": "POST", "path": "/r", "body_type": "raw", "body": "line {{ input.a }}"}),
            json!({"a": 1}),
        )
        .expect("raw");
        assert_eq!(raw.body, Body::Raw("line 1".into()));
        let error = prepared(
            json!({"method": "POST", "path": "/f", "body_type": "form", "body": "{{ input.list }}"}),
            json!({"list": [1]}),
        )
        .expect_err("a form body must be an object");
        assert!(
            error.message.contains("request.body must be an object"),
            "{}",
            error.message
        );
    }

    #[test]
    fn errors_are_permanent_and_name_the_field() {
        let cases = [
            (
                json!({"method": "FETCH", "path": "/"}),
                json!({}),
                "request.method: `FETCH` is not an HTTP method",
            ),
            (
                json!({"method": "GET", "path": "/{{ input.missing.deeper }}"}),
                json!({}),
                "request.path:",
            ),
            (
                json!({"method": "GET", "path": "/", "headers": {"X-A": "{{ input.a }}"}}),
                json!({"a": "line\nbreak"}),
                "request.headers.X-A:",
            ),
            (
                json!({"method": "GET", "path": "/", "query": {"q": "{{ 1 + }}"}}),
                json!({}),
                "request.query.q:",
            ),
            (
                json!({"method": "GET", "path": "/", "timeout": "soon"}),
                json!({}),
                "request.timeout `soon`",
            ),
        ];
        for (request, input, expected) in cases {
            let error = prepared(request, input).expect_err("fails");
            assert_eq!(error.class, ErrorClass::Permanent);
            assert!(
                error.message.contains(expected),
                "`{}` does not contain `{expected}`",
                error.message
            );
        }
        let bad_base = call(
            json!({"method": "GET", "path": "/"}),
            "not a url",
            json!({}),
        );
        let error = prepare(&bad_base, &json!({}), &Templates::new()).expect_err("bad base");
        assert!(
            error
                .message
                .starts_with("base_url `not a url` is not a URL"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_path_cannot_leave_the_base_url() {
        for path in ["/../admin", "/%2e%2e/admin", "/../v12/x", "/./../v1x"] {
            let error = prepared(json!({"method": "GET", "path": path}), json!({}))
                .expect_err("outside the base URL");
            assert_eq!(
                error.message,
                format!("request.path `{path}` leads outside the base URL https://api.test"),
            );
        }
        for (path, url) in [
            ("", "https://api.test/v1"),
            ("/", "https://api.test/v1/"),
            ("/items/../x", "https://api.test/v1/x"),
            ("@evil.test/x", "https://api.test/v1/@evil.test/x"),
        ] {
            let request = prepared(json!({"method": "GET", "path": path}), json!({}))
                .expect("under the base URL");
            assert_eq!(request.url.as_str(), url, "{path}");
        }
    }

    #[test]
    fn a_value_in_the_path_is_one_segment_whatever_it_holds() {
        for (value, url) in [
            ("x?admin=1", "https://api.test/v1/items/x%3Fadmin%3D1"),
            ("../jump", "https://api.test/v1/items/..%2Fjump"),
            ("@evil.test", "https://api.test/v1/items/%40evil.test"),
            ("%2e%2e", "https://api.test/v1/items/%252e%252e"),
            ("a#b", "https://api.test/v1/items/a%23b"),
        ] {
            let request = prepared(
                json!({"method": "GET", "path": "/items/{{ input.id }}"}),
                json!({"id": value}),
            )
            .expect("one segment");
            assert_eq!(request.url.as_str(), url, "{value}");
            assert_eq!(request.url.query(), None, "{value}");
        }
        for value in [".", ".."] {
            let error = prepared(
                json!({"method": "GET", "path": "/items/{{ input.id }}/delete"}),
                json!({"id": value}),
            )
            .expect_err("a dot segment");
            assert_eq!(error.class, ErrorClass::Permanent);
            assert!(
                error.message.starts_with(&format!(
                    "request.path: {{{{ input.id }}}} renders to a `{value}` segment"
                )),
                "{}",
                error.message
            );
        }
        let file = prepared(
            json!({"method": "GET", "path": "/files/{{ input.file | segments }}"}),
            json!({"file": "docs/a b.md"}),
        )
        .expect("several segments");
        assert_eq!(file.url.as_str(), "https://api.test/v1/files/docs/a%20b.md");
        let error = prepared(
            json!({"method": "GET", "path": "/files/{{ input.file | segments }}"}),
            json!({"file": "docs/../../admin"}),
        )
        .expect_err("a dot segment");
        assert!(
            error.message.starts_with("request.path: "),
            "{}",
            error.message
        );
    }

    #[test]
    fn query_names_and_values_are_encoded_and_header_values_cannot_break_lines() {
        let request = prepared(
            json!({"method": "GET", "path": "/q",
                   "query": {"a&b=c": "{{ input.v }}", "plain": "x y"}}),
            json!({"v": "1&admin=true#f+g\nh"}),
        )
        .expect("prepares");
        assert_eq!(
            request.url.query(),
            Some("a%26b%3Dc=1%26admin%3Dtrue%23f%2Bg%0Ah&plain=x+y")
        );
        let pairs: Vec<(String, String)> = request.url.query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            [
                ("a&b=c".to_owned(), "1&admin=true#f+g\nh".to_owned()),
                ("plain".to_owned(), "x y".to_owned())
            ]
        );
        for value in ["a\r\nX-Admin: 1", "a\nb", "a\rb", "nul\u{0}"] {
            let error = prepared(
                json!({"method": "GET", "path": "/", "headers": {"X-Trace": "{{ input.v }}"}}),
                json!({ "v": value }),
            )
            .expect_err("not a header value");
            assert_eq!(error.class, ErrorClass::Permanent);
            assert_eq!(
                error.message,
                "request.headers.X-Trace: the value is not a valid header value (control characters or line breaks)",
                "{value}"
            );
        }
        let error = prepare_http(&json!({"url": "https://x.test/", "headers": {"X-A": "a\r\nb"}}))
            .expect_err("not a header value");
        assert!(
            error.message.starts_with("input.headers.X-A: "),
            "{}",
            error.message
        );
    }

    #[test]
    fn the_http_connector_input_becomes_the_same_request() {
        let request = prepare_http(&json!({
            "method": "put", "url": "https://x.test/a?keep=1",
            "headers": {"X-A": "1", "X-Null": null}, "query": {"b": 2, "c": null},
            "body": {"k": "v"}, "timeout": 1500
        }))
        .expect("prepares");
        assert_eq!(request.method, Method::PUT);
        assert_eq!(request.url.as_str(), "https://x.test/a?keep=1&b=2");
        assert_eq!(header(&request, "x-a"), Some("1"));
        assert!(request.headers.get("x-null").is_none());
        assert_eq!(request.body, Body::Json(json!({"k": "v"})));
        assert_eq!(request.timeout, Some(Duration::from_millis(1500)));

        for (input, expected) in [
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
            (
                json!({"url": "http://x.test/", "timeout": "soon"}),
                "input.timeout",
            ),
        ] {
            let error = prepare_http(&input).expect_err("invalid input fails");
            assert_eq!(error.class, ErrorClass::Permanent);
            assert!(
                error.message.contains(expected),
                "{} does not mention {expected}",
                error.message
            );
        }
    }

    #[test]
    fn idempotency_keys_are_stable_per_node_run_and_distinct_across_them() {
        let run = RunId::generate();
        let key = idempotency_key(run, "charge", None);
        assert_eq!(key, idempotency_key(run, "charge", None));
        assert!(key.starts_with("weft-") && key.len() == 37, "{key}");
        let others = [
            idempotency_key(RunId::generate(), "charge", None),
            idempotency_key(run, "refund", None),
            idempotency_key(run, "charge", Some(0)),
            idempotency_key(run, "charge", Some(1)),
        ];
        for other in &others {
            assert_ne!(&key, other);
        }
        assert_ne!(others[2], others[3]);
    }
}
