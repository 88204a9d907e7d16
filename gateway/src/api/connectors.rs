//! Connectors (DESIGN §5): the catalog a workspace sees (the `http` connector, the
//! built-in manifests, and its own), its own registered, updated and deleted through the
//! API, and one action executed directly through the workers.
//!
//! A workspace connector is a row in `connectors` naming its current version, and one
//! immutable row in `connector_versions` per save: runs pin the version they started with,
//! so an update changes the next run and never a running one. Deleting is soft, for the
//! same reason.
//!
//! Direct execution takes the path every run's action takes: a `NodeTask` on the tasks
//! queue, executed by a worker, whose result comes back on this process's reply queue
//! ([`crate::replies`]) instead of the results queue.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_postgres::Row;
use utoipa::ToSchema;
use uuid::Uuid;
use weft_shared::config::parse_duration;
use weft_shared::connector::prepare_http;
use weft_shared::manifest::{
    self, Auth, HTTP_CONNECTOR, HTTP_REQUEST_ACTION, InvalidManifest, Manifest, RESERVED_KEYS,
    Trigger,
};
use weft_shared::messages::{self, ActionCall, NodeResult, NodeTask, Outcome};
use weft_shared::rate_limit;
use weft_shared::scenario::{
    BuiltinCatalog, Catalog, DEFAULT_NODE_TIMEOUT, NodeKind, Problem, Scenario,
};

use crate::api::connections::{self, StoredConnection};
use crate::auth::Workspace;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::paging::{List, PageQuery};
use crate::replies;
use crate::state::AppState;

/// Time a directly executed action may take beyond its own timeout: queueing, and an
/// OAuth token refresh before the request.
const REPLY_MARGIN: Duration = Duration::from_secs(10);

