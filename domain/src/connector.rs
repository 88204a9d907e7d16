//! The declarative HTTP engine's pure half (architecture §6): every connector action, and the
//! built-in `http` connector's free-form request, becomes one [`PreparedRequest`]; the
//! connection's [`Credentials`] are put in by [`authorize`]; the answer becomes the
//! action's output through [`interpret`]. The worker does the sending.
//!
//! Templates of a manifest see `input` (the node's rendered input) and `config` (the
//! connection's config; `base_url` sees only `config`). Credentials are never in their
//! scope: only the auth type puts them into a request, so no template can leak them.

pub mod path;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use http::Method;
use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use serde_json_path::JsonPath;
use sha2::{Digest, Sha256};
use url::Url;
use zeroize::Zeroizing;

use crate::crypto::{CryptoError, KeyRing};
use crate::ids::{ConnectionId, RunId, WorkspaceId};
use crate::limits::{MAX_SELECTED_BYTES, MAX_SELECTED_NODES};
use crate::manifest::{Auth, BodyType, KeyLocation, ResponseSpec};
use crate::messages::{ActionCall, ErrorClass, NodeError, connection_aad, truncate_body};
use crate::oauth::TokenSet;
use crate::template::{self, Templates, is_template};
use path::PathTemplate;

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

fn permanent(message: impl Into<String>) -> NodeError {
    NodeError::new(ErrorClass::Permanent, message)
}

