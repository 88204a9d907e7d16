//! Connections (architecture §6, §7): one account of a connector. Its `config` is not secret and
//! is shown; its credentials go in, are sealed at once under the key ring (the associated
//! data binds them to the workspace and the connection), and never come out: answers say
//! which credential fields are set, never their values.
//!
//! Credentials are opened in the gateway only to change them (a PATCH that merges fields,
//! the OAuth callback that adds tokens); reading a connection never opens them, because
//! the names of the fields are kept beside the ciphertext (`credential_fields`).

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};
use tokio_postgres::Row;
use tokio_postgres::types::Json as Jsonb;
use utoipa::ToSchema;

use weft_domain::connector::Credentials;
use weft_domain::ids::ConnectionId;
use weft_domain::manifest::{self, Action, Auth, Grant, Manifest, RateLimit, ResponseSpec};
use weft_domain::messages::{ActionCall, Outcome};

use crate::auth::Workspace;
use crate::catalog::{self, Connector};
use crate::connection_store::{self, load};
use crate::direct::{self, Call, action_timeout};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::paging::{List, Page};
use crate::state::AppState;

const MAX_NAME_CHARS: usize = 200;
/// Most config problems listed in one answer.
const MAX_CONFIG_PROBLEMS: usize = 20;

/// The credential fields the system adds to an `oauth2` connection; they may also be
/// given, to bring an existing grant along.
const OAUTH2_TOKEN_FIELDS: [&str; 3] = ["access_token", "refresh_token", "expires_at"];

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
    fn as_str(self) -> &'static str {
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
}

/// The columns of a connection as the API shows it; `c` is the `connections` row. The
/// auth type of a workspace connector is read from its current manifest.
macro_rules! connection_columns {
    () => {
        "c.id, c.connector, c.name, c.config, c.credential_fields, c.rate_limit, c.status,
         c.last_error, c.last_used_at, c.created_at, c.updated_at,
         (SELECT COALESCE(v.manifest->'auth'->>'type', 'none')
          FROM connectors k
          JOIN connector_versions v
            ON v.workspace_id = k.workspace_id AND v.key = k.key AND v.version = k.current_version
          WHERE k.workspace_id = c.workspace_id AND k.key = c.connector AND k.deleted_at IS NULL
         ) AS registered_auth"
    };
}

