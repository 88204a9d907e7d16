//! The admin API: creating workspaces, guarded by the admin token.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use weft_domain::access::Role;
use weft_domain::ids::WorkspaceId;

use super::api_keys;
use super::workspaces::{insert, valid_name};
use crate::access::Admin;
use crate::audit::{self, Action, Actor, Event};
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewWorkspace {
    /// 1 to 200 characters.
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWorkspace {
    pub id: WorkspaceId,
    pub name: String,
    /// The workspace's API key. Shown this once: only its hash is stored.
    pub api_key: String,
}

/// Create a workspace and its first API key.
#[utoipa::path(
    post,
    operation_id = "createWorkspace",
    path = "/api/v1/admin/workspaces",
    tag = "admin",
    security(("admin_token" = [])),
    request_body = NewWorkspace,
    responses(
        (status = 201, description = "Workspace created", body = CreatedWorkspace),
        (status = 400, description = "Invalid name or malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 403, description = "Admin API disabled (no WEFT_ADMIN_TOKEN)", body = ErrorBody),
        (status = 413, description = "Body over the API body limit", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "JSON of the wrong shape", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn create_workspace(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(request): ApiJson<NewWorkspace>,
) -> Result<(StatusCode, Json<CreatedWorkspace>), ApiError> {
    let name = valid_name(&request.name)?;
    let mut client = state.pool.get().await?;
    let transaction = client.transaction().await?;
    let workspace = insert(&transaction, &name, None).await?;
    let issued = api_keys::issue(
        &transaction,
        workspace.id,
        "Admin-issued key",
        Role::Owner,
        None,
        None,
    )
    .await?;
    audit::record(
        &transaction,
        Some(workspace.id),
        Some(Actor::AdminToken),
        &admin.client,
        Event::new(Action::WorkspaceCreated, "workspace", workspace.id)
            .with_summary(json!({ "name": name, "api_key": issued.key.id })),
    )
    .await?;
    transaction.commit().await?;

    tracing::info!(workspace_id = %workspace.id, "workspace created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedWorkspace {
            id: workspace.id,
            name,
            api_key: issued.secret,
        }),
    ))
}