/// Header, query and form values: strings as they are, anything else as JSON.
fn text(value: &Value) -> String {
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

/// A connection's credential fields, opened inside a worker for one request (or inside the
/// gateway to add OAuth tokens), zeroized when dropped. Stored sealed as a JSON object of
/// strings; `expires_at` is RFC 3339.
#[derive(Clone, Default)]
pub struct Credentials {
    fields: BTreeMap<String, SecretString>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("fields", &self.fields.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    #[error("credentials do not decrypt with the key ring: {0}")]
    Crypto(#[from] CryptoError),
    #[error("credentials are not a JSON object of text fields")]
    Malformed,
}

/// One credential field as stored: text, or a number written as text.
struct Field(SecretString);

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(Field(SecretString::from(v)))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Field, E> {
                Ok(Field(SecretString::from(v)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Field, E> {
                Ok(Field(SecretString::from(v.to_string())))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Field, E> {
                Ok(Field(SecretString::from(v.to_string())))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Fields that are not secret and are never redacted from outputs.
const PUBLIC_FIELDS: [&str; 3] = ["client_id", "username", "expires_at"];
/// Shorter values are not worth redacting: they would mangle unrelated text.
const MIN_REDACTED_LEN: usize = 4;

impl Credentials {
    /// Parses the plaintext JSON object of credential fields.
    pub fn parse(plaintext: &[u8]) -> Result<Self, CredentialsError> {
        let fields: BTreeMap<String, Field> =
            serde_json::from_slice(plaintext).map_err(|_| CredentialsError::Malformed)?;
        Ok(Self {
            fields: fields.into_iter().map(|(k, Field(v))| (k, v)).collect(),
        })
    }

    /// Opens a connection's sealed credentials; the AAD binds them to the connection.
    pub fn open(
        ring: &KeyRing,
        sealed: &str,
        workspace_id: WorkspaceId,
        connection_id: ConnectionId,
    ) -> Result<Self, CredentialsError> {
        let plaintext =
            Zeroizing::new(ring.decrypt(sealed, &connection_aad(workspace_id, connection_id))?);
        Self::parse(&plaintext)
    }

    /// Seals the credentials for one connection under the newest key.
    pub fn seal(
        &self,
        ring: &KeyRing,
        workspace_id: WorkspaceId,
        connection_id: ConnectionId,
    ) -> String {
        let exposed: BTreeMap<&str, &str> = self
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose_secret()))
            .collect();
        let size: usize = exposed.iter().map(|(k, v)| k.len() + v.len() * 6 + 8).sum();
        let mut plaintext = Zeroizing::new(Vec::with_capacity(size + 2));
        serde_json::to_writer(&mut *plaintext, &exposed)
            .expect("a map of strings serializes infallibly");
        ring.encrypt(&plaintext, &connection_aad(workspace_id, connection_id))
    }

    pub fn get(&self, field: &str) -> Option<&SecretString> {
        self.fields.get(field)
    }

    pub fn set(&mut self, field: &str, value: SecretString) {
        self.fields.insert(field.to_owned(), value);
    }

    pub fn remove(&mut self, field: &str) {
        self.fields.remove(field);
    }

    /// When the OAuth access token expires, if that is known.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        let text = self.get("expires_at")?.expose_secret();
        if let Ok(at) = DateTime::parse_from_rfc3339(text) {
            return Some(at.with_timezone(&Utc));
        }
        DateTime::from_timestamp(text.parse().ok()?, 0)
    }

    /// Stores freshly obtained OAuth tokens. A provider that does not rotate refresh
    /// tokens answers without one: the one held stays.
    pub fn set_tokens(&mut self, tokens: &TokenSet) {
        self.set("access_token", tokens.access_token.clone());
        if let Some(refresh) = &tokens.refresh_token {
            self.set("refresh_token", refresh.clone());
        }
        match tokens.expires_at {
            Some(at) => self.set("expires_at", SecretString::from(at.to_rfc3339())),
            None => self.remove("expires_at"),
        }
    }

    /// The secret values, and the forms a request carries them in, so they can be cut
    /// out of anything an upstream echoes back.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets: Vec<String> = self
            .fields
            .iter()
            .filter(|(name, _)| !PUBLIC_FIELDS.contains(&name.as_str()))
            .map(|(_, value)| value.expose_secret().to_owned())
            .collect();
        if let (Some(user), Some(password)) = (self.get("username"), self.get("password")) {
            secrets.push(basic(user, password));
        }
        secrets.retain(|secret| secret.len() >= MIN_REDACTED_LEN);
        // Longest first, so a secret containing another is cut whole.
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        secrets
    }

    fn require(&self, field: &str) -> Result<&str, NodeError> {
        self.get(field)
            .map(ExposeSecret::expose_secret)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| {
                permanent(format!(
                    "the connection's credentials have no `{field}`: update the connection"
                ))
            })
    }
}

fn basic(user: &SecretString, password: &SecretString) -> String {
    STANDARD.encode(format!(
        "{}:{}",
        user.expose_secret(),
        password.expose_secret()
    ))
}

/// A credential as a header value, never echoed: a line break in it would otherwise let
/// a stored credential add headers of its own.
fn secret_header(name: &HeaderName, value: &str) -> Result<HeaderValue, NodeError> {
    let mut header = HeaderValue::from_str(value).map_err(|_| {
        permanent(format!(
            "a credential of the connection is not a valid value for the `{name}` header (line breaks or control characters): update the connection"
        ))
    })?;
    header.set_sensitive(true);
    Ok(header)
}

/// Puts the credentials into the request as the auth type says. For `oauth2` the access
/// token must be there already (obtained or refreshed by the caller).
pub fn authorize(
    request: &mut PreparedRequest,
    auth: &Auth,
    credentials: &Credentials,
) -> Result<(), NodeError> {
    if *auth != Auth::None {
        request.carrying = Carrying::Credentials;
    }
    match auth {
        Auth::None => {}
        Auth::ApiKey {
            location,
            name,
            prefix,
        } => {
            let key = credentials.require("api_key")?;
            match location {
                KeyLocation::Header => {
                    let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                        permanent(format!("auth.name: `{name}` is not a header name"))
                    })?;
                    let value = format!("{}{key}", prefix.as_deref().unwrap_or(""));
                    let value = secret_header(&header, &value)?;
                    request.headers.insert(header, value);
                }
                KeyLocation::Query => {
                    request.url.query_pairs_mut().append_pair(name, key);
                }
            }
        }
        Auth::Bearer => {
            let token = credentials.require("token")?;
            request.headers.insert(
                AUTHORIZATION,
                secret_header(&AUTHORIZATION, &format!("Bearer {token}"))?,
            );
        }
        Auth::Basic => {
            let user = credentials.require("username")?;
            let password = credentials.require("password")?;
            let encoded = STANDARD.encode(format!("{user}:{password}"));
            request.headers.insert(
                AUTHORIZATION,
                secret_header(&AUTHORIZATION, &format!("Basic {encoded}"))?,
            );
        }
        Auth::Oauth2(_) => {
            let token = credentials.require("access_token")?;
            request.headers.insert(
                AUTHORIZATION,
                secret_header(&AUTHORIZATION, &format!("Bearer {token}"))?,
            );
        }
    }
    Ok(())
}

/// Replaces every occurrence of the secrets in the strings of `value` (keys included).
pub fn redact(value: &mut Value, secrets: &[String]) {
    if secrets.is_empty() {
        return;
    }
    match value {
        Value::String(text) => {
            if let Some(clean) = redact_text(text, secrets) {
                *text = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| redact(item, secrets)),
        Value::Object(fields) => {
            let taken = std::mem::take(fields);
            *fields = taken
                .into_iter()
                .map(|(key, mut item)| {
                    redact(&mut item, secrets);
                    (redact_text(&key, secrets).unwrap_or(key), item)
                })
                .collect();
        }
        _ => {}
    }
}

/// The text with the secrets replaced, or `None` when it holds none.
pub fn redact_text(text: &str, secrets: &[String]) -> Option<String> {
    if !secrets.iter().any(|secret| text.contains(secret.as_str())) {
        return None;
    }
    let mut clean = text.to_owned();
    for secret in secrets {
        clean = clean.replace(secret.as_str(), "[redacted]");
    }
    Some(clean)
}

/// The value of a JSONPath in `response`: a singular path (`$.body.ts`) gives one value
/// or null, any other (`$.body.items[*].id`) the list of what it selects. Bounded like
/// one path of a mapping (see [`Selection`]).
pub fn select(path: &str, response: &Value) -> Result<Value, String> {
    Selection::default().select(path, response)
}

/// What the JSONPaths of one mapping may still select. A path like `$..*` selects every
/// node of a response, each with all that is under it: copying them would take the
/// response's size times its depth. So what a mapping's paths select is counted before
/// any of it is copied, and stops as soon as it passes [`MAX_SELECTED_NODES`] nodes or
/// [`MAX_SELECTED_BYTES`] bytes of JSON text in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    nodes_left: usize,
    bytes_left: usize,
}

impl Default for Selection {
    fn default() -> Self {
        Self {
            nodes_left: MAX_SELECTED_NODES,
            bytes_left: MAX_SELECTED_BYTES,
        }
    }
}

impl Selection {
    /// [`select`], counted with what the mapping's other paths selected.
    pub fn select(&mut self, path: &str, response: &Value) -> Result<Value, String> {
        let parsed =
            JsonPath::parse(path).map_err(|e| format!("`{path}` is not a JSONPath: {e}"))?;
        let nodes = parsed.query(response);
        if is_singular(path) {
            let first = nodes.first();
            self.take(&path, first.as_slice())?;
            Ok(first.map_or(Value::Null, Value::clone))
        } else {
            let all = nodes.all();
            self.take(&path, &all)?;
            Ok(Value::Array(all.into_iter().cloned().collect()))
        }
    }

    /// The nodes `path` selects in `value`, once counted, none of them copied yet: for a
    /// mapping that copies them its own way (a node's `outputs`).
    pub fn nodes<'v>(
        &mut self,
        path: &JsonPath,
        value: &'v Value,
    ) -> Result<Vec<&'v Value>, String> {
        let all = path.query(value).all();
        self.take(path, &all)?;
        Ok(all)
    }

    /// Counts `nodes`, what `path` selected, against what is left.
    fn take(&mut self, path: &dyn fmt::Display, nodes: &[&Value]) -> Result<(), String> {
        let Some(nodes_left) = self.nodes_left.checked_sub(nodes.len()) else {
            let before = MAX_SELECTED_NODES - self.nodes_left;
            let others = match before {
                0 => String::new(),
                _ => format!(", {} with the mapping's other paths", before + nodes.len()),
            };
            return Err(format!(
                "`{path}` selects {} nodes{others}, over the limit of {MAX_SELECTED_NODES} for one mapping; select fewer (a `..` or `*` over a large response selects all of it)",
                nodes.len()
            ));
        };
        let before = MAX_SELECTED_BYTES - self.bytes_left;
        for node in nodes {
            let mut measure = JsonSize {
                bytes: 0,
                cap: self.bytes_left,
            };
            if serde_json::to_writer(&mut measure, node).is_err() {
                let others = match before {
                    0 => String::new(),
                    _ => format!(" with the {before} bytes of the mapping's other paths"),
                };
                return Err(format!(
                    "what `{path}` selects passes the limit of {MAX_SELECTED_BYTES} bytes of JSON for one mapping{others}; select less"
                ));
            }
            self.bytes_left -= measure.bytes;
        }
        self.nodes_left = nodes_left;
        Ok(())
    }
}

