//! The admin API: creating workspaces, guarded by the admin token.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use weft_domain::ids::WorkspaceId;

use crate::auth::{Admin, generate_api_key, hash_api_key};
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::state::AppState;

const MAX_NAME_CHARS: usize = 200;

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
    _admin: Admin,
    ApiJson(request): ApiJson<NewWorkspace>,
) -> Result<(StatusCode, Json<CreatedWorkspace>), ApiError> {
    let name = request.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("`name` must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    let id = WorkspaceId::generate();
    let api_key = generate_api_key();

    let mut client = state.pool.get().await?;
    let transaction = client.transaction().await?;
    transaction
        .execute(
            "INSERT INTO workspaces (id, name) VALUES ($1, $2)",
            &[&id, &name],
        )
        .await?;
    transaction
        .execute(
            "INSERT INTO api_keys (id, workspace_id, token_sha256) VALUES ($1, $2, $3)",
            &[&Uuid::now_v7(), &id, &hash_api_key(&api_key)],
        )
        .await?;
    transaction.commit().await?;

    tracing::info!(workspace_id = %id, "workspace created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedWorkspace { id, name, api_key }),
    ))
}
