//! The connection endpoints: create, list, read, update, delete, and test through a worker.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use deadpool_postgres::GenericClient;
use serde_json::{Value, json};
use tokio_postgres::Row;
use tokio_postgres::types::Json as Jsonb;
use weft_domain::access::Role;
use weft_domain::connector::Credentials;
use weft_domain::ids::{ConnectionId, WorkspaceId};
use weft_domain::manifest::{self, Action, Manifest, ResponseSpec};
use weft_domain::messages::{ActionCall, Outcome};

use super::checks::{
    CredentialChanges, FieldProblem, apply, check_config, check_credentials, check_name,
    invalid_connection, missing_credentials, parse_rate_limit, status_for,
};
use super::connectable::connectable;
use super::masking;
use super::model::{
    ConnectionPatch, ConnectionStatus, ConnectionView, ListQuery, NewConnection, TestResult,
};
use crate::access::Workspace;
use crate::audit::{Action as AuditAction, ActorView, Event};
use crate::connection_store::{self, load};
use crate::direct::{self, Call, action_timeout};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, empty_object};
use crate::paging::{List, Page};
use crate::state::AppState;

/// The columns of a connection as the API shows it; `c` is the `connections` row. The
/// auth type of a workspace connector is read from its current manifest.
macro_rules! connection_columns {
    () => {
        "c.id, c.connector, c.name, c.config, c.credential_fields, c.rate_limit, c.status,
         c.last_error, c.last_used_at, c.created_at, c.updated_at,
         c.created_by_kind, c.created_by_id, c.updated_by_kind, c.updated_by_id,
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
            created_by: ActorView::read(row, "created_by")?,
            updated_by: ActorView::read(row, "updated_by")?,
        })
    }
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
    let connectable = connectable(&client, workspace.id, &request.connector).await?;
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
    let mut client = client;
    let transaction = client.transaction().await?;
    transaction
        .execute(
            "INSERT INTO connections
                 (id, workspace_id, connector, name, config, credentials, credential_fields, rate_limit, status,
                  created_by_kind, created_by_id, updated_by_kind, updated_by_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $10, $11)",
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
                &workspace.actor.kind().as_str(),
                &workspace.actor.id(),
            ],
        )
        .await?;
    workspace
        .audit(
            &transaction,
            Event::new(AuditAction::ConnectionCreated, "connection", id).with_summary(json!({
                "connector": manifest.key,
                "name": request.name.trim(),
                "config": request.config,
                "credential_fields": fields,
            })),
        )
        .await?;
    let view = view_of(&transaction, workspace.id, id).await?;
    transaction.commit().await?;
    tracing::info!(workspace_id = %workspace.id, connection_id = %id, connector = %manifest.key, "connection created");
    Ok((StatusCode::CREATED, Json(view)))
}

async fn view_of(
    client: &impl GenericClient,
    workspace: WorkspaceId,
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
        .query_opt(&statement, &[&id, &workspace])
        .await?
        .ok_or(ApiError::NotFound("connection"))?;
    ConnectionView::from_row(&row)
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
    let mut items = rows
        .iter()
        .map(ConnectionView::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    if workspace.role == Role::Viewer {
        masking::for_viewer(&client, workspace.id, &mut items).await?;
    }
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
    let mut view = view_of(&client, workspace.id, id).await?;
    if workspace.role == Role::Viewer {
        masking::for_viewer(&client, workspace.id, std::slice::from_mut(&mut view)).await?;
    }
    Ok(Json(view))
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

    let summary = patch_summary(&patch);
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
        let manifest = connectable(&transaction, workspace.id, &connector)
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
                    workspace.id,
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
                 rate_limit = $7, status = $8, last_error = $9, updated_at = now(),
                 updated_by_kind = $10, updated_by_id = $11
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
                &workspace.actor.kind().as_str(),
                &workspace.actor.id(),
            ],
        )
        .await?;
    workspace
        .audit(
            &transaction,
            Event::new(AuditAction::ConnectionUpdated, "connection", id).with_summary(summary),
        )
        .await?;
    let view = view_of(&transaction, workspace.id, id).await?;
    transaction.commit().await?;
    Ok(Json(view))
}

/// What a patch changed, for the audit log: the new name, config and rate limit (none of
/// them secret), and only the names of the credential fields it set or removed.
fn patch_summary(patch: &ConnectionPatch) -> Value {
    let mut summary = serde_json::Map::new();
    if let Some(name) = &patch.name {
        summary.insert("name".to_owned(), json!(name));
    }
    if let Some(config) = &patch.config {
        summary.insert("config".to_owned(), config.clone());
    }
    if let Some(credentials) = &patch.credentials {
        let fields: Vec<&String> = credentials.keys().collect();
        summary.insert("credential_fields".to_owned(), json!(fields));
    }
    if let Some(rate_limit) = &patch.rate_limit {
        summary.insert("rate_limit".to_owned(), rate_limit.clone());
    }
    Value::Object(summary)
}

/// The stored credentials, opened to merge `changes` into them. Credentials that no longer
/// decrypt can only be replaced whole: by a patch that gives every required field.
fn open_for_merge(
    state: &AppState,
    workspace: WorkspaceId,
    id: ConnectionId,
    sealed: Option<&str>,
    manifest: &Manifest,
    changes: &CredentialChanges,
) -> Result<Credentials, ApiError> {
    let Some(sealed) = sealed else {
        return Ok(Credentials::default());
    };
    match Credentials::open(&state.keys, sealed, workspace, id) {
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
    let mut client = state.pool.get().await?;
    let transaction = client.transaction().await?;
    let deleted = transaction
        .query_opt(
            "DELETE FROM connections WHERE id = $1 AND workspace_id = $2 RETURNING connector, name",
            &[&id, &workspace.id],
        )
        .await?
        .ok_or(ApiError::NotFound("connection"))?;
    let connector: String = deleted.try_get("connector")?;
    let name: String = deleted.try_get("name")?;
    workspace
        .audit(
            &transaction,
            Event::new(AuditAction::ConnectionDeleted, "connection", id)
                .with_summary(json!({ "connector": connector, "name": name })),
        )
        .await?;
    transaction.commit().await?;
    Ok(StatusCode::NO_CONTENT)
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
    let stored = load(&client, workspace.id, id)
        .await?
        .ok_or(ApiError::NotFound("connection"))?;
    let manifest = connectable(&client, workspace.id, &stored.connector)
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
    let connection =
        connection_store::usable_connection(&client, workspace.id, id, &manifest).await?;
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
        workspace.id,
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
    let mut client = state.pool.get().await?;
    let transaction = client.transaction().await?;
    transaction
        .execute(
            "UPDATE connections SET status = $3, last_error = $4, last_used_at = now(),
                 credentials = COALESCE($5, credentials), updated_at = now()
             WHERE id = $1 AND workspace_id = $2",
            &[&id, &workspace.id, &status.as_str(), &error, &credentials],
        )
        .await?;
    workspace
        .audit(
            &transaction,
            Event::new(AuditAction::ConnectionTested, "connection", id)
                .with_summary(json!({ "status": status, "error": error })),
        )
        .await?;
    transaction.commit().await?;
    Ok(Json(TestResult { status, error }))
}