/// Counts the bytes of JSON text written to it, failing once they pass `cap`, so that a
/// node too large is not serialized to its end.
struct JsonSize {
    bytes: usize,
    cap: usize,
}

impl std::io::Write for JsonSize {
    fn write(&mut self, text: &[u8]) -> std::io::Result<usize> {
        self.bytes = self.bytes.saturating_add(text.len());
        if self.bytes > self.cap {
            return Err(std::io::Error::other("over the limit"));
        }
        Ok(text.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether a JSONPath selects at most one node (RFC 9535 §2.3.5.1's singular query):
/// only names and indexes, no wildcard, slice, union, filter or descendant segment.
fn is_singular(path: &str) -> bool {
    let mut chars = path.chars().peekable();
    let mut previous = '\0';
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                // Skip a quoted name, escapes included.
                while let Some(inner) = chars.next() {
                    if inner == '\\' {
                        chars.next();
                    } else if inner == c {
                        break;
                    }
                }
            }
            '*' | '?' | ':' | ',' => return false,
            '.' if previous == '.' => return false,
            _ => {}
        }
        previous = c;
    }
    true
}

/// The provider's error message in a response, by the action's `error` JSONPath.
pub fn error_message(spec: &ResponseSpec, response: &Value) -> Option<String> {
    let path = spec.error.as_deref()?;
    match select(path, response).ok()? {
        Value::Null => None,
        Value::String(message) if message.is_empty() => None,
        Value::String(message) => Some(message),
        other => Some(other.to_string()),
    }
}

/// Turns an upstream answer `{status, headers, body}` (already classified as not an HTTP
/// failure) into the action's output, or a permanent error when `success_if` says the
/// call failed (Slack answers 200 with `"ok": false`).
pub fn interpret(
    spec: &ResponseSpec,
    response: Value,
    templates: &Templates,
) -> Result<Value, NodeError> {
    if let Some(condition) = &spec.success_if {
        let scope = template::scope(&json!({ "response": response }));
        let verdict = templates.eval_bool(condition, &scope);
        if verdict != Ok(true) {
            let message = match (error_message(spec, &response), verdict) {
                (Some(message), _) => message,
                (None, Err(e)) => {
                    format!("the response does not fit response.success_if `{condition}`: {e}")
                }
                (None, Ok(_)) => {
                    format!("the response does not satisfy response.success_if `{condition}`")
                }
            };
            return Err(NodeError {
                status: response
                    .get("status")
                    .and_then(Value::as_u64)
                    .and_then(|s| u16::try_from(s).ok()),
                body: response.get("body").map(|body| truncate_body(&text(body))),
                ..permanent(message)
            });
        }
    }
    let Some(mapping) = &spec.output else {
        return Ok(response);
    };
    let mut output = Map::new();
    let mut selection = Selection::default();
    for (field, path) in mapping {
        let value = selection
            .select(path, &response)
            .map_err(|e| permanent(format!("response.output.{field}: {e}")))?;
        output.insert(field.clone(), value);
    }
    Ok(Value::Object(output))
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
    use super::*;
    use crate::manifest::{Grant, OAuth2};
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

    fn header<'a>(request: &'a PreparedRequest, name: &str) -> Option<&'a str> {
        request.headers.get(name).and_then(|v| v.to_str().ok())
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