impl ConnectionView {
    fn from_row(row: &Row) -> Result<Self, ApiError> {
        let connector: String = row.try_get("connector")?;
        let auth_type = match manifest::builtin(&connector) {
            Some(builtin) => Some(builtin.auth.kind().to_owned()),
            None => row.try_get("registered_auth")?,
        };
        Ok(Self {
            id: row.try_get("id")?,
            connector,
            name: row.try_get("name")?,
            auth_type,
            config: row.try_get("config")?,
            credentials_set: row.try_get("credential_fields")?,
            rate_limit: row.try_get("rate_limit")?,
            status: row.try_get::<_, &str>("status")?.parse()?,
            last_error: row.try_get("last_error")?,
            last_used_at: row.try_get("last_used_at")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// One problem in a connection's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct FieldProblem {
    /// `name`, `config.base_url`, `credentials.token`, …
    pub field: String,
    pub message: String,
}

fn problem(field: impl Into<String>, message: impl Into<String>) -> FieldProblem {
    FieldProblem {
        field: field.into(),
        message: message.into(),
    }
}

fn invalid_connection(problems: Vec<FieldProblem>) -> ApiError {
    let message = problems
        .iter()
        .map(|p| format!("{}: {}", p.field, p.message))
        .collect::<Vec<_>>()
        .join("; ");
    ApiError::BadRequest {
        code: "invalid_connection",
        message,
        details: json!({ "problems": problems }),
    }
}

fn check_name(name: &str) -> Option<FieldProblem> {
    let chars = name.trim().chars().count();
    (chars == 0 || chars > MAX_NAME_CHARS)
        .then(|| problem("name", format!("must be 1 to {MAX_NAME_CHARS} characters")))
}

/// Checks `config` against the connector's `connection_schema`. The schema is written by
/// users: it never fetches a remote reference, and its patterns run on the linear-time
/// regex engine.
fn check_config(schema: &Value, config: &Value) -> Vec<FieldProblem> {
    if !config.is_object() {
        return vec![problem("config", "must be an object")];
    }
    let options = jsonschema::options()
        .offline()
        .with_pattern_options(jsonschema::PatternOptions::regex());
    let validator = match options.build(schema) {
        Ok(validator) => validator,
        Err(e) => {
            return vec![problem(
                "config",
                format!(
                    "the connector's connection_schema does not compile ({e}); fix the connector"
                ),
            )];
        }
    };
    let mut problems: Vec<FieldProblem> = validator
        .iter_errors(config)
        .take(MAX_CONFIG_PROBLEMS)
        .map(|error| {
            let pointer = error.instance_path().as_str().to_owned();
            let field = pointer
                .split('/')
                .skip(1)
                .fold("config".to_owned(), |path, segment| {
                    format!("{path}.{}", segment.replace("~1", "/").replace("~0", "~"))
                });
            problem(field, error.to_string())
        })
        .collect();
    if let Some(base_url) = config.get("base_url")
        && !base_url.is_string()
    {
        problems.push(problem("config.base_url", "must be a string (a URL)"));
    }
    problems
}

/// A connection's own rate limit: `{"requests": n, "per": "1s"}`.
fn parse_rate_limit(value: &Value) -> Result<RateLimit, FieldProblem> {
    let limit: RateLimit = serde_json::from_value(value.clone()).map_err(|e| {
        problem(
            "rate_limit",
            format!("must be {{\"requests\": <number>, \"per\": \"<duration>\"}}: {e}"),
        )
    })?;
    if limit.requests == 0 {
        return Err(problem("rate_limit.requests", "must be at least 1"));
    }
    match weft_runtime::config::parse_duration(&limit.per) {
        Ok(per) if !per.is_zero() => Ok(limit),
        Ok(_) => Err(problem("rate_limit.per", "must be longer than zero")),
        Err(e) => Err(problem("rate_limit.per", e)),
    }
}

/// The credential fields a connection of `auth` may hold: required, then optional.
fn credential_fields(auth: &Auth) -> (&'static [&'static str], &'static [&'static str]) {
    let optional: &'static [&'static str] = match auth {
        Auth::Oauth2(_) => &OAUTH2_TOKEN_FIELDS,
        _ => &[],
    };
    (auth.required_credentials(), optional)
}

/// Credential changes: a field's new value, or `None` to remove it.
type CredentialChanges = BTreeMap<String, Option<SecretString>>;

/// Checks given credential fields against the auth type. With `patch`, `null` removes an
/// optional field.
fn check_credentials(
    auth: &Auth,
    given: &Map<String, Value>,
    patch: bool,
) -> (CredentialChanges, Vec<FieldProblem>) {
    let (required, optional) = credential_fields(auth);
    let mut changes = CredentialChanges::new();
    let mut problems = Vec::new();
    for (name, value) in given {
        let field = format!("credentials.{name}");
        let is_required = required.contains(&name.as_str());
        if !is_required && !optional.contains(&name.as_str()) {
            let takes: Vec<&str> = required.iter().chain(optional).copied().collect();
            let message = if takes.is_empty() {
                format!("{} auth takes no credentials", auth.kind())
            } else {
                format!(
                    "not a credential of {} auth (it takes: {})",
                    auth.kind(),
                    takes.join(", ")
                )
            };
            problems.push(problem(field, message));
            continue;
        }
        match value {
            Value::Null if patch && !is_required => {
                changes.insert(name.clone(), None);
            }
            Value::Null if patch => problems.push(problem(
                field,
                format!(
                    "required by {} auth: it can be replaced, not removed",
                    auth.kind()
                ),
            )),
            Value::String(text) if text.is_empty() => {
                problems.push(problem(field, "must not be empty"));
            }
            Value::String(text) if name == "expires_at" => {
                if DateTime::parse_from_rfc3339(text).is_err() {
                    problems.push(problem(
                        field,
                        "must be an RFC 3339 timestamp or seconds since 1970",
                    ));
                } else {
                    changes.insert(name.clone(), Some(SecretString::from(text.clone())));
                }
            }
            Value::String(text) => {
                changes.insert(name.clone(), Some(SecretString::from(text.clone())));
            }
            Value::Number(seconds) if name == "expires_at" && seconds.is_i64() => {
                changes.insert(name.clone(), Some(SecretString::from(seconds.to_string())));
            }
            _ => problems.push(problem(field, "must be a string")),
        }
    }
    (changes, problems)
}

