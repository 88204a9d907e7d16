//! Workspaces as people see them: the ones they belong to, creating one, renaming and
//! deleting the one they act in (architecture §11).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use weft_domain::access::Role;
use weft_domain::ids::{UserId, WorkspaceId};

use crate::access::{Person, Workspace};
use crate::audit::{self, Action, Actor, Event};
use crate::auth::stored_role;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::paging::List;
use crate::state::AppState;

pub const MAX_NAME_CHARS: usize = 200;

/// A workspace's name, trimmed, 1 to 200 characters.
pub fn valid_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("`name` must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(name.to_owned())
}

/// A workspace a person belongs to, and their role in it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MyWorkspace {
    pub id: WorkspaceId,
    pub name: String,
    pub role: Role,
}

/// The workspaces of `user`, by name.
pub async fn of_person(
    db: &impl GenericClient,
    user: UserId,
) -> Result<Vec<MyWorkspace>, ApiError> {
    let rows = db
        .query(
            "SELECT w.id, w.name, m.role FROM memberships m JOIN workspaces w ON w.id = m.workspace_id \
             WHERE m.user_id = $1 ORDER BY w.name, w.id",
            &[&user],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(MyWorkspace {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                role: stored_role(row.try_get("role")?)?,
            })
        })
        .collect()
}