    fn credentials(fields: Value) -> Credentials {
        Credentials::parse(fields.to_string().as_bytes()).expect("credentials")
    }

    fn authorized(auth: Auth, fields: Value) -> Result<PreparedRequest, NodeError> {
        let mut request = prepare_http(&json!({"url": "https://x.test/p?a=1"})).expect("valid");
        authorize(&mut request, &auth, &credentials(fields))?;
        Ok(request)
    }

    #[test]
    fn each_auth_type_puts_its_credential_where_it_belongs() {
        let header_key = authorized(
            Auth::ApiKey {
                location: KeyLocation::Header,
                name: "X-Api-Key".into(),
                prefix: Some("Token ".into()),
            },
            json!({"api_key": "k-123"}),
        )
        .expect("api key");
        assert_eq!(header(&header_key, "x-api-key"), Some("Token k-123"));
        assert!(header_key.headers["x-api-key"].is_sensitive());

        let query_key = authorized(
            Auth::ApiKey {
                location: KeyLocation::Query,
                name: "key".into(),
                prefix: None,
            },
            json!({"api_key": "k 1"}),
        )
        .expect("api key");
        assert_eq!(query_key.url.as_str(), "https://x.test/p?a=1&key=k+1");

        let bearer = authorized(Auth::Bearer, json!({"token": "t-1"})).expect("bearer");
        assert_eq!(header(&bearer, "authorization"), Some("Bearer t-1"));

        let basic =
            authorized(Auth::Basic, json!({"username": "ada", "password": "pw"})).expect("basic");
        assert_eq!(
            header(&basic, "authorization"),
            Some("Basic YWRhOnB3"),
            "base64 of ada:pw"
        );

        let oauth = Auth::Oauth2(OAuth2 {
            grant: Grant::AuthorizationCode,
            authorize_url: None,
            token_url: "https://x.test/token".into(),
            scopes: vec![],
            scope_separator: " ".into(),
            authorize_params: BTreeMap::new(),
        });
        let bearer = authorized(oauth.clone(), json!({"access_token": "at-1"})).expect("oauth");
        assert_eq!(header(&bearer, "authorization"), Some("Bearer at-1"));

        let error = authorized(oauth, json!({"client_id": "c"})).expect_err("no token");
        assert_eq!(error.class, ErrorClass::Permanent);
        assert!(
            error.message.contains("`access_token`"),
            "{}",
            error.message
        );
        let error = authorized(
            Auth::ApiKey {
                location: KeyLocation::Header,
                name: "X-Api-Key".into(),
                prefix: None,
            },
            json!({"api_key": "k-1\r\nX-Admin: yes"}),
        )
        .expect_err("a line break");
        assert_eq!(
            error.message,
            "a credential of the connection is not a valid value for the `x-api-key` header (line breaks or control characters): update the connection"
        );
        let none = authorized(Auth::None, json!({})).expect("none");
        assert!(none.headers.is_empty());
    }

