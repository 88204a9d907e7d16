//! A workspace's API keys (architecture §11): many, each named, with a role and an
//! optional expiry; shown once, stored hashed; revoked or rotated.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use weft_domain::access::Role;
use weft_domain::ids::{ApiKeyId, UserId, WorkspaceId};

use crate::access::Workspace;
use crate::audit::{Action, Actor, Event};
use crate::auth::stored_role;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::identity::tokens::{self, Kind};
use crate::paging::List;
use crate::state::AppState;

const MAX_NAME_CHARS: usize = 200;

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: ApiKeyId,
    pub name: String,
    pub role: Role,
    /// The key's first characters, to recognise it; not enough to use it.
    pub prefix: String,
    /// The person who created it; null for keys issued with the admin token.
    pub created_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, name, role, prefix, created_by, created_at, expires_at, last_used_at";

impl ApiKeyView {
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, ApiError> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            role: stored_role(row.try_get("role")?)?,
            prefix: row.try_get("prefix")?,
            created_by: row.try_get("created_by")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            last_used_at: row.try_get("last_used_at")?,
        })
    }
}

/// The workspace's keys that still work (not revoked), newest first.
#[utoipa::path(
    get,
    operation_id = "listApiKeys",
    path = "/api/v1/api-keys",
    tag = "workspaces",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Its keys", body = List<ApiKeyView>),
        (status = 401, description = "Missing or unknown credentials", body = ErrorBody),
        (status = 403, description = "The caller's role is below admin", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    workspace: Workspace,
) -> Result<Json<List<ApiKeyView>>, ApiError> {
    let db = state.pool.get().await?;
    let rows = db
        .query(
            &format!(
                "SELECT {COLUMNS} FROM api_keys WHERE workspace_id = $1 AND revoked_at IS NULL \
                 ORDER BY id DESC"
            ),
            &[&workspace.id],
        )
        .await?;
    let items = rows
        .iter()
        .map(ApiKeyView::from_row)
        .collect::<Result<_, _>>()?;
    Ok(Json(List {
        items,
        next_cursor: None,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewApiKey {
    /// 1 to 200 characters: what the key is for.
    pub name: String,
    /// At most the caller's own role.
    pub role: Role,
    /// When it stops working; never if left out.
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedApiKey {
    pub key: ApiKeyView,
    /// The key itself. Shown this once: only its hash is stored.
    pub secret: String,
}

/// Issue an API key.
#[utoipa::path(
    post,
    operation_id = "createApiKey",
    path = "/api/v1/api-keys",
    tag = "workspaces",
    security(("api_key" = [])),
    request_body = NewApiKey,
    responses(
        (status = 201, description = "Issued; the secret is shown once", body = IssuedApiKey),
        (status = 400, description = "Invalid name or an expiry in the past", body = ErrorBody),
        (status = 401, description = "Missing or unknown credentials", body = ErrorBody),
        (status = 403, description = "The caller's role is below admin, or below the key's", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiJson(request): ApiJson<NewApiKey>,
) -> Result<(StatusCode, Json<IssuedApiKey>), ApiError> {
    let name = request.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("`name` must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    if request.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "`expires_at` must be in the future",
        ));
    }
    if !workspace.role.may_grant(request.role) {
        return Err(ApiError::Forbidden {
            role: workspace.role,
            needed: request.role.max(Role::Admin),
        });
    }
    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    let created_by = creator(&tx, &workspace).await?;
    let issued = issue(
        &tx,
        workspace.id,
        &name,
        request.role,
        created_by,
        request.expires_at,
    )
    .await?;
    workspace
        .audit(
            &tx,
            Event::new(Action::ApiKeyCreated, "api_key", issued.key.id).with_summary(json!({
                "name": name,
                "role": request.role,
                "expires_at": request.expires_at,
            })),
        )
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

/// The person a key is made on behalf of: the signed-in person, or the creator of the key
/// that makes it (so a key cannot outlive its maker's membership by minting another).
async fn creator(
    db: &impl GenericClient,
    workspace: &Workspace,
) -> Result<Option<UserId>, ApiError> {
    match workspace.actor {
        Actor::User(user) => Ok(Some(user)),
        Actor::ApiKey(key) => {
            let row = db
                .query_one("SELECT created_by FROM api_keys WHERE id = $1", &[&key])
                .await?;
            Ok(row.try_get("created_by")?)
        }
        Actor::AdminToken => Ok(None),
    }
}

/// Stores a new key and returns it with its secret.
pub async fn issue(
    db: &impl GenericClient,
    workspace: WorkspaceId,
    name: &str,
    role: Role,
    created_by: Option<UserId>,
    expires_at: Option<DateTime<Utc>>,
) -> Result<IssuedApiKey, ApiError> {
    let secret = tokens::generate(Kind::ApiKey);
    let row = db
        .query_one(
            &format!(
                "INSERT INTO api_keys (id, workspace_id, token_sha256, name, role, prefix, created_by, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
            ),
            &[
                &ApiKeyId::generate(),
                &workspace,
                &tokens::digest(&secret),
                &name,
                &role.as_str(),
                &tokens::display_prefix(&secret),
                &created_by,
                &expires_at,
            ],
        )
        .await?;
    Ok(IssuedApiKey {
        key: ApiKeyView::from_row(&row)?,
        secret,
    })
}

/// Revoke a key: it stops working at once.
#[utoipa::path(
    delete,
    operation_id = "revokeApiKey",
    path = "/api/v1/api-keys/{id}",
    tag = "workspaces",
    security(("api_key" = [])),
    params(("id" = uuid::Uuid, Path, description = "API key id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Missing or unknown credentials", body = ErrorBody),
        (status = 403, description = "The caller's role is below admin, or below the key's", body = ErrorBody),
        (status = 404, description = "No such key in this workspace", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(id): ApiPath<ApiKeyId>,
) -> Result<StatusCode, ApiError> {
    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    let key = manageable(&tx, &workspace, id).await?;
    tx.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1",
        &[&id],
    )
    .await?;
    workspace
        .audit(
            &tx,
            Event::new(Action::ApiKeyRevoked, "api_key", id)
                .with_summary(json!({ "name": key.name })),
        )
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rotate a key: a new secret for the same key (name, role, expiry kept); the old secret
/// stops working at once.
#[utoipa::path(
    post,
    operation_id = "rotateApiKey",
    path = "/api/v1/api-keys/{id}/rotate",
    tag = "workspaces",
    security(("api_key" = [])),
    params(("id" = uuid::Uuid, Path, description = "API key id")),
    responses(
        (status = 200, description = "Rotated; the new secret is shown once", body = IssuedApiKey),
        (status = 401, description = "Missing or unknown credentials", body = ErrorBody),
        (status = 403, description = "The caller's role is below admin, or below the key's", body = ErrorBody),
        (status = 404, description = "No such key in this workspace", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn rotate(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(id): ApiPath<ApiKeyId>,
) -> Result<Json<IssuedApiKey>, ApiError> {
    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    manageable(&tx, &workspace, id).await?;
    let secret = tokens::generate(Kind::ApiKey);
    let row = tx
        .query_one(
            &format!(
                "UPDATE api_keys SET token_sha256 = $2, prefix = $3 WHERE id = $1 RETURNING {COLUMNS}"
            ),
            &[&id, &tokens::digest(&secret), &tokens::display_prefix(&secret)],
        )
        .await?;
    let key = ApiKeyView::from_row(&row)?;
    workspace
        .audit(
            &tx,
            Event::new(Action::ApiKeyRotated, "api_key", id)
                .with_summary(json!({ "name": key.name })),
        )
        .await?;
    tx.commit().await?;
    Ok(Json(IssuedApiKey { key, secret }))
}

/// A live key of this workspace, locked, that the caller's role may manage.
async fn manageable(
    db: &impl GenericClient,
    workspace: &Workspace,
    id: ApiKeyId,
) -> Result<ApiKeyView, ApiError> {
    let row = db
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM api_keys WHERE id = $1 AND workspace_id = $2 \
                 AND revoked_at IS NULL FOR UPDATE"
            ),
            &[&id, &workspace.id],
        )
        .await?
        .ok_or(ApiError::NotFound("API key"))?;
    let key = ApiKeyView::from_row(&row)?;
    if !workspace.role.may_grant(key.role) {
        return Err(ApiError::Forbidden {
            role: workspace.role,
            needed: key.role.max(Role::Admin),
        });
    }
    Ok(key)
}
