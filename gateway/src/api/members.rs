//! The people of a workspace and their roles (architecture §11). People join by
//! invitation ([`super::invitations`]).

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

use crate::access::{Workspace, membership};
use crate::audit::{Action, Actor, Event};
use crate::auth::stored_role;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::identity::resets;
use crate::identity::users::{self, UserView};
use crate::mail;
use crate::paging::List;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Member {
    pub user: UserView,
    pub role: Role,
    pub joined_at: DateTime<Utc>,
}

/// The workspace's members, by email.
#[utoipa::path(
    get,
    operation_id = "listMembers",
    path = "/api/v1/members",
    tag = "workspaces",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Its members", body = List<Member>),
        (status = 401, description = "Missing or unknown credentials", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    workspace: Workspace,
) -> Result<Json<List<Member>>, ApiError> {
    let db = state.pool.get().await?;
    let rows = db
        .query(
            &format!(
                "SELECT {}, m.role, m.created_at AS joined_at FROM memberships m \
                 JOIN users u ON u.id = m.user_id WHERE m.workspace_id = $1 ORDER BY u.email",
                UserView::COLUMNS
            ),
            &[&workspace.id],
        )
        .await?;
    let items = rows
        .iter()
        .map(|row| {
            Ok(Member {
                user: UserView::from_row(row)?,
                role: stored_role(row.try_get("role")?)?,
                joined_at: row.try_get("joined_at")?,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Json(List {
        items,
        next_cursor: None,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RoleChange {
    pub role: Role,
}

/// Change a member's role. Admins manage everyone below owner; only an owner makes or
/// unmakes owners, and the last owner stays.
#[utoipa::path(
    patch,
    operation_id = "changeMemberRole",
    path = "/api/v1/members/{user_id}",
    tag = "workspaces",
    security(("api_key" = [])),
    params(("user_id" = uuid::Uuid, Path, description = "The member's user id")),
    request_body = RoleChange,
    responses(
        (status = 204, description = "Changed"),
        (status = 401, description = "Missing or unknown credentials", body = ErrorBody),
        (status = 403, description = "The caller may not grant or take away this role", body = ErrorBody),
        (status = 404, description = "No such member", body = ErrorBody),
        (status = 409, description = "It would leave the workspace without an owner", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn change_role(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(user): ApiPath<UserId>,
    ApiJson(change): ApiJson<RoleChange>,
) -> Result<StatusCode, ApiError> {
    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    let current = locked_member(&tx, &workspace, user).await?;
    if !workspace.role.may_grant(change.role) {
        return Err(ApiError::Forbidden {
            role: workspace.role,
            needed: change.role.max(Role::Admin),
        });
    }
    if current == Role::Owner && change.role != Role::Owner {
        keep_an_owner(&tx, workspace.id).await?;
    }
    tx.execute(
        "UPDATE memberships SET role = $3 WHERE workspace_id = $1 AND user_id = $2",
        &[&workspace.id, &user, &change.role.as_str()],
    )
    .await?;
    workspace
        .audit(
            &tx,
            Event::new(Action::MemberRoleChanged, "member", user)
                .with_summary(json!({ "role": { "from": current, "to": change.role } })),
        )
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a member from the workspace: their sessions stay (they may belong elsewhere),
/// their keys for this workspace stop working.
#[utoipa::path(
    delete,
    operation_id = "removeMember",
    path = "/api/v1/members/{user_id}",
    tag = "workspaces",
    security(("api_key" = [])),
    params(("user_id" = uuid::Uuid, Path, description = "The member's user id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Missing or unknown credentials", body = ErrorBody),
        (status = 403, description = "The caller may not remove a member of this role", body = ErrorBody),
        (status = 404, description = "No such member", body = ErrorBody),
        (status = 409, description = "It would leave the workspace without an owner", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(user): ApiPath<UserId>,
) -> Result<StatusCode, ApiError> {
    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    let current = locked_member(&tx, &workspace, user).await?;
    if current == Role::Owner {
        keep_an_owner(&tx, workspace.id).await?;
    }
    tx.execute(
        "DELETE FROM memberships WHERE workspace_id = $1 AND user_id = $2",
        &[&workspace.id, &user],
    )
    .await?;
    workspace
        .audit(
            &tx,
            Event::new(Action::MemberRemoved, "member", user)
                .with_summary(json!({ "role": current })),
        )
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedReset {
    /// The link to hand to the person. Shown this once.
    pub url: String,
    pub expires_at: DateTime<Utc>,
    /// Whether it was also mailed to them (with `WEFT_SMTP_URL` set).
    pub mailed: bool,
}

/// Issue a password reset link for a member who belongs to no other workspace (for anyone
/// else the operator runs `weft-gateway reset-password`: an owner of one workspace must
/// not take over an account that holds others).
#[utoipa::path(
    post,
    operation_id = "issuePasswordReset",
    path = "/api/v1/members/{user_id}/password-reset",
    tag = "workspaces",
    security(("api_key" = [])),
    params(("user_id" = uuid::Uuid, Path, description = "The member's user id")),
    responses(
        (status = 201, description = "Issued; the link is shown once", body = IssuedReset),
        (status = 401, description = "Missing or unknown credentials", body = ErrorBody),
        (status = 403, description = "Only an owner issues reset links", body = ErrorBody),
        (status = 404, description = "No such member", body = ErrorBody),
        (status = 409, description = "They belong to other workspaces too", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn issue_password_reset(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(user): ApiPath<UserId>,
) -> Result<(StatusCode, Json<IssuedReset>), ApiError> {
    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    locked_member(&tx, &workspace, user).await?;
    only_here(
        &tx,
        workspace.id,
        user,
        "issue a reset with `weft-gateway reset-password`",
    )
    .await?;
    let issued = resets::issue(&tx, user).await?;
    workspace
        .audit(
            &tx,
            Event::new(Action::PasswordResetIssued, "member", user)
                .with_summary(json!({ "expires_at": issued.expires_at })),
        )
        .await?;
    let email: String = tx
        .query_one("SELECT email FROM users WHERE id = $1", &[&user])
        .await?
        .try_get("email")?;
    tx.commit().await?;
    let url = resets::link(&state.public_url, &issued.token);
    let mailed = match state.mailer.as_deref() {
        Some(mailer) => mail::sent(
            mailer.password_reset(&email, &url, issued.expires_at).await,
            "password reset",
        ),
        None => false,
    };
    Ok((
        StatusCode::CREATED,
        Json(IssuedReset {
            url,
            expires_at: issued.expires_at,
            mailed,
        }),
    ))
}

/// Refuses to act on a whole account (its password, whether it may sign in) for a person
/// who also belongs to other workspaces: one owner must not take over or lock out an
/// account that holds another's work. The operator's command does it instead.
async fn only_here(
    db: &impl GenericClient,
    workspace: WorkspaceId,
    user: UserId,
    instead: &str,
) -> Result<(), ApiError> {
    let elsewhere: i64 = db
        .query_one(
            "SELECT count(*) FROM memberships WHERE user_id = $1 AND workspace_id <> $2",
            &[&user, &workspace],
        )
        .await?
        .try_get(0)?;
    if elsewhere > 0 {
        return Err(ApiError::Conflict {
            code: "member_elsewhere",
            message: format!(
                "they belong to other workspaces too: the instance operator can {instead}"
            ),
        });
    }
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct Access {
    /// `true` disables the account at once (its sessions end, its keys stop, it cannot sign
    /// in); `false` enables it again.
    pub disabled: bool,
}

/// Disable or enable a member's account, for a member who belongs to no other workspace
/// (for anyone else the operator runs `weft-gateway disable-user`).
#[utoipa::path(
    put,
    operation_id = "setMemberDisabled",
    path = "/api/v1/members/{user_id}/disabled",
    tag = "workspaces",
    security(("api_key" = [])),
    params(("user_id" = uuid::Uuid, Path, description = "The member's user id")),
    request_body = Access,
    responses(
        (status = 204, description = "Done"),
        (status = 401, description = "Missing or unknown credentials", body = ErrorBody),
        (status = 403, description = "Only an owner disables accounts", body = ErrorBody),
        (status = 404, description = "No such member", body = ErrorBody),
        (status = 409, description = "They belong to other workspaces too, or they are the caller", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn set_disabled(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(user): ApiPath<UserId>,
    ApiJson(access): ApiJson<Access>,
) -> Result<StatusCode, ApiError> {
    if workspace.actor == Actor::User(user) {
        return Err(ApiError::Conflict {
            code: "own_account",
            message: "you cannot disable your own account".into(),
        });
    }
    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    locked_member(&tx, &workspace, user).await?;
    only_here(&tx, workspace.id, user, "run `weft-gateway disable-user`").await?;
    users::set_disabled(&tx, user, access.disabled).await?;
    let action = if access.disabled {
        Action::UserDisabled
    } else {
        Action::UserEnabled
    };
    workspace
        .audit(&tx, Event::new(action, "member", user))
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A member's role, their row locked; the caller must outrank or equal it.
async fn locked_member(
    db: &impl GenericClient,
    workspace: &Workspace,
    user: UserId,
) -> Result<Role, ApiError> {
    let row = db
        .query_opt(
            "SELECT role FROM memberships WHERE workspace_id = $1 AND user_id = $2 FOR UPDATE",
            &[&workspace.id, &user],
        )
        .await?
        .ok_or(ApiError::NotFound("member"))?;
    let current = stored_role(row.try_get("role")?)?;
    if !workspace.role.may_grant(current) {
        return Err(ApiError::Forbidden {
            role: workspace.role,
            needed: current.max(Role::Admin),
        });
    }
    Ok(current)
}

/// Refuses to take away the last owner (their rows locked, so two owners demoting each
/// other at once cannot both succeed).
async fn keep_an_owner(db: &impl GenericClient, workspace: WorkspaceId) -> Result<(), ApiError> {
    let owners = db
        .query(
            "SELECT user_id FROM memberships WHERE workspace_id = $1 AND role = 'owner' FOR UPDATE",
            &[&workspace],
        )
        .await?;
    if owners.len() <= 1 {
        return Err(ApiError::Conflict {
            code: "last_owner",
            message: "a workspace keeps at least one owner: make someone else owner first".into(),
        });
    }
    Ok(())
}

/// Adds `user` to `workspace` with `role` (an accepted invitation); a member already
/// keeps the higher of the two roles.
pub async fn add(
    db: &impl GenericClient,
    workspace: WorkspaceId,
    user: UserId,
    role: Role,
) -> Result<Role, ApiError> {
    if let Some(existing) = membership(db, workspace, user).await? {
        let kept = existing.max(role);
        db.execute(
            "UPDATE memberships SET role = $3 WHERE workspace_id = $1 AND user_id = $2",
            &[&workspace, &user, &kept.as_str()],
        )
        .await?;
        return Ok(kept);
    }
    db.execute(
        "INSERT INTO memberships (workspace_id, user_id, role) VALUES ($1, $2, $3)",
        &[&workspace, &user, &role.as_str()],
    )
    .await?;
    Ok(role)
}