    #[test]
    fn credentials_seal_open_and_stay_bound_to_their_connection() {
        let ring: KeyRing = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
            .parse()
            .expect("ring");
        let (workspace, connection) = (WorkspaceId::generate(), ConnectionId::generate());
        let mut creds = credentials(json!({"client_id": "c", "client_secret": "s3cret-value"}));
        let at = DateTime::parse_from_rfc3339("2030-01-02T03:04:05Z")
            .expect("date")
            .with_timezone(&Utc);
        creds.set_tokens(&TokenSet {
            access_token: SecretString::from("at-xyz1"),
            refresh_token: None,
            expires_at: Some(at),
        });
        let sealed = creds.seal(&ring, workspace, connection);
        assert!(!sealed.contains("s3cret"));
        let opened = Credentials::open(&ring, &sealed, workspace, connection).expect("opens");
        assert_eq!(
            opened.get("access_token").map(ExposeSecret::expose_secret),
            Some("at-xyz1")
        );
        assert_eq!(opened.expires_at(), Some(at));
        assert_eq!(
            Credentials::open(&ring, &sealed, workspace, ConnectionId::generate()).err(),
            Some(CredentialsError::Crypto(CryptoError::Decrypt))
        );
        assert!(!format!("{opened:?}").contains("s3cret"));
        assert_eq!(
            credentials(json!({"expires_at": 1_900_000_000})).expires_at(),
            DateTime::from_timestamp(1_900_000_000, 0)
        );
        assert_eq!(
            Credentials::parse(b"[1]").err(),
            Some(CredentialsError::Malformed)
        );
    }

