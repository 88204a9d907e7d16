//! What the connection endpoints take and answer, as the OpenAPI document names them.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use weft_domain::ids::ConnectionId;

use crate::audit::ActorView;
use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    /// Usable.
    Active,
    /// An OAuth2 authorization-code connection waiting for its callback.
    Pending,
    /// Its last test failed, or a token refresh was refused: see `last_error`.
    Error,
}

impl ConnectionStatus {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Pending => "pending",
            Self::Error => "error",
        }
    }
}

impl FromStr for ConnectionStatus {
    type Err = ApiError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [Self::Active, Self::Pending, Self::Error]
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| {
                ApiError::Internal(
                    format!("unknown connection status `{text}` in the database").into(),
                )
            })
    }
}

/// A connection as the API shows it: never its credentials.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Connection)]
pub struct ConnectionView {
    pub id: ConnectionId,
    pub connector: String,
    pub name: String,
    /// The connector's auth type; null if the connector was deleted.
    pub auth_type: Option<String>,
    #[schema(value_type = Object)]
    pub config: Value,
    /// The names of the credential fields that are set (given through the API, or the
    /// tokens of the OAuth callback). Their values are never shown.
    pub credentials_set: Vec<String>,
    /// `{requests, per}`: this connection's own fleet-wide limit, if any.
    #[schema(value_type = Option<Object>)]
    pub rate_limit: Option<Value>,
    pub status: ConnectionStatus,
    pub last_error: Option<String>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Who created it; null for connections older than people and keys of their own.
    pub created_by: Option<ActorView>,
    /// Who changed it last (a patch, or the OAuth flow that authorized it).
    pub updated_by: Option<ActorView>,
}

/// Body of `POST /api/v1/connections`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConnection {
    /// The connector's key.
    pub connector: String,
    /// 1 to 200 characters.
    pub name: String,
    /// Checked against the connector's `connection_schema`; `base_url` overrides the
    /// manifest's.
    #[serde(default = "crate::extract::empty_object")]
    #[schema(value_type = Object)]
    pub config: Value,
    /// By auth type: `api_key` → `api_key`; `bearer` → `token`; `basic` → `username`,
    /// `password`; `oauth2` → `client_id`, `client_secret` (optionally `access_token`,
    /// `refresh_token`, `expires_at`). Stored encrypted, never shown.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub credentials: Map<String, Value>,
    /// `{"requests": n, "per": "1s"}`: a fleet-wide limit for this connection, replacing
    /// the connector's.
    #[schema(value_type = Option<Object>)]
    pub rate_limit: Option<Value>,
}

/// Query of `GET /api/v1/connections`.
// `utoipa::IntoParams` spelled out: `params(…)` expands to it, and an import would make
// that an "unnecessary qualification".
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only the connections of this connector.
    pub connector: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Body of `PATCH /api/v1/connections/{id}`: only the fields given change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionPatch {
    pub name: Option<String>,
    /// Replaces the config.
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    /// Merged into the stored credentials: a field given replaces its value, `null`
    /// removes an optional one (`refresh_token`, …).
    #[schema(value_type = Option<Object>)]
    pub credentials: Option<Map<String, Value>>,
    /// Replaces the connection's rate limit; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    pub rate_limit: Option<Value>,
}

/// Tells a field given as `null` (`Some(Null)`) from a field left out (`None`).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// What a connection test found.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    /// The connection's status now: `active` if the test request succeeded, else `error`.
    pub status: ConnectionStatus,
    /// Why it failed; null when it succeeded.
    pub error: Option<String>,
}
