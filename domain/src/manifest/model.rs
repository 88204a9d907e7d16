//! The typed form of a connector manifest: what [`super::validate`] makes of a document.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The key of the only connector written in code: a free-form HTTP request.
pub const HTTP_CONNECTOR: &str = "http";
/// Its one action.
pub const HTTP_REQUEST_ACTION: &str = "request";

/// A connector manifest, as users write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub key: String,
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where requests go; a template over the connection's `config`. A connection's
    /// `config.base_url` overrides it.
    pub base_url: String,
    #[serde(default)]
    pub auth: Auth,
    /// JSON Schema of a connection's `config`.
    #[serde(default = "any_object", skip_serializing_if = "is_any_object")]
    pub connection_schema: Value,
    /// The request that tells whether a connection works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<RequestSpec>,
    /// Fleet-wide limit for each connection of this connector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    pub actions: Vec<Action>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
}

fn any_object() -> Value {
    serde_json::json!({"type": "object"})
}

fn is_any_object(value: &Value) -> bool {
    *value == any_object()
}

/// How credentials go into a request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    #[default]
    None,
    /// Credential field `api_key`, sent in a header or a query parameter.
    ApiKey {
        #[serde(rename = "in")]
        location: KeyLocation,
        /// Header or query parameter name.
        name: String,
        /// Put before the key in a header, e.g. `"Token "`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
    },
    /// Credential field `token`, sent as `Authorization: Bearer <token>`.
    Bearer,
    /// Credential fields `username` and `password`, sent as HTTP Basic.
    Basic,
    /// Credential fields `client_id` and `client_secret`; the system adds
    /// `access_token`, `refresh_token` and `expires_at`.
    Oauth2(OAuth2),
}

impl Auth {
    /// The credential fields a connection of this auth type must be given.
    pub fn required_credentials(&self) -> &'static [&'static str] {
        match self {
            Self::None => &[],
            Self::ApiKey { .. } => &["api_key"],
            Self::Bearer => &["token"],
            Self::Basic => &["username", "password"],
            Self::Oauth2(_) => &["client_id", "client_secret"],
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ApiKey { .. } => "api_key",
            Self::Bearer => "bearer",
            Self::Basic => "basic",
            Self::Oauth2(_) => "oauth2",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyLocation {
    Header,
    Query,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2 {
    #[serde(default)]
    pub grant: Grant,
    /// Required for the authorization-code grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorize_url: Option<String>,
    pub token_url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// How scopes are joined in the authorize URL (RFC 6749 says a space; some
    /// providers want a comma).
    #[serde(default = "space", skip_serializing_if = "is_space")]
    pub scope_separator: String,
    /// Extra query parameters of the authorize URL.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub authorize_params: BTreeMap<String, String>,
}

fn space() -> String {
    " ".to_owned()
}

fn is_space(value: &str) -> bool {
    value == " "
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    #[default]
    AuthorizationCode,
    ClientCredentials,
}

/// `requests` per `per` (a duration like `"1s"`), held across every worker together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests: u32,
    pub per: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub key: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the node's rendered input, checked before dispatch.
    #[serde(default = "any_object", skip_serializing_if = "is_any_object")]
    pub input_schema: Value,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub output_schema: Value,
    pub request: RequestSpec,
    #[serde(default, skip_serializing_if = "ResponseSpec::is_default")]
    pub response: ResponseSpec,
    /// Sends a key stable for one node run across retries and redeliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<Idempotency>,
}

/// A request as templates over `input` (the node's rendered input) and `config` (the
/// connection's config). Credentials are never in scope: the auth type injects them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    pub method: String,
    /// Appended to the base URL; each placeholder renders to one percent-encoded path
    /// segment, or to several when marked `| segments` (see [`crate::connector::path`]).
    pub path: String,
    /// A value rendering to `null` leaves the parameter out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, Value>,
    /// A value rendering to `null` leaves the header out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Value>,
    /// A template value; in an object, fields rendering to `null` are left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    #[serde(default, skip_serializing_if = "BodyType::is_json")]
    pub body_type: BodyType,
    /// Per-action request timeout, like `"30s"`; the node's own timeout still bounds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyType {
    #[default]
    Json,
    Form,
    Raw,
}

impl BodyType {
    fn is_json(&self) -> bool {
        *self == Self::Json
    }
}

/// How a response becomes the action's output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseSpec {
    /// An expression over `response` (`status`, `headers`, `body`); when it is false the
    /// attempt fails permanently. Without it, any 2xx is a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_if: Option<String>,
    /// JSONPath into `response` giving the error message when `success_if` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Output fields by JSONPath into `response`; without it the output is
    /// `{status, headers, body}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<BTreeMap<String, String>>,
}

impl ResponseSpec {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Idempotency {
    pub header: String,
}

/// Events a connector can start runs from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// The provider pushes events to a webhook trigger with this signature scheme.
    Webhook {
        key: String,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// `github`, `stripe`, `slack` or `hmac-sha256`.
        signature: String,
        /// The provider's event name, as its header or body carries it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event: Option<String>,
    },
    /// A worker polls `request` every `interval`; `items` finds the list in the
    /// response and `id` each item's identity.
    Poll {
        key: String,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        interval: String,
        request: Box<RequestSpec>,
        items: String,
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<Cursor>,
    },
}

impl Trigger {
    pub fn key(&self) -> &str {
        match self {
            Self::Webhook { key, .. } | Self::Poll { key, .. } => key,
        }
    }
}

/// Pagination of a poll: `next` (JSONPath into the response) finds the cursor, sent back
/// as the query parameter `param`; polling the pages stops when it is absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    pub param: String,
    pub next: String,
}

impl Manifest {
    pub fn action(&self, key: &str) -> Option<&Action> {
        self.actions.iter().find(|a| a.key == key)
    }
}