    #[test]
    fn secrets_are_cut_out_of_echoed_values() {
        let creds =
            credentials(json!({"username": "ada", "password": "hunter22", "api_key": "abc"}));
        let secrets = creds.secrets();
        assert!(secrets.contains(&"hunter22".to_owned()));
        assert!(secrets.contains(&STANDARD.encode("ada:hunter22")));
        assert!(
            !secrets.iter().any(|s| s == "ada" || s == "abc"),
            "public and too-short values stay"
        );
        let mut echoed =
            json!({"auth": "Basic YWRhOmh1bnRlcjIy", "list": ["pw=hunter22"], "hunter22": 1});
        redact(&mut echoed, &secrets);
        assert_eq!(
            echoed,
            json!({"auth": "Basic [redacted]", "list": ["pw=[redacted]"], "[redacted]": 1})
        );
    }

    fn response(status: u16, body: Value) -> Value {
        json!({"status": status, "headers": {"content-type": "application/json"}, "body": body})
    }

    #[test]
    fn success_if_false_fails_permanently_with_the_providers_message() {
        let spec = ResponseSpec {
            success_if: Some("response.body.ok".into()),
            error: Some("$.body.error".into()),
            output: Some(BTreeMap::from([("ts".to_owned(), "$.body.ts".to_owned())])),
        };
        let templates = Templates::new();
        let error = interpret(
            &spec,
            response(200, json!({"ok": false, "error": "channel_not_found"})),
            &templates,
        )
        .expect_err("ok is false");
        assert_eq!(
            (error.class, error.message.as_str(), error.status),
            (ErrorClass::Permanent, "channel_not_found", Some(200))
        );
        let output = interpret(
            &spec,
            response(200, json!({"ok": true, "ts": "1.2"})),
            &templates,
        )
        .expect("ok");
        assert_eq!(output, json!({"ts": "1.2"}));

        let no_error_path = ResponseSpec {
            error: None,
            ..spec.clone()
        };
        let error = interpret(&no_error_path, response(200, json!("text")), &templates)
            .expect_err("no ok field");
        assert!(
            error.message.contains("response.success_if"),
            "{}",
            error.message
        );
    }

    #[test]
    fn output_mapping_uses_jsonpath_and_defaults_to_the_whole_response() {
        let templates = Templates::new();
        let whole = response(201, json!({"id": 1}));
        assert_eq!(
            interpret(&ResponseSpec::default(), whole.clone(), &templates),
            Ok(whole)
        );
        let spec = ResponseSpec {
            output: Some(BTreeMap::from([
                ("ids".to_owned(), "$.body.items[*].id".to_owned()),
                ("first".to_owned(), "$.body.items[0].id".to_owned()),
                ("odd".to_owned(), "$.body['a,b']".to_owned()),
                ("missing".to_owned(), "$.body.nope".to_owned()),
                ("status".to_owned(), "$.status".to_owned()),
            ])),
            ..ResponseSpec::default()
        };
        let output = interpret(
            &spec,
            response(200, json!({"items": [{"id": 1}], "a,b": "x"})),
            &templates,
        )
        .expect("maps");
        assert_eq!(
            output,
            json!({"ids": [1], "first": 1, "odd": "x", "missing": null, "status": 200})
        );
        let bad = ResponseSpec {
            output: Some(BTreeMap::from([("x".to_owned(), "body".to_owned())])),
            ..ResponseSpec::default()
        };
        let error = interpret(&bad, response(200, json!({})), &templates).expect_err("bad path");
        assert!(
            error.message.starts_with("response.output.x:"),
            "{}",
            error.message
        );
    }

    fn mapping(fields: &[(&str, &str)]) -> ResponseSpec {
        ResponseSpec {
            output: Some(
                fields
                    .iter()
                    .map(|(field, path)| ((*field).to_owned(), (*path).to_owned()))
                    .collect(),
            ),
            ..ResponseSpec::default()
        }
    }

    /// Objects nested `depth` deep, each holding `text` besides the next one.
    fn nested(depth: usize, text: &str) -> Value {
        (0..depth).fold(json!(text), |inner, _| json!({"text": text, "next": inner}))
    }