/// A connector as a key resolves in a workspace.
pub(crate) enum Connector {
    /// The free-form `http` connector, written in code.
    Http,
    Builtin(&'static Manifest),
    Registered(Box<Registered>),
}

/// A workspace's own connector, at its current version.
pub(crate) struct Registered {
    manifest: Manifest,
    /// The manifest as it was registered.
    source: Value,
    revision: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Connector {
    /// The manifest; `None` for the `http` connector.
    pub(crate) fn manifest(&self) -> Option<&Manifest> {
        match self {
            Self::Http => None,
            Self::Builtin(manifest) => Some(manifest),
            Self::Registered(registered) => Some(&registered.manifest),
        }
    }

    fn view(&self, with_manifest: bool) -> ConnectorView {
        let Some(manifest) = self.manifest() else {
            return http_view(with_manifest);
        };
        let (revision, created_at, updated_at, source) = match self {
            Self::Registered(registered) => (
                Some(registered.revision),
                Some(registered.created_at),
                Some(registered.updated_at),
                registered.source.clone(),
            ),
            _ => (
                None,
                None,
                None,
                serde_json::to_value(manifest).unwrap_or(Value::Null),
            ),
        };
        ConnectorView {
            key: manifest.key.clone(),
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            category: manifest.category.clone(),
            description: manifest.description.clone(),
            auth_type: manifest.auth.kind(),
            actions: manifest
                .actions
                .iter()
                .map(|action| ActionSummary {
                    key: action.key.clone(),
                    name: action.name.clone(),
                    description: action.description.clone(),
                })
                .collect(),
            triggers: manifest.triggers.iter().map(trigger_summary).collect(),
            builtin: !matches!(self, Self::Registered(_)),
            revision,
            created_at,
            updated_at,
            manifest: with_manifest.then_some(source),
        }
    }
}

fn trigger_summary(trigger: &Trigger) -> TriggerSummary {
    match trigger {
        Trigger::Webhook {
            key,
            name,
            description,
            ..
        } => TriggerSummary {
            key: key.clone(),
            name: name.clone(),
            kind: "webhook",
            description: description.clone(),
        },
        Trigger::Poll {
            key,
            name,
            description,
            ..
        } => TriggerSummary {
            key: key.clone(),
            name: name.clone(),
            kind: "poll",
            description: description.clone(),
        },
    }
}

/// A connector manifest (DESIGN §5): `key`, `name`, `version`, `base_url`, `auth`,
/// `connection_schema`, `test`, `actions`, `triggers`. Checked as a whole when saved.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object)]
pub struct ConnectorManifest(pub Value);

/// A connector as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Connector)]
pub struct ConnectorView {
    pub key: String,
    pub name: String,
    /// The manifest's own version, e.g. `1.2.0`.
    pub version: String,
    pub category: Option<String>,
    pub description: Option<String>,
    /// `none`, `api_key`, `bearer`, `basic` or `oauth2`.
    pub auth_type: &'static str,
    pub actions: Vec<ActionSummary>,
    pub triggers: Vec<TriggerSummary>,
    /// Ships with Weft (cannot be changed or deleted), or is this workspace's own.
    pub builtin: bool,
    /// A workspace connector's stored version: each save adds one. Null for built-ins.
    pub revision: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// The full manifest; only in `GET /api/v1/connectors/{key}` and the answers to saves.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub manifest: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActionSummary {
    pub key: String,
    pub name: String,
    pub description: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TriggerSummary {
    pub key: String,
    pub name: String,
    /// `webhook` or `poll`.
    pub kind: &'static str,
    pub description: Option<String>,
}

/// The input of `http.request` (DESIGN §6), as a JSON Schema for the catalog.
fn http_input_schema() -> Value {
    json!({
        "type": "object",
        "required": ["url"],
        "properties": {
            "method": {"type": "string", "default": "GET", "enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"]},
            "url": {"type": "string", "description": "An absolute http(s) URL"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "query": {"type": "object"},
            "body": {},
            "body_type": {"type": "string", "enum": ["json", "form", "raw"], "default": "json"},
            "timeout": {"description": "A duration like \"10s\", or milliseconds", "type": ["string", "integer"]}
        },
        "additionalProperties": false
    })
}

fn http_view(with_manifest: bool) -> ConnectorView {
    let description = "Send any HTTP request: method, URL, headers and body are the action's input";
    let action_description =
        "One HTTP request; outputs `{status, headers, body}` (the body parsed when it is JSON)";
    ConnectorView {
        key: HTTP_CONNECTOR.to_owned(),
        name: "HTTP".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        category: Some("developer".to_owned()),
        description: Some(description.to_owned()),
        auth_type: Auth::None.kind(),
        actions: vec![ActionSummary {
            key: HTTP_REQUEST_ACTION.to_owned(),
            name: "HTTP request".to_owned(),
            description: Some(action_description.to_owned()),
        }],
        triggers: Vec::new(),
        builtin: true,
        revision: None,
        created_at: None,
        updated_at: None,
        manifest: with_manifest.then(|| {
            json!({
                "key": HTTP_CONNECTOR,
                "name": "HTTP",
                "version": env!("CARGO_PKG_VERSION"),
                "category": "developer",
                "description": description,
                "auth": {"type": "none"},
                "actions": [{
                    "key": HTTP_REQUEST_ACTION,
                    "name": "HTTP request",
                    "description": action_description,
                    "input_schema": http_input_schema(),
                    "output_schema": {
                        "type": "object",
                        "properties": {"status": {"type": "integer"}, "headers": {"type": "object"}, "body": {}}
                    }
                }]
            })
        }),
    }
}

/// The columns of a workspace connector at its current version; `c` is `connectors`, `v`
/// its current `connector_versions` row.
macro_rules! registered_columns {
    () => {
        "c.key, c.current_version, c.created_at, c.updated_at, v.manifest"
    };
}

macro_rules! registered_from {
    () => {
        " FROM connectors c
          JOIN connector_versions v
            ON v.workspace_id = c.workspace_id AND v.key = c.key AND v.version = c.current_version "
    };
}

fn registered_from_row(row: &Row) -> Result<Registered, ApiError> {
    let source: Value = row.try_get("manifest")?;
    let key: String = row.try_get("key")?;
    // Checked when it was saved, so this only fails if the format changed incompatibly.
    let manifest = serde_json::from_value(source.clone()).map_err(|e| {
        ApiError::Internal(
            format!("stored manifest of connector `{key}` no longer parses: {e}").into(),
        )
    })?;
    Ok(Registered {
        manifest,
        source,
        revision: row.try_get("current_version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The connector `key` names in `workspace`, if any.
pub(crate) async fn resolve(
    client: &impl GenericClient,
    workspace: Uuid,
    key: &str,
) -> Result<Option<Connector>, ApiError> {
    if key == HTTP_CONNECTOR {
        return Ok(Some(Connector::Http));
    }
    if let Some(builtin) = manifest::builtin(key) {
        return Ok(Some(Connector::Builtin(builtin)));
    }
    let statement = client
        .prepare_cached(concat!(
            "SELECT ",
            registered_columns!(),
            registered_from!(),
            "WHERE c.workspace_id = $1 AND c.key = $2 AND c.deleted_at IS NULL"
        ))
        .await?;
    client
        .query_opt(&statement, &[&workspace, &key])
        .await?
        .map(|row| registered_from_row(&row).map(|r| Connector::Registered(Box::new(r))))
        .transpose()
}

/// Whether `key` names a connector that ships with Weft (or is reserved for one).
fn is_builtin_key(key: &str) -> bool {
    RESERVED_KEYS.contains(&key) || manifest::builtin(key).is_some()
}

fn invalid_manifest(invalid: InvalidManifest) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_manifest",
        message: invalid.to_string(),
        details: json!({ "problems": invalid.0 }),
    }
}

fn builtin_conflict(key: &str) -> ApiError {
    ApiError::Conflict {
        code: "builtin_connector",
        message: format!(
            "`{key}` is a built-in connector: it cannot be registered, changed or deleted; register yours under another key"
        ),
    }
}

/// The key of a manifest as sent, for the checks that come before validation.
fn key_of(source: &Value) -> Option<&str> {
    source.get("key").and_then(Value::as_str)
}

/// List the connectors this workspace can use: the built-ins and its own, by key.
#[utoipa::path(
    get,
    operation_id = "listConnectors",
    path = "/api/v1/connectors",
    tag = "connectors",
    security(("api_key" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of connectors, by key; `cursor` is the last key of the previous page", body = List<ConnectorView>),
        (status = 400, description = "Bad `limit`", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<List<ConnectorView>>, ApiError> {
    let page = query.page::<String>()?;
    let after = page.cursor.clone().unwrap_or_default();
    let mut connectors: Vec<(String, Connector)> = std::iter::once(Connector::Http)
        .chain(manifest::builtins().iter().map(Connector::Builtin))
        .map(|connector| (connector_key(&connector).to_owned(), connector))
        .filter(|(key, _)| *key > after)
        .collect();
    let client = state.pool.get().await?;
    // Byte order ("C"), the order of Rust strings, so pages of both sources interleave.
    let statement = client
        .prepare_cached(concat!(
            "SELECT ",
            registered_columns!(),
            registered_from!(),
            r#"WHERE c.workspace_id = $1 AND c.deleted_at IS NULL AND c.key COLLATE "C" > $2
               ORDER BY c.key COLLATE "C" LIMIT $3"#
        ))
        .await?;
    let rows = client
        .query(&statement, &[&workspace.id, &after, &page.fetch()])
        .await?;
    for row in &rows {
        let registered = registered_from_row(row)?;
        connectors.push((
            registered.manifest.key.clone(),
            Connector::Registered(Box::new(registered)),
        ));
    }
    connectors.sort_by(|a, b| a.0.cmp(&b.0));
    connectors.truncate(usize::try_from(page.fetch()).unwrap_or(usize::MAX));
    let items = connectors
        .iter()
        .map(|(_, connector)| connector.view(false))
        .collect();
    Ok(Json(List::new(items, &page, |view: &ConnectorView| {
        view.key.clone()
    })))
}

fn connector_key(connector: &Connector) -> &str {
    connector
        .manifest()
        .map_or(HTTP_CONNECTOR, |m| m.key.as_str())
}

/// Read a connector, with its full manifest.
#[utoipa::path(
    get,
    operation_id = "getConnector",
    path = "/api/v1/connectors/{key}",
    tag = "connectors",
    security(("api_key" = [])),
    params(("key" = String, Path, description = "Connector key")),
    responses(
        (status = 200, description = "The connector and its manifest", body = ConnectorView),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such connector in this workspace", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<ConnectorView>, ApiError> {
    let client = state.pool.get().await?;
    let connector = resolve(&client, workspace.id, &key)
        .await?
        .ok_or(ApiError::NotFound("connector"))?;
    Ok(Json(connector.view(true)))
}

/// Register a connector: a manifest (DESIGN §5) under a key not used in the workspace.
#[utoipa::path(
    post,
    operation_id = "createConnector",
    path = "/api/v1/connectors",
    tag = "connectors",
    security(("api_key" = [])),
    request_body(content = ConnectorManifest, description = "A connector manifest (DESIGN §5): `key`, `name`, `version`, `base_url`, `auth`, `connection_schema`, `test`, `actions`, `triggers`"),
    responses(
        (status = 201, description = "Registered (revision 1, or the next one if the key was deleted before)", body = ConnectorView),
        (status = 400, description = "Invalid manifest (`invalid_manifest`, with `details.problems`: `[{path, message}]`) or malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 409, description = "The key is a built-in connector's (`builtin_connector`) or already registered (`connector_exists`)", body = ErrorBody),
        (status = 413, description = "Body over the API body limit", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiJson(ConnectorManifest(source)): ApiJson<ConnectorManifest>,
) -> Result<(StatusCode, Json<ConnectorView>), ApiError> {
    if let Some(key) = key_of(&source).filter(|key| is_builtin_key(key)) {
        return Err(builtin_conflict(key));
    }
    let manifest = manifest::validate(&source).map_err(invalid_manifest)?;
    let mut client = state.pool.get().await?;
    let transaction = client.transaction().await?;
    // A deleted connector's key may be registered again: it continues the old key's
    // versions, which runs may still pin.
    let row = transaction
        .query_opt(
            "INSERT INTO connectors (workspace_id, key, current_version) VALUES ($1, $2, 1)
             ON CONFLICT (workspace_id, key) DO UPDATE
             SET current_version = connectors.current_version + 1, deleted_at = NULL,
                 created_at = now(), updated_at = now()
             WHERE connectors.deleted_at IS NOT NULL
             RETURNING current_version",
            &[&workspace.id, &manifest.key],
        )
        .await?
        .ok_or_else(|| ApiError::Conflict {
            code: "connector_exists",
            message: format!(
                "connector `{}` is already registered in this workspace: update it with PUT /api/v1/connectors/{}",
                manifest.key, manifest.key
            ),
        })?;
    let version: i32 = row.try_get("current_version")?;
    let view = store_version(&transaction, workspace, &manifest, &source, version).await?;
    transaction.commit().await?;
    tracing::info!(workspace_id = %workspace.id, connector = %manifest.key, version, "connector registered");
    Ok((StatusCode::CREATED, Json(view)))
}

/// Writes one immutable version and answers with the connector as it now is.
async fn store_version(
    client: &impl GenericClient,
    workspace: Workspace,
    manifest: &Manifest,
    source: &Value,
    version: i32,
) -> Result<ConnectorView, ApiError> {
    client
        .execute(
            "INSERT INTO connector_versions (id, workspace_id, key, version, manifest)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &Uuid::now_v7(),
                &workspace.id,
                &manifest.key,
                &version,
                source,
            ],
        )
        .await?;
    let row = client
        .query_one(
            concat!(
                "SELECT ",
                registered_columns!(),
                registered_from!(),
                "WHERE c.workspace_id = $1 AND c.key = $2"
            ),
            &[&workspace.id, &manifest.key],
        )
        .await?;
    Ok(Connector::Registered(Box::new(registered_from_row(&row)?)).view(true))
}

/// Save a new version of a workspace connector. Running runs keep the version they
/// started with; the next runs use this one.
#[utoipa::path(
    put,
    operation_id = "updateConnector",
    path = "/api/v1/connectors/{key}",
    tag = "connectors",
    security(("api_key" = [])),
    params(("key" = String, Path, description = "Connector key")),
    request_body(content = ConnectorManifest, description = "The new manifest; its `key` must be the one in the path"),
    responses(
        (status = 200, description = "Saved as a new revision", body = ConnectorView),
        (status = 400, description = "Invalid manifest (`invalid_manifest`, with `details.problems`) or malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such connector in this workspace", body = ErrorBody),
        (status = 409, description = "A built-in connector (`builtin_connector`)", body = ErrorBody),
        (status = 413, description = "Body over the API body limit", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(key): ApiPath<String>,
    ApiJson(ConnectorManifest(source)): ApiJson<ConnectorManifest>,
) -> Result<Json<ConnectorView>, ApiError> {
    if is_builtin_key(&key) {
        return Err(builtin_conflict(&key));
    }
    let manifest = manifest::validate(&source).map_err(invalid_manifest)?;
    if manifest.key != key {
        return Err(invalid_manifest(InvalidManifest(vec![
            manifest::ManifestProblem {
                path: "key".to_owned(),
                message: format!(
                    "must be `{key}`, the key in the URL: a connector's key cannot change (register a new connector instead)"
                ),
            },
        ])));
    }
    let mut client = state.pool.get().await?;
    let transaction = client.transaction().await?;
    // The row lock serializes concurrent saves, so each gets its own version.
    let version: i32 = transaction
        .query_opt(
            "UPDATE connectors SET current_version = current_version + 1, updated_at = now()
             WHERE workspace_id = $1 AND key = $2 AND deleted_at IS NULL
             RETURNING current_version",
            &[&workspace.id, &key],
        )
        .await?
        .ok_or(ApiError::NotFound("connector"))?
        .try_get("current_version")?;
    let view = store_version(&transaction, workspace, &manifest, &source, version).await?;
    transaction.commit().await?;
    tracing::info!(workspace_id = %workspace.id, connector = %key, version, "connector updated");
    Ok(Json(view))
}

/// Delete a workspace connector. Runs that pinned one of its versions finish with it;
/// its connections stay until deleted, but cannot be used.
#[utoipa::path(
    delete,
    operation_id = "deleteConnector",
    path = "/api/v1/connectors/{key}",
    tag = "connectors",
    security(("api_key" = [])),
    params(("key" = String, Path, description = "Connector key")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such connector in this workspace", body = ErrorBody),
        (status = 409, description = "A built-in connector (`builtin_connector`)", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(key): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if is_builtin_key(&key) {
        return Err(builtin_conflict(&key));
    }
    let client = state.pool.get().await?;
    let deleted = client
        .execute(
            "UPDATE connectors SET deleted_at = now(), updated_at = now()
             WHERE workspace_id = $1 AND key = $2 AND deleted_at IS NULL",
            &[&workspace.id, &key],
        )
        .await?;
    if deleted == 0 {
        return Err(ApiError::NotFound("connector"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Body of a direct execution.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// The connection to call with; required unless the connector's auth is `none`. The
    /// `http` connector takes none.
    pub connection_id: Option<Uuid>,
    /// The action's input, checked against its `input_schema` (for `http.request`: the
    /// request, DESIGN §6).
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub input: Value,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    Completed,
    Failed,
}

/// What one directly executed action did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionResult {
    pub status: ExecutionStatus,
    /// The action's output; null when it failed.
    #[schema(value_type = Object, nullable)]
    pub output: Value,
    /// `{class, message, status, body, retry_after_ms}` when it failed, else null.
    #[schema(value_type = Object, nullable)]
    pub error: Value,
    /// The worker's time for the attempt.
    pub duration_ms: i64,
}

impl ExecutionResult {
    fn from_result(result: &NodeResult) -> Self {
        let duration_ms = (result.finished_at - result.started_at).num_milliseconds();
        match &result.outcome {
            Outcome::Success { output } => Self {
                status: ExecutionStatus::Completed,
                output: output.clone(),
                error: Value::Null,
                duration_ms,
            },
            Outcome::Failure { error } => Self {
                status: ExecutionStatus::Failed,
                output: Value::Null,
                error: serde_json::to_value(error).unwrap_or(Value::Null),
                duration_ms,
            },
        }
    }
}

fn invalid_input(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_input", message)
}

/// Run one action now, through a worker, and return its result.
#[utoipa::path(
    post,
    operation_id = "executeAction",
    path = "/api/v1/connectors/{key}/actions/{action}/execute",
    tag = "connectors",
    security(("api_key" = [])),
    params(
        ("key" = String, Path, description = "Connector key"),
        ("action" = String, Path, description = "Action key"),
    ),
    request_body = ExecuteRequest,
    responses(
        (status = 200, description = "The action ran (`completed`) or failed upstream (`failed`, with `error`)", body = ExecutionResult),
        (status = 400, description = "Input that fails the action's `input_schema` (`invalid_input`, naming the field), or a connection missing or of another connector", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such connector, action or connection in this workspace", body = ErrorBody),
        (status = 409, description = "The connection still waits for its OAuth authorization (`connection_pending`)", body = ErrorBody),
        (status = 422, description = "JSON of the wrong shape", body = ErrorBody),
        (status = 503, description = "Database or broker unavailable: nothing was run", body = ErrorBody),
        (status = 504, description = "No worker answered in time (`timeout`)", body = ErrorBody),
    )
)]
pub async fn execute(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath((key, action_key)): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<ExecuteRequest>,
) -> Result<Json<ExecutionResult>, ApiError> {
    let client = state.pool.get().await?;
    let connector = resolve(&client, workspace.id, &key)
        .await?
        .ok_or(ApiError::NotFound("connector"))?;
    let Some(manifest) = connector.manifest() else {
        if action_key != HTTP_REQUEST_ACTION {
            return Err(ApiError::NotFound("action"));
        }
        if request.connection_id.is_some() {
            return Err(ApiError::bad_request(
                "invalid_request",
                "the http connector takes no connection: put headers and credentials in the request input",
            ));
        }
        let prepared = prepare_http(&request.input).map_err(|e| invalid_input(e.message))?;
        let timeout = prepared.timeout.unwrap_or(DEFAULT_NODE_TIMEOUT);
        drop(client);
        let call = Call {
            connector: HTTP_CONNECTOR,
            action: HTTP_REQUEST_ACTION,
            input: request.input,
            call: None,
            timeout,
            not_before: None,
        };
        let result = dispatch(&state, workspace, call).await?;
        return Ok(Json(ExecutionResult::from_result(&result)));
    };
    let action = manifest
        .action(&action_key)
        .ok_or(ApiError::NotFound("action"))?;
    state
        .input_schemas
        .check(&action.input_schema, &request.input)
        .map_err(invalid_input)?;
    let connection = match request.connection_id {
        Some(id) => Some(usable_connection(&client, workspace, id, manifest).await?),
        None if manifest.auth == Auth::None => None,
        None => {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!(
                    "`connection_id` is required: connector `{}` uses {} auth",
                    manifest.key,
                    manifest.auth.kind()
                ),
            ));
        }
    };
    let timeout = action_timeout(action.request.timeout.as_deref());
    let limit = rate_limit::limit_of(
        workspace.id,
        manifest,
        connection.as_ref().map(|c| (c.id, c.rate_limit.as_ref())),
    );
    let not_before = match limit {
        Some((key, interval)) => Some(rate_limit::reserve_slot(&client, &key, interval).await?),
        None => None,
    };
    let connection_id = connection.as_ref().map(|c| c.id);
    let call = manifest.call(action, connection.map(StoredConnection::sealed));
    drop(client);
    let result = dispatch(
        &state,
        workspace,
        Call {
            connector: &manifest.key,
            action: &action.key,
            input: request.input,
            call: Some(call),
            timeout,
            not_before,
        },
    )
    .await?;
    if let Some(id) = connection_id {
        connections::record_use(&state, workspace, id, result.connection.as_ref()).await?;
    }
    Ok(Json(ExecutionResult::from_result(&result)))
}

/// A connection that can make calls for `manifest`'s connector.
pub(crate) async fn usable_connection(
    client: &impl GenericClient,
    workspace: Workspace,
    id: Uuid,
    manifest: &Manifest,
) -> Result<StoredConnection, ApiError> {
    let connection = connections::load(client, workspace, id)
        .await?
        .ok_or(ApiError::NotFound("connection"))?;
    if connection.connector != manifest.key {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "connection {id} belongs to connector `{}`, not `{}`",
                connection.connector, manifest.key
            ),
        ));
    }
    if connection.status == "pending" {
        return Err(ApiError::Conflict {
            code: "connection_pending",
            message: format!(
                "connection {id} is not authorized yet: finish its OAuth flow at GET /api/v1/oauth/{}/start?connection_id={id}",
                manifest.key
            ),
        });
    }
    Ok(connection)
}

/// An action's own timeout (checked at registration), or the default.
pub(crate) fn action_timeout(timeout: Option<&str>) -> Duration {
    timeout
        .and_then(|text| parse_duration(text).ok())
        .unwrap_or(DEFAULT_NODE_TIMEOUT)
}

/// One call to run through a worker.
pub(crate) struct Call<'a> {
    pub connector: &'a str,
    pub action: &'a str,
    pub input: Value,
    /// `None` for `http.request`, whose input is the request.
    pub call: Option<ActionCall>,
    pub timeout: Duration,
    /// Not before this instant (a rate-limit slot).
    pub not_before: Option<DateTime<Utc>>,
}

/// Sends the call to the workers as a one-node run of its own and waits for the result.
pub(crate) async fn dispatch(
    state: &AppState,
    workspace: Workspace,
    call: Call<'_>,
) -> Result<NodeResult, ApiError> {
    let now = Utc::now();
    let delay = call
        .not_before
        .and_then(|at| (at - now).to_std().ok())
        .unwrap_or_default();
    let task = NodeTask {
        v: messages::VERSION,
        run_id: Uuid::now_v7(),
        workspace_id: workspace.id,
        node_id: "execute".to_owned(),
        item_index: None,
        attempt: 1,
        connector: call.connector.to_owned(),
        action: call.action.to_owned(),
        input: call.input,
        timeout_ms: u64::try_from(call.timeout.as_millis()).unwrap_or(u64::MAX),
        ready_at: now,
        not_before: call.not_before.filter(|_| !delay.is_zero()),
        call: call.call.map(Box::new),
        reply_to: None,
    };
    replies::execute(state, task, call.timeout + delay + REPLY_MARGIN).await
}

/// The connectors and connections a scenario definition names, loaded before it is
/// checked: the catalog of scenario validation for one workspace.
#[derive(Default)]
pub(crate) struct WorkspaceCatalog {
    /// The workspace's own connectors the definition names, by key.
    registered: HashMap<String, Manifest>,
    /// The workspace's connections the definition names: id → connector key.
    connections: HashMap<Uuid, String>,
}

impl WorkspaceCatalog {
    /// Loads what `definition` refers to; what does not exist is simply absent, and
    /// reported by the checks.
    pub(crate) async fn load(
        client: &impl GenericClient,
        workspace: Workspace,
        definition: &Value,
    ) -> Result<Self, ApiError> {
        let nodes = definition
            .get("nodes")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        // The nodes, and a poll trigger, name connectors and connections the same way.
        let trigger = definition.get("trigger");
        let named = |field: &str| -> BTreeSet<String> {
            nodes
                .iter()
                .chain(trigger)
                .filter_map(|node| node.get(field).and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        };
        let keys: Vec<String> = named("connector")
            .into_iter()
            .filter(|key| !is_builtin_key(key))
            .collect();
        let ids: Vec<Uuid> = named("connection")
            .iter()
            .filter_map(|id| Uuid::parse_str(id).ok())
            .collect();
        let mut registered = HashMap::new();
        if !keys.is_empty() {
            let rows = client
                .query(
                    concat!(
                        "SELECT ",
                        registered_columns!(),
                        registered_from!(),
                        "WHERE c.workspace_id = $1 AND c.key = ANY($2) AND c.deleted_at IS NULL"
                    ),
                    &[&workspace.id, &keys],
                )
                .await?;
            for row in &rows {
                let found = registered_from_row(row)?;
                registered.insert(found.manifest.key.clone(), found.manifest);
            }
        }
        let mut connections = HashMap::new();
        if !ids.is_empty() {
            let rows = client
                .query(
                    "SELECT id, connector FROM connections WHERE workspace_id = $1 AND id = ANY($2)",
                    &[&workspace.id, &ids],
                )
                .await?;
            for row in &rows {
                connections.insert(row.try_get("id")?, row.try_get("connector")?);
            }
        }
        Ok(Self {
            registered,
            connections,
        })
    }

    fn manifest(&self, key: &str) -> Option<&Manifest> {
        manifest::builtin(key).or_else(|| self.registered.get(key))
    }

    /// What a schema-level parse cannot know: a poll trigger must name a poll trigger of a
    /// connector of the workspace; and every action node (and poll trigger) of a manifest
    /// connector whose auth is not `none` must name a connection of that connector in this
    /// workspace. A connection named (with any auth) must exist.
    pub(crate) fn check_references(&self, scenario: &Scenario) -> Vec<Problem> {
        let mut problems = self.check_poll(scenario);
        for node in &scenario.nodes {
            let NodeKind::Action {
                connector,
                connection,
                ..
            } = &node.kind
            else {
                continue;
            };
            let problem = |message: String| Problem {
                node: Some(node.id.clone()),
                field: "connection".to_owned(),
                message,
            };
            if connector == HTTP_CONNECTOR {
                if connection.is_some() {
                    problems.push(problem(
                        "the http connector takes no connection: put headers and credentials in the input".to_owned(),
                    ));
                }
                continue;
            }
            let Some(manifest) = self.manifest(connector) else {
                continue;
            };
            let Some(connection) = connection else {
                if manifest.auth != Auth::None {
                    problems.push(problem(format!(
                        "required: connector `{connector}` uses {} auth; name one of its connections (see GET /api/v1/connections?connector={connector})",
                        manifest.auth.kind()
                    )));
                }
                continue;
            };
            let Ok(id) = Uuid::parse_str(connection) else {
                problems.push(problem(format!("`{connection}` is not a connection id")));
                continue;
            };
            if let Err(message) = self.check_connection(id, connector) {
                problems.push(problem(message));
            }
        }
        problems
    }

    /// A connection named for `connector` must be one of its connections here.
    fn check_connection(&self, id: Uuid, connector: &str) -> Result<(), String> {
        match self.connections.get(&id) {
            None => Err(format!("no connection {id} in this workspace")),
            Some(owner) if owner != connector => Err(format!(
                "connection {id} belongs to connector `{owner}`, not `{connector}`"
            )),
            Some(_) => Ok(()),
        }
    }

    fn check_poll(&self, scenario: &Scenario) -> Vec<Problem> {
        let Some(poll) = &scenario.poll else {
            return Vec::new();
        };
        let problem = |field: &str, message: String| Problem {
            node: None,
            field: format!("trigger.{field}"),
            message,
        };
        let connector = &poll.connector;
        let Some(manifest) = self.manifest(connector) else {
            let message = if connector == HTTP_CONNECTOR {
                "the http connector has no triggers".to_owned()
            } else {
                format!(
                    "unknown connector `{connector}`: it is neither built in nor registered in this workspace"
                )
            };
            return vec![problem("connector", message)];
        };
        let mut problems = Vec::new();
        let polls: Vec<&str> = manifest
            .triggers
            .iter()
            .filter(|t| matches!(t, Trigger::Poll { .. }))
            .map(Trigger::key)
            .collect();
        if !polls.contains(&poll.trigger.as_str()) {
            let message = if polls.is_empty() {
                format!("connector `{connector}` has no poll triggers")
            } else {
                format!(
                    "connector `{connector}` has no poll trigger `{}` (it has: {})",
                    poll.trigger,
                    polls.join(", ")
                )
            };
            problems.push(problem("trigger", message));
        }
        match poll.connection {
            None if manifest.auth != Auth::None => problems.push(problem(
                "connection",
                format!(
                    "required: connector `{connector}` uses {} auth; name one of its connections",
                    manifest.auth.kind()
                ),
            )),
            None => {}
            Some(id) => {
                if let Err(message) = self.check_connection(id, connector) {
                    problems.push(problem("connection", message));
                }
            }
        }
        problems
    }
}

impl Catalog for WorkspaceCatalog {
    fn check_action(&self, connector: &str, action: &str) -> Result<(), String> {
        if connector == HTTP_CONNECTOR {
            return BuiltinCatalog.check_action(connector, action);
        }
        let manifest = self.manifest(connector).ok_or_else(|| {
            format!(
                "unknown connector `{connector}`: it is neither built in nor registered in this workspace"
            )
        })?;
        if manifest.action(action).is_some() {
            return Ok(());
        }
        let known: Vec<&str> = manifest.actions.iter().map(|a| a.key.as_str()).collect();
        Err(format!(
            "connector `{connector}` has no action `{action}` (it has: {})",
            known.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn custom(auth: Value) -> Manifest {
        manifest::validate(&json!({
            "key": "crm", "name": "CRM", "version": "1.0.0", "base_url": "https://crm.test",
            "auth": auth,
            "actions": [{"key": "find", "name": "Find", "request": {"method": "GET", "path": "/find"}}]
        }))
        .expect("valid manifest")
    }

    fn catalog(auth: Value, connections: &[(Uuid, &str)]) -> WorkspaceCatalog {
        WorkspaceCatalog {
            registered: HashMap::from([("crm".to_owned(), custom(auth))]),
            connections: connections
                .iter()
                .map(|(id, key)| (*id, (*key).to_owned()))
                .collect(),
        }
    }

    fn scenario(catalog: &WorkspaceCatalog, node: Value) -> Scenario {
        Scenario::parse(
            &json!({"name": "s", "trigger": {"type": "manual"}, "nodes": [node]}),
            catalog,
        )
        .expect("parses")
    }

    #[test]
    fn the_catalog_knows_http_the_builtins_and_the_workspace_connectors() {
        let catalog = catalog(json!({"type": "none"}), &[]);
        assert_eq!(catalog.check_action("http", "request"), Ok(()));
        assert_eq!(catalog.check_action("crm", "find"), Ok(()));
        let builtin = &manifest::builtins()[0];
        assert_eq!(
            catalog.check_action(&builtin.key, &builtin.actions[0].key),
            Ok(())
        );
        let missing = catalog
            .check_action("crm", "delete")
            .expect_err("no such action");
        assert!(
            missing.contains("has no action `delete` (it has: find)"),
            "{missing}"
        );
        let unknown = catalog.check_action("erp", "find").expect_err("unknown");
        assert!(unknown.contains("unknown connector `erp`"), "{unknown}");
    }

    #[test]
    fn action_nodes_of_authenticated_connectors_need_a_connection_of_their_connector() {
        let mine = Uuid::now_v7();
        let github = Uuid::now_v7();
        let catalog = catalog(
            json!({"type": "bearer"}),
            &[(mine, "crm"), (github, "github")],
        );
        let node = |connection: Option<String>| {
            let mut node =
                json!({"id": "find", "type": "action", "connector": "crm", "action": "find"});
            if let Some(connection) = connection {
                node["connection"] = Value::String(connection);
            }
            node
        };

        let ok = scenario(&catalog, node(Some(mine.to_string())));
        assert!(catalog.check_references(&ok).is_empty());

        let cases = [
            (None, "required: connector `crm` uses bearer auth"),
            (Some("nope".to_owned()), "`nope` is not a connection id"),
            (Some(Uuid::now_v7().to_string()), "in this workspace"),
            (
                Some(github.to_string()),
                "belongs to connector `github`, not `crm`",
            ),
        ];
        for (connection, expected) in cases {
            let problems = catalog.check_references(&scenario(&catalog, node(connection)));
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].node.as_deref(), Some("find"));
            assert_eq!(problems[0].field, "connection");
            assert!(
                problems[0].message.contains(expected),
                "{expected}: {problems:?}"
            );
        }
    }

    #[test]
    fn poll_triggers_name_a_poll_trigger_of_the_connector_and_a_connection_of_it() {
        let github = manifest::builtin("github").expect("github ships");
        let poll_key = github
            .triggers
            .iter()
            .find(|t| matches!(t, Trigger::Poll { .. }))
            .map(Trigger::key)
            .expect("github has a poll trigger");
        let mine = Uuid::now_v7();
        let catalog = catalog(json!({"type": "none"}), &[(mine, "github")]);
        let poll = |trigger: Value| {
            let definition = json!({
                "name": "s", "trigger": trigger,
                "nodes": [{"id": "t", "type": "transform", "output": {}}]
            });
            catalog.check_references(&Scenario::parse(&definition, &catalog).expect("parses"))
        };
        assert!(
            poll(json!({"type": "poll", "connector": "github", "trigger": poll_key, "connection": mine.to_string()}))
                .is_empty()
        );
        let problems = poll(json!({"type": "poll", "connector": "github", "trigger": "nope"}));
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["trigger.trigger", "trigger.connection"],
            "{problems:?}"
        );
        assert!(problems[0].message.contains(poll_key), "{problems:?}");
        let problems = poll(json!({"type": "poll", "connector": "crm", "trigger": "new"}));
        assert_eq!(problems[0].message, "connector `crm` has no poll triggers");
        let problems = poll(json!({"type": "poll", "connector": "erp", "trigger": "new"}));
        assert_eq!(problems[0].field, "trigger.connector");
    }

    #[test]
    fn connectors_without_auth_need_no_connection_and_http_takes_none() {
        let catalog = catalog(json!({"type": "none"}), &[]);
        let node = json!({"id": "find", "type": "action", "connector": "crm", "action": "find"});
        assert!(
            catalog
                .check_references(&scenario(&catalog, node))
                .is_empty()
        );
        let http = json!({
            "id": "get", "type": "action", "connector": "http", "action": "request",
            "connection": Uuid::now_v7().to_string(), "input": {"url": "https://x.test"}
        });
        let problems = catalog.check_references(&scenario(&catalog, http));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].message.contains("takes no connection"));
    }

    #[test]
    fn views_name_the_auth_type_actions_and_origin() {
        let builtin = Connector::Builtin(&manifest::builtins()[0]).view(false);
        assert!(builtin.builtin);
        assert_eq!(builtin.revision, None);
        assert!(builtin.manifest.is_none(), "lists carry no manifest");
        assert!(!builtin.actions.is_empty());

        let http = http_view(true);
        assert_eq!((http.key.as_str(), http.auth_type), ("http", "none"));
        assert_eq!(http.actions[0].key, "request");
        let manifest = http.manifest.expect("the full description");
        assert_eq!(
            manifest["actions"][0]["input_schema"]["required"],
            json!(["url"])
        );
    }

    #[test]
    fn an_action_timeout_is_its_own_or_the_default() {
        assert_eq!(action_timeout(Some("5s")), Duration::from_secs(5));
        assert_eq!(action_timeout(None), DEFAULT_NODE_TIMEOUT);
    }
}