/// The required fields missing from `fields`.
fn missing_credentials(auth: &Auth, fields: &BTreeSet<String>) -> Vec<FieldProblem> {
    auth.required_credentials()
        .iter()
        .filter(|name| !fields.contains(**name))
        .map(|name| {
            problem(
                format!("credentials.{name}"),
                format!("required by {} auth", auth.kind()),
            )
        })
        .collect()
}

/// A connection's status once its credentials are set: an authorization-code connection
/// waits for its tokens.
fn status_for(auth: &Auth, fields: &BTreeSet<String>) -> ConnectionStatus {
    match auth {
        Auth::Oauth2(oauth)
            if oauth.grant == Grant::AuthorizationCode && !fields.contains("access_token") =>
        {
            ConnectionStatus::Pending
        }
        _ => ConnectionStatus::Active,
    }
}

/// What a connection of a connector key would be made for.
enum Connectable {
    Manifest(Box<Manifest>),
    /// Neither built in nor registered in this workspace.
    Unknown,
    /// The `http` connector, which takes no connection.
    Http,
}

impl Connectable {
    /// The manifest, or the problem on `connector` that says why there is none.
    fn manifest(self, key: &str) -> Result<Manifest, FieldProblem> {
        match self {
            Self::Manifest(manifest) => Ok(*manifest),
            Self::Unknown => Err(problem(
                "connector",
                format!(
                    "unknown connector `{key}`: it is neither built in nor registered in this workspace"
                ),
            )),
            Self::Http => Err(problem(
                "connector",
                "the http connector takes no connection: put headers and credentials in each request's input",
            )),
        }
    }
}

/// What a connection of `key` in `workspace` is made for.
async fn connectable(
    client: &impl GenericClient,
    workspace: Workspace,
    key: &str,
) -> Result<Connectable, ApiError> {
    Ok(match catalog::resolve(client, workspace.id, key).await? {
        None => Connectable::Unknown,
        Some(Connector::Http) => Connectable::Http,
        Some(connector) => Connectable::Manifest(Box::new(
            connector
                .manifest()
                .cloned()
                .expect("every connector but http has a manifest"),
        )),
    })
}