    #[test]
    fn a_path_selecting_everything_of_a_large_deep_response_is_refused_naming_the_limit() {
        let templates = Templates::new();
        // 64 levels of 64 KiB: `$..*` would copy each level with all under it, ~130 MiB.
        let deep = response(200, nested(64, &"x".repeat(64 * 1024)));
        let error = interpret(&mapping(&[("all", "$..*")]), deep.clone(), &templates)
            .expect_err("too large");
        assert_eq!(error.class, ErrorClass::Permanent);
        assert_eq!(
            error.message,
            "response.output.all: what `$..*` selects passes the limit of 4194304 bytes of JSON for one mapping; select less"
        );
        // A wide one is refused on its count of nodes, before any is measured.
        let wide = response(200, json!({"items": vec![json!({"id": 1}); 6_000]}));
        let error =
            interpret(&mapping(&[("all", "$..*")]), wide, &templates).expect_err("too many");
        assert!(
            error.message.starts_with(
                "response.output.all: `$..*` selects 12005 nodes, over the limit of 10000 for one mapping"
            ),
            "{}",
            error.message
        );
        // What a real mapping picks out of the same response is fine.
        let picked = interpret(
            &mapping(&[("top", "$.body.text"), ("ids", "$.body.next.next..text")]),
            deep,
            &templates,
        )
        .expect("a few nodes");
        assert_eq!(picked["top"].as_str().map(str::len), Some(64 * 1024));
        assert_eq!(picked["ids"].as_array().map(Vec::len), Some(62));
    }

    #[test]
    fn the_mapping_limits_are_inclusive_and_count_all_of_its_paths() {
        let templates = Templates::new();
        let items = |count: usize| response(200, json!({"items": vec![0; count]}));
        let all_items = mapping(&[("items", "$.body.items[*]")]);
        let output = interpret(&all_items, items(MAX_SELECTED_NODES), &templates)
            .expect("exactly at the limit");
        assert_eq!(
            output["items"].as_array().map(Vec::len),
            Some(MAX_SELECTED_NODES)
        );
        let error =
            interpret(&all_items, items(MAX_SELECTED_NODES + 1), &templates).expect_err("one over");
        assert!(
            error.message.starts_with(
                "response.output.items: `$.body.items[*]` selects 10001 nodes, over the limit of 10000"
            ),
            "{}",
            error.message
        );
        // A text whose JSON (its quotes included) is exactly the byte limit, then one more.
        let text = |length: usize| response(200, json!({"s": "x".repeat(length)}));
        let one_text = mapping(&[("s", "$.body.s")]);
        assert!(interpret(&one_text, text(MAX_SELECTED_BYTES - 2), &templates).is_ok());
        let error = interpret(&one_text, text(MAX_SELECTED_BYTES - 1), &templates)
            .expect_err("one byte over");
        assert_eq!(
            error.message,
            "response.output.s: what `$.body.s` selects passes the limit of 4194304 bytes of JSON for one mapping; select less"
        );
        // The limits hold for the mapping in all, not for each of its paths.
        let twice = mapping(&[("a", "$.body.s"), ("b", "$.body.s")]);
        let error = interpret(&twice, text(MAX_SELECTED_BYTES / 2), &templates)
            .expect_err("twice the half");
        assert!(
            error.message.starts_with("response.output.b: what `$.body.s` selects passes the limit of 4194304 bytes of JSON for one mapping with the 2097154 bytes of the mapping's other paths"),
            "{}",
            error.message
        );
        let error = interpret(
            &mapping(&[("a", "$.body.items[*]"), ("b", "$.body.items[*]")]),
            items(MAX_SELECTED_NODES / 2 + 1),
            &templates,
        )
        .expect_err("twice over half the nodes");
        assert!(
            error.message.starts_with("response.output.b: `$.body.items[*]` selects 5001 nodes, 10002 with the mapping's other paths, over the limit of 10000"),
            "{}",
            error.message
        );
        // Paths parsed ahead are counted the same way.
        let parsed = JsonPath::parse("$.items[*]").expect("a path");
        let mut selection = Selection::default();
        let value = json!({"items": vec![0; MAX_SELECTED_NODES - 1]});
        assert_eq!(
            selection.nodes(&parsed, &value).map(|nodes| nodes.len()),
            Ok(MAX_SELECTED_NODES - 1)
        );
        let error = selection.nodes(&parsed, &value).expect_err("twice");
        assert!(
            error.starts_with(
                "`$.items[*]` selects 9999 nodes, 19998 with the mapping's other paths"
            ),
            "{error}"
        );
        // `select` alone is bounded as one path of a mapping.
        assert!(select("$..*", &nested(64, &"x".repeat(64 * 1024))).is_err());
        assert_eq!(select("$.a[*]", &json!({"a": [1, 2]})), Ok(json!([1, 2])));
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
