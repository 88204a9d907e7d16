//! Connectors (architecture §6): the catalog a workspace sees (the `http` connector, the
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

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;
use weft_domain::connector::prepare_http;
use weft_domain::ids::ConnectionId;
use weft_domain::manifest::{
    self, Auth, HTTP_CONNECTOR, HTTP_REQUEST_ACTION, InvalidManifest, Manifest, Trigger,
};
use weft_domain::messages::{ActionCall, NodeResult, Outcome};
use weft_domain::scenario::DEFAULT_NODE_TIMEOUT;
use weft_runtime::rate_limit;

use crate::auth::Workspace;
use crate::catalog::{
    Connector, is_builtin_key, registered_columns, registered_from, registered_from_row, resolve,
};
use crate::connection_store::{self, StoredConnection};
use crate::direct::{self, Call, action_timeout};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::paging::{List, PageQuery};
use crate::state::AppState;

impl Connector {
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

/// The input of `http.request` (architecture §7), as a JSON Schema for the catalog.
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

/// Register a connector: a manifest (architecture §6) under a key not used in the workspace.
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
    pub connection_id: Option<ConnectionId>,
    /// The action's input, checked against its `input_schema` (for `http.request`: the
    /// request, architecture §7).
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
        let result = direct::dispatch(&state, workspace, call).await?;
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
        Some(id) => {
            Some(connection_store::usable_connection(&client, workspace, id, manifest).await?)
        }
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
    let call = ActionCall::new(manifest, action, connection.map(StoredConnection::sealed));
    drop(client);
    let result = direct::dispatch(
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
        connection_store::record_use(&state, workspace, id, result.connection.as_ref()).await?;
    }
    Ok(Json(ExecutionResult::from_result(&result)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