fn apply(credentials: &mut Credentials, changes: CredentialChanges) {
    for (name, value) in changes {
        match value {
            Some(value) => credentials.set(&name, value),
            None => credentials.remove(&name),
        }
    }
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
    #[serde(default = "empty_object")]
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

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// Create a connection. OAuth2 authorization-code connections start `pending` until
/// their OAuth flow completes.
#[utoipa::path(
    post,
    operation_id = "createConnection",
    path = "/api/v1/connections",
    tag = "connections",
    security(("api_key" = [])),
    request_body = NewConnection,
    responses(
        (status = 201, description = "Connection created", body = ConnectionView),
        (status = 400, description = "Invalid fields (`invalid_connection`, with `details.problems`: `[{field, message}]`) or malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 413, description = "Body over the API body limit", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "JSON of the wrong shape", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiJson(request): ApiJson<NewConnection>,
) -> Result<(StatusCode, Json<ConnectionView>), ApiError> {
    let client = state.pool.get().await?;
    let connectable = connectable(&client, workspace, &request.connector).await?;
    let manifest = match connectable.manifest(&request.connector) {
        Ok(manifest) => manifest,
        Err(problem) => {
            let problems = std::iter::once(problem)
                .chain(check_name(&request.name))
                .collect();
            return Err(invalid_connection(problems));
        }
    };
    let mut problems: Vec<FieldProblem> = check_name(&request.name).into_iter().collect();
    problems.extend(check_config(&manifest.connection_schema, &request.config));
    let rate_limit = match request.rate_limit.as_ref().filter(|v| !v.is_null()) {
        Some(value) => match parse_rate_limit(value) {
            Ok(limit) => Some(limit),
            Err(problem) => {
                problems.push(problem);
                None
            }
        },
        None => None,
    };
    let (changes, credential_problems) =
        check_credentials(&manifest.auth, &request.credentials, false);
    problems.extend(credential_problems);
    let fields: BTreeSet<String> = changes.keys().cloned().collect();
    problems.extend(missing_credentials(&manifest.auth, &fields));
    if !problems.is_empty() {
        return Err(invalid_connection(problems));
    }

    let id = ConnectionId::generate();
    let sealed = (!changes.is_empty()).then(|| {
        let mut credentials = Credentials::default();
        apply(&mut credentials, changes);
        credentials.seal(&state.keys, workspace.id, id)
    });
    let status = status_for(&manifest.auth, &fields);
    let fields: Vec<String> = fields.into_iter().collect();
    client
        .execute(
            "INSERT INTO connections
                 (id, workspace_id, connector, name, config, credentials, credential_fields, rate_limit, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &id,
                &workspace.id,
                &manifest.key,
                &request.name.trim(),
                &request.config,
                &sealed,
                &fields,
                &rate_limit.as_ref().map(Jsonb),
                &status.as_str(),
            ],
        )
        .await?;
    let view = view_of(&client, workspace, id).await?;
    tracing::info!(workspace_id = %workspace.id, connection_id = %id, connector = %manifest.key, "connection created");
    Ok((StatusCode::CREATED, Json(view)))
}

async fn view_of(
    client: &impl GenericClient,
    workspace: Workspace,
    id: ConnectionId,
) -> Result<ConnectionView, ApiError> {
    let statement = client
        .prepare_cached(concat!(
            "SELECT ",
            connection_columns!(),
            " FROM connections c WHERE c.id = $1 AND c.workspace_id = $2"
        ))
        .await?;
    let row = client
        .query_opt(&statement, &[&id, &workspace.id])
        .await?
        .ok_or(ApiError::NotFound("connection"))?;
    ConnectionView::from_row(&row)
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

/// List connections, newest first.
#[utoipa::path(
    get,
    operation_id = "listConnections",
    path = "/api/v1/connections",
    tag = "connections",
    security(("api_key" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of connections", body = List<ConnectionView>),
        (status = 400, description = "Bad `limit` or `cursor`", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<List<ConnectionView>>, ApiError> {
    let page = Page::<ConnectionId>::parse(query.limit.as_deref(), query.cursor.as_deref())?;
    let connector = query.connector.filter(|c| !c.is_empty());
    let client = state.pool.get().await?;
    let statement = client
        .prepare_cached(concat!(
            "SELECT ",
            connection_columns!(),
            " FROM connections c
             WHERE c.workspace_id = $1 AND c.id < $2 AND ($4::text IS NULL OR c.connector = $4)
             ORDER BY c.id DESC LIMIT $3"
        ))
        .await?;
    let before = page.cursor.unwrap_or(ConnectionId::max());
    let rows = client
        .query(
            &statement,
            &[&workspace.id, &before, &page.fetch(), &connector],
        )
        .await?;
    let items = rows
        .iter()
        .map(ConnectionView::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(List::new(items, &page, |connection| connection.id)))
}

/// Read a connection (never its credentials).
#[utoipa::path(
    get,
    operation_id = "getConnection",
    path = "/api/v1/connections/{id}",
    tag = "connections",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Connection id")),
    responses(
        (status = 200, description = "The connection", body = ConnectionView),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such connection in this workspace", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(id): ApiPath<ConnectionId>,
) -> Result<Json<ConnectionView>, ApiError> {
    let client = state.pool.get().await?;
    view_of(&client, workspace, id).await.map(Json)
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

/// Change a connection's name, config, credentials or rate limit.
#[utoipa::path(
    patch,
    operation_id = "updateConnection",
    path = "/api/v1/connections/{id}",
    tag = "connections",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Connection id")),
    request_body = ConnectionPatch,
    responses(
        (status = 200, description = "The connection as it now is. New credentials reset its status (`active`, or `pending` for an OAuth2 authorization-code connection without a token)", body = ConnectionView),
        (status = 400, description = "Invalid fields (`invalid_connection`, with `details.problems`), malformed JSON or id", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such connection in this workspace", body = ErrorBody),
        (status = 409, description = "Its connector no longer exists (`connector_missing`), or its stored credentials no longer decrypt and the patch does not replace them all (`credentials_unreadable`)", body = ErrorBody),
        (status = 413, description = "Body over the API body limit", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "JSON of the wrong shape", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(id): ApiPath<ConnectionId>,
    ApiJson(patch): ApiJson<ConnectionPatch>,
) -> Result<Json<ConnectionView>, ApiError> {
    let mut client = state.pool.get().await?;
    let transaction = client.transaction().await?;
    // Locked: two patches merging credentials must not both start from the same fields.
    let row = transaction
        .query_opt(
            "SELECT connector, name, config, credentials, credential_fields, rate_limit, status, last_error
             FROM connections WHERE id = $1 AND workspace_id = $2 FOR UPDATE",
            &[&id, &workspace.id],
        )
        .await?
        .ok_or(ApiError::NotFound("connection"))?;
    let connector: String = row.try_get("connector")?;
    let mut name: String = row.try_get("name")?;
    let mut config: Value = row.try_get("config")?;
    let mut sealed: Option<String> = row.try_get("credentials")?;
    let mut fields: BTreeSet<String> = row
        .try_get::<_, Vec<String>>("credential_fields")?
        .into_iter()
        .collect();
    let mut rate_limit: Option<Value> = row.try_get("rate_limit")?;
    let mut status: String = row.try_get("status")?;
    let mut last_error: Option<String> = row.try_get("last_error")?;

    let mut problems = Vec::new();
    if let Some(new_name) = &patch.name {
        problems.extend(check_name(new_name));
        name = new_name.trim().to_owned();
    }
    match &patch.rate_limit {
        None => {}
        Some(Value::Null) => rate_limit = None,
        Some(value) => match parse_rate_limit(value) {
            Ok(limit) => rate_limit = Some(json!(limit)),
            Err(problem) => problems.push(problem),
        },
    }
    if patch.config.is_some() || patch.credentials.is_some() {
        let manifest = connectable(&transaction, workspace, &connector)
            .await?
            .manifest(&connector)
            .map_err(|_| ApiError::Conflict {
                code: "connector_missing",
                message: format!(
                    "connector `{connector}` no longer exists: its connections' config and credentials cannot be checked; register it again or delete the connection"
                ),
            })?;
        if let Some(new_config) = patch.config {
            problems.extend(check_config(&manifest.connection_schema, &new_config));
            config = new_config;
        }
        if let Some(given) = &patch.credentials {
            let (changes, credential_problems) = check_credentials(&manifest.auth, given, true);
            problems.extend(credential_problems);
            let mut merged: BTreeSet<String> = fields.clone();
            for (field, value) in &changes {
                if value.is_some() {
                    merged.insert(field.clone());
                } else {
                    merged.remove(field);
                }
            }
            problems.extend(missing_credentials(&manifest.auth, &merged));
            if problems.is_empty() && !changes.is_empty() {
                let mut credentials = open_for_merge(
                    &state,
                    workspace,
                    id,
                    sealed.as_deref(),
                    &manifest,
                    &changes,
                )?;
                apply(&mut credentials, changes);
                sealed =
                    (!merged.is_empty()).then(|| credentials.seal(&state.keys, workspace.id, id));
                status = status_for(&manifest.auth, &merged).as_str().to_owned();
                last_error = None;
                fields = merged;
            }
        }
    }
    if !problems.is_empty() {
        return Err(invalid_connection(problems));
    }
    let fields: Vec<String> = fields.into_iter().collect();
    transaction
        .execute(
            "UPDATE connections SET name = $3, config = $4, credentials = $5, credential_fields = $6,
                 rate_limit = $7, status = $8, last_error = $9, updated_at = now()
             WHERE id = $1 AND workspace_id = $2",
            &[
                &id,
                &workspace.id,
                &name,
                &config,
                &sealed,
                &fields,
                &rate_limit,
                &status,
                &last_error,
            ],
        )
        .await?;
    let view = view_of(&transaction, workspace, id).await?;
    transaction.commit().await?;
    Ok(Json(view))
}

/// The stored credentials, opened to merge `changes` into them. Credentials that no longer
/// decrypt can only be replaced whole: by a patch that gives every required field.
fn open_for_merge(
    state: &AppState,
    workspace: Workspace,
    id: ConnectionId,
    sealed: Option<&str>,
    manifest: &Manifest,
    changes: &CredentialChanges,
) -> Result<Credentials, ApiError> {
    let Some(sealed) = sealed else {
        return Ok(Credentials::default());
    };
    match Credentials::open(&state.keys, sealed, workspace.id, id) {
        Ok(credentials) => Ok(credentials),
        Err(e) => {
            let replaces_all = manifest
                .auth
                .required_credentials()
                .iter()
                .all(|field| matches!(changes.get(*field), Some(Some(_))));
            if replaces_all {
                tracing::warn!(connection_id = %id, error = %e, "stored credentials do not decrypt; replaced by the patch");
                Ok(Credentials::default())
            } else {
                Err(ApiError::Conflict {
                    code: "credentials_unreadable",
                    message: format!(
                        "the stored credentials do not decrypt ({e}): give every credential field to replace them"
                    ),
                })
            }
        }
    }
}

/// Delete a connection. Scenarios that name it fail at their next run of it.
#[utoipa::path(
    delete,
    operation_id = "deleteConnection",
    path = "/api/v1/connections/{id}",
    tag = "connections",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Connection id")),
    responses(
        (status = 204, description = "Deleted, with its credentials"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such connection in this workspace", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(id): ApiPath<ConnectionId>,
) -> Result<StatusCode, ApiError> {
    let client = state.pool.get().await?;
    let deleted = client
        .execute(
            "DELETE FROM connections WHERE id = $1 AND workspace_id = $2",
            &[&id, &workspace.id],
        )
        .await?;
    if deleted == 0 {
        return Err(ApiError::NotFound("connection"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// What a connection test found.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    /// The connection's status now: `active` if the test request succeeded, else `error`.
    pub status: ConnectionStatus,
    /// Why it failed; null when it succeeded.
    pub error: Option<String>,
}

/// Test a connection: its connector's `test` request, sent by a worker like any action.
#[utoipa::path(
    post,
    operation_id = "testConnection",
    path = "/api/v1/connections/{id}/test",
    tag = "connections",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Connection id")),
    responses(
        (status = 200, description = "Tested: the connection is now `active` or `error` (with the reason)", body = TestResult),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such connection in this workspace", body = ErrorBody),
        (status = 409, description = "The connector declares no `test` request (`no_test`) or is gone (`connector_missing`), or the connection waits for its OAuth authorization (`connection_pending`)", body = ErrorBody),
        (status = 503, description = "Database or broker unavailable: nothing was sent", body = ErrorBody),
        (status = 504, description = "No worker answered in time (`timeout`); the status is unchanged", body = ErrorBody),
    )
)]
pub async fn test(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(id): ApiPath<ConnectionId>,
) -> Result<Json<TestResult>, ApiError> {
    let client = state.pool.get().await?;
    let stored = load(&client, workspace, id)
        .await?
        .ok_or(ApiError::NotFound("connection"))?;
    let manifest = connectable(&client, workspace, &stored.connector)
        .await?
        .manifest(&stored.connector)
        .map_err(|_| ApiError::Conflict {
            code: "connector_missing",
            message: format!("connector `{}` no longer exists", stored.connector),
        })?;
    let request = manifest.test.clone().ok_or_else(|| ApiError::Conflict {
        code: "no_test",
        message: format!(
            "connector `{}` declares no `test` request: execute one of its actions instead",
            manifest.key
        ),
    })?;
    let connection = connection_store::usable_connection(&client, workspace, id, &manifest).await?;
    drop(client);
    let timeout = action_timeout(request.timeout.as_deref());
    let action = Action {
        key: "test".to_owned(),
        name: "Test the connection".to_owned(),
        description: None,
        input_schema: empty_object(),
        output_schema: Value::Null,
        request,
        response: ResponseSpec::default(),
        idempotency: None,
    };
    let call = ActionCall::new(&manifest, &action, Some(connection.sealed()));
    let result = direct::dispatch(
        &state,
        workspace,
        Call {
            connector: &manifest.key,
            action: &action.key,
            input: empty_object(),
            call: Some(call),
            timeout,
            not_before: None,
        },
    )
    .await?;
    let update = result.connection.as_ref().filter(|update| update.id == id);
    let error = match &result.outcome {
        Outcome::Success { .. } => None,
        Outcome::Failure { error } => Some(error.message.clone()),
    }
    .or_else(|| update.and_then(|u| u.error.clone()));
    let status = if error.is_some() {
        ConnectionStatus::Error
    } else {
        ConnectionStatus::Active
    };
    let credentials = update.and_then(|u| u.credentials.as_deref());
    let client = state.pool.get().await?;
    client
        .execute(
            "UPDATE connections SET status = $3, last_error = $4, last_used_at = now(),
                 credentials = COALESCE($5, credentials), updated_at = now()
             WHERE id = $1 AND workspace_id = $2",
            &[&id, &workspace.id, &status.as_str(), &error, &credentials],
        )
        .await?;
    Ok(Json(TestResult { status, error }))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn auth(value: Value) -> Auth {
        serde_json::from_value(value).expect("an auth type")
    }

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().expect("an object").clone()
    }

    fn fields(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn credentials_must_be_the_auth_types_fields() {
        let bearer = auth(json!({"type": "bearer"}));
        let (changes, problems) =
            check_credentials(&bearer, &object(json!({"token": "t0k3n"})), false);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            changes["token"].as_ref().map(|v| v.expose_secret()),
            Some("t0k3n")
        );

        let (_, problems) = check_credentials(
            &bearer,
            &object(json!({"token": "", "password": "x", "extra": 1})),
            false,
        );
        let by_field: BTreeMap<&str, &str> = problems
            .iter()
            .map(|p| (p.field.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(by_field["credentials.token"], "must not be empty");
        assert_eq!(
            by_field["credentials.password"],
            "not a credential of bearer auth (it takes: token)"
        );
        assert!(by_field.contains_key("credentials.extra"));

        let none = auth(json!({"type": "none"}));
        let (_, problems) = check_credentials(&none, &object(json!({"token": "x"})), false);
        assert_eq!(problems[0].message, "none auth takes no credentials");
    }

    #[test]
    fn required_fields_are_named_when_missing() {
        let basic = auth(json!({"type": "basic"}));
        let missing = missing_credentials(&basic, &fields(&["username"]));
        assert_eq!(
            missing,
            vec![problem("credentials.password", "required by basic auth")]
        );
        let api_key = auth(json!({"type": "api_key", "in": "header", "name": "X-Key"}));
        assert_eq!(
            missing_credentials(&api_key, &fields(&[]))[0].field,
            "credentials.api_key"
        );
    }

    #[test]
    fn oauth2_connections_take_tokens_and_patches_remove_optional_fields() {
        let oauth = auth(json!({
            "type": "oauth2", "authorize_url": "https://p.test/authorize", "token_url": "https://p.test/token"
        }));
        let given = object(json!({
            "client_id": "id", "client_secret": "s", "refresh_token": "r", "expires_at": 1_900_000_000
        }));
        let (changes, problems) = check_credentials(&oauth, &given, false);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            changes["expires_at"].as_ref().map(|v| v.expose_secret()),
            Some("1900000000")
        );
        let (_, problems) =
            check_credentials(&oauth, &object(json!({"expires_at": "tomorrow"})), false);
        assert_eq!(problems[0].field, "credentials.expires_at");

        let (changes, problems) = check_credentials(
            &oauth,
            &object(json!({"refresh_token": null, "client_secret": "new"})),
            true,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert!(changes["refresh_token"].is_none(), "removed");
        let (_, problems) = check_credentials(&oauth, &object(json!({"client_id": null})), true);
        assert_eq!(
            problems[0].message,
            "required by oauth2 auth: it can be replaced, not removed"
        );
        let (_, problems) =
            check_credentials(&oauth, &object(json!({"refresh_token": null})), false);
        assert_eq!(
            problems[0].message, "must be a string",
            "null only in a patch"
        );
    }

    #[test]
    fn authorization_code_connections_wait_for_their_token() {
        let code = auth(json!({
            "type": "oauth2", "authorize_url": "https://p.test/a", "token_url": "https://p.test/t"
        }));
        let client = auth(json!({
            "type": "oauth2", "grant": "client_credentials", "token_url": "https://p.test/t"
        }));
        let base = fields(&["client_id", "client_secret"]);
        assert_eq!(status_for(&code, &base), ConnectionStatus::Pending);
        let mut authorized = base.clone();
        authorized.insert("access_token".into());
        assert_eq!(status_for(&code, &authorized), ConnectionStatus::Active);
        assert_eq!(status_for(&client, &base), ConnectionStatus::Active);
        assert_eq!(
            status_for(&auth(json!({"type": "bearer"})), &fields(&["token"])),
            ConnectionStatus::Active
        );
    }

    #[test]
    fn config_is_checked_against_the_connection_schema() {
        let schema = json!({
            "type": "object",
            "required": ["shop"],
            "properties": {"shop": {"type": "string", "pattern": "^[a-z]+$"}, "base_url": {"type": "string"}}
        });
        assert!(check_config(&schema, &json!({"shop": "acme"})).is_empty());
        let problems = check_config(&schema, &json!({"shop": "ACME!"}));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "config.shop");
        let problems = check_config(&schema, &json!({}));
        assert_eq!(problems[0].field, "config");
        assert!(problems[0].message.contains("shop"), "{problems:?}");
        assert_eq!(
            check_config(&schema, &json!([]))[0].message,
            "must be an object"
        );
        let loose = json!({"type": "object"});
        assert_eq!(
            check_config(&loose, &json!({"base_url": 5}))[0].field,
            "config.base_url"
        );
    }

    #[test]
    fn rate_limits_need_requests_and_a_period() {
        let limit = parse_rate_limit(&json!({"requests": 5, "per": "1s"})).expect("valid");
        assert_eq!((limit.requests, limit.per.as_str()), (5, "1s"));
        assert_eq!(
            parse_rate_limit(&json!({"requests": 0, "per": "1s"}))
                .expect_err("zero")
                .field,
            "rate_limit.requests"
        );
        assert_eq!(
            parse_rate_limit(&json!({"requests": 1, "per": "soon"}))
                .expect_err("no duration")
                .field,
            "rate_limit.per"
        );
        assert_eq!(
            parse_rate_limit(&json!({"requests": 1}))
                .expect_err("no period")
                .field,
            "rate_limit"
        );
    }

    #[test]
    fn names_are_bounded() {
        assert!(check_name("Acme CRM").is_none());
        assert!(check_name("  ").is_some());
        assert!(check_name(&"x".repeat(201)).is_some());
    }
}