/// The workspaces the signed-in person belongs to.
#[utoipa::path(
    get,
    operation_id = "listMyWorkspaces",
    path = "/api/v1/workspaces",
    tag = "workspaces",
    security(("session" = [])),
    responses(
        (status = 200, description = "Their workspaces", body = List<MyWorkspace>),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list_mine(
    State(state): State<AppState>,
    person: Person,
) -> Result<Json<List<MyWorkspace>>, ApiError> {
    let db = state.pool.get().await?;
    Ok(Json(List {
        items: of_person(&db, person.user).await?,
        next_cursor: None,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct WorkspaceName {
    /// 1 to 200 characters.
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkspaceView {
    pub id: WorkspaceId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// The caller's role in it.
    pub role: Role,
}

/// Create a workspace owned by the signed-in person.
#[utoipa::path(
    post,
    operation_id = "createMyWorkspace",
    path = "/api/v1/workspaces",
    tag = "workspaces",
    security(("session" = [])),
    request_body = WorkspaceName,
    responses(
        (status = 201, description = "Created; they are its owner", body = WorkspaceView),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "This instance lets only its operators create workspaces (WEFT_USERS_CREATE_WORKSPACES), or no CSRF token", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    person: Person,
    ApiJson(request): ApiJson<WorkspaceName>,
) -> Result<(StatusCode, Json<WorkspaceView>), ApiError> {
    if !state.users_create_workspaces {
        return Err(ApiError::NotPermitted(
            "this instance lets only its operators create workspaces (WEFT_USERS_CREATE_WORKSPACES=false)",
        ));
    }
    let name = valid_name(&request.name)?;
    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    let view = insert(&tx, &name, Some(person.user)).await?;
    audit::record(
        &tx,
        Some(view.id),
        Some(Actor::User(person.user)),
        &person.client,
        Event::new(Action::WorkspaceCreated, "workspace", view.id)
            .with_summary(json!({ "name": name })),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Inserts a workspace, with `owner` as its owner when a person creates it.
pub async fn insert(
    db: &impl GenericClient,
    name: &str,
    owner: Option<UserId>,
) -> Result<WorkspaceView, tokio_postgres::Error> {
    let id = WorkspaceId::generate();
    let row = db
        .query_one(
            "INSERT INTO workspaces (id, name) VALUES ($1, $2) RETURNING created_at",
            &[&id, &name],
        )
        .await?;
    if let Some(owner) = owner {
        db.execute(
            "INSERT INTO memberships (workspace_id, user_id, role) VALUES ($1, $2, 'owner')",
            &[&id, &owner],
        )
        .await?;
    }
    Ok(WorkspaceView {
        id,
        name: name.to_owned(),
        created_at: row.try_get("created_at")?,
        role: Role::Owner,
    })
}

/// The workspace the caller acts in.
#[utoipa::path(
    get,
    operation_id = "getWorkspace",
    path = "/api/v1/workspace",
    tag = "workspaces",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The workspace and the caller's role in it", body = WorkspaceView),
        (status = 401, description = "Missing or unknown credentials", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    workspace: Workspace,
) -> Result<Json<WorkspaceView>, ApiError> {
    let db = state.pool.get().await?;
    let row = db
        .query_one(
            "SELECT name, created_at FROM workspaces WHERE id = $1",
            &[&workspace.id],
        )
        .await?;
    Ok(Json(WorkspaceView {
        id: workspace.id,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        role: workspace.role,
    }))
}

/// Rename the workspace the caller acts in.
#[utoipa::path(
    patch,
    operation_id = "renameWorkspace",
    path = "/api/v1/workspace",
    tag = "workspaces",
    security(("api_key" = [])),
    request_body = WorkspaceName,
    responses(
        (status = 200, description = "Renamed", body = WorkspaceView),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "Missing or unknown credentials", body = ErrorBody),
        (status = 403, description = "The caller's role is below admin", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn rename(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiJson(request): ApiJson<WorkspaceName>,
) -> Result<Json<WorkspaceView>, ApiError> {
    let name = valid_name(&request.name)?;
    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    let row = tx
        .query_one(
            "WITH old AS (SELECT name FROM workspaces WHERE id = $1 FOR UPDATE) \
             UPDATE workspaces w SET name = $2 FROM old WHERE w.id = $1 \
             RETURNING old.name AS old_name, w.created_at",
            &[&workspace.id, &name],
        )
        .await?;
    let old: String = row.try_get("old_name")?;
    workspace
        .audit(
            &tx,
            Event::new(Action::WorkspaceRenamed, "workspace", workspace.id)
                .with_summary(json!({ "name": { "from": old, "to": name } })),
        )
        .await?;
    tx.commit().await?;
    Ok(Json(WorkspaceView {
        id: workspace.id,
        name,
        created_at: row.try_get("created_at")?,
        role: workspace.role,
    }))
}

/// Runs deleted per transaction when a workspace goes: a workspace with millions of runs
/// must not hold one transaction (and its locks) for minutes.
const DELETE_BATCH: i64 = 1000;

/// Delete the workspace the caller acts in, with everything in it. Its audit events stay,
/// the deletion last among them, until retention removes them.
#[utoipa::path(
    delete,
    operation_id = "deleteWorkspace",
    path = "/api/v1/workspace",
    tag = "workspaces",
    security(("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or unknown credentials", body = ErrorBody),
        (status = 403, description = "Only an owner deletes a workspace", body = ErrorBody),
        (status = 503, description = "Database unavailable; what was deleted stays deleted, call again", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    workspace: Workspace,
) -> Result<StatusCode, ApiError> {
    let mut db = state.pool.get().await?;
    // Nothing starts in it any more: its scenarios stop first, in their own commit.
    db.execute(
        "UPDATE scenarios SET status = 'paused' WHERE workspace_id = $1 AND status = 'active'",
        &[&workspace.id],
    )
    .await?;
    let mut runs = 0;
    loop {
        let deleted = db
            .execute(
                "DELETE FROM runs WHERE id IN \
                 (SELECT id FROM runs WHERE workspace_id = $1 LIMIT $2)",
                &[&workspace.id, &DELETE_BATCH],
            )
            .await?;
        runs += deleted;
        if deleted == 0 {
            break;
        }
    }
    let tx = db.transaction().await?;
    tx.execute("DELETE FROM workspaces WHERE id = $1", &[&workspace.id])
        .await?;
    workspace
        .audit(
            &tx,
            Event::new(Action::WorkspaceDeleted, "workspace", workspace.id)
                .with_summary(json!({ "runs": runs })),
        )
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
