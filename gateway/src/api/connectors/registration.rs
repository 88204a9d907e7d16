//! A workspace's own connectors registered, updated and deleted: each save one immutable
//! version.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use deadpool_postgres::GenericClient;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;
use weft_domain::manifest::{self, InvalidManifest, Manifest};

use super::view::ConnectorView;
use crate::access::Workspace;
use crate::audit::{Action, Event};
use crate::catalog::{
    Connector, is_builtin_key, registered_columns, registered_from, registered_from_row,
};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;

/// A connector manifest (DESIGN §5): `key`, `name`, `version`, `base_url`, `auth`,
/// `connection_schema`, `test`, `actions`, `triggers`. Checked as a whole when saved.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object)]
pub struct ConnectorManifest(pub Value);

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
            "INSERT INTO connectors (workspace_id, key, current_version,
                 created_by_kind, created_by_id, updated_by_kind, updated_by_id)
             VALUES ($1, $2, 1, $3, $4, $3, $4)
             ON CONFLICT (workspace_id, key) DO UPDATE
             SET current_version = connectors.current_version + 1, deleted_at = NULL,
                 created_at = now(), updated_at = now(),
                 created_by_kind = $3, created_by_id = $4, updated_by_kind = $3, updated_by_id = $4
             WHERE connectors.deleted_at IS NOT NULL
             RETURNING current_version",
            &[&workspace.id, &manifest.key, &workspace.actor.kind().as_str(), &workspace.actor.id()],
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
    let view = store_version(&transaction, &workspace, &manifest, &source, version).await?;
    workspace
        .audit(
            &transaction,
            Event::new(Action::ConnectorCreated, "connector", &manifest.key)
                .with_summary(json!({ "version": version, "name": manifest.name })),
        )
        .await?;
    transaction.commit().await?;
    tracing::info!(workspace_id = %workspace.id, connector = %manifest.key, version, "connector registered");
    Ok((StatusCode::CREATED, Json(view)))
}

/// Writes one immutable version and answers with the connector as it now is.
async fn store_version(
    client: &impl GenericClient,
    caller: &Workspace,
    manifest: &Manifest,
    source: &Value,
    version: i32,
) -> Result<ConnectorView, ApiError> {
    let workspace = caller.id;
    client
        .execute(
            "INSERT INTO connector_versions (id, workspace_id, key, version, manifest, created_by_kind, created_by_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &Uuid::now_v7(),
                &workspace,
                &manifest.key,
                &version,
                source,
                &caller.actor.kind().as_str(),
                &caller.actor.id(),
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
            &[&workspace, &manifest.key],
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
            "UPDATE connectors SET current_version = current_version + 1, updated_at = now(),
                 updated_by_kind = $3, updated_by_id = $4
             WHERE workspace_id = $1 AND key = $2 AND deleted_at IS NULL
             RETURNING current_version",
            &[
                &workspace.id,
                &key,
                &workspace.actor.kind().as_str(),
                &workspace.actor.id(),
            ],
        )
        .await?
        .ok_or(ApiError::NotFound("connector"))?
        .try_get("current_version")?;
    let view = store_version(&transaction, &workspace, &manifest, &source, version).await?;
    workspace
        .audit(
            &transaction,
            Event::new(Action::ConnectorUpdated, "connector", &key)
                .with_summary(json!({ "version": version })),
        )
        .await?;
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
    let mut client = state.pool.get().await?;
    let transaction = client.transaction().await?;
    let deleted = transaction
        .execute(
            "UPDATE connectors SET deleted_at = now(), updated_at = now()
             WHERE workspace_id = $1 AND key = $2 AND deleted_at IS NULL",
            &[&workspace.id, &key],
        )
        .await?;
    if deleted == 0 {
        return Err(ApiError::NotFound("connector"));
    }
    workspace
        .audit(
            &transaction,
            Event::new(Action::ConnectorDeleted, "connector", &key),
        )
        .await?;
    transaction.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
