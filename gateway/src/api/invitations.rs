//! Invitations (architecture §11): a single-use, expiring link tied to an email and a
//! role; accepting it makes the person a member, creating their account if they have
//! none.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use weft_domain::access::Role;
use weft_domain::ids::{InvitationId, UserId, WorkspaceId};

use super::members;
use crate::access::Workspace;
use crate::audit::{self, Action, Actor, Client, Event};
use crate::auth::{self, stored_role};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::identity::tokens::{self, Kind};
use crate::identity::users;
use crate::identity::{passwords, sessions};
use crate::mail;
use crate::paging::List;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationView {
    pub id: InvitationId,
    pub email: String,
    pub role: Role,
    pub invited_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, email, role, invited_by, created_at, expires_at";

impl InvitationView {
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, ApiError> {
        Ok(Self {
            id: row.try_get("id")?,
            email: row.try_get("email")?,
            role: stored_role(row.try_get("role")?)?,
            invited_by: row.try_get("invited_by")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewInvitation {
    pub email: String,
    /// At most the inviter's own role.
    pub role: Role,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedInvitation {
    pub invitation: InvitationView,
    /// The link to hand to the person. Shown this once: only its token's hash is stored.
    pub url: String,
    /// Whether it was also mailed to them (with `WEFT_SMTP_URL` set).
    pub mailed: bool,
}

/// Invite a person by email.
#[utoipa::path(
    post,
    operation_id = "createInvitation",
    path = "/api/v1/invitations",
    tag = "workspaces",
    security(("api_key" = [])),
    request_body = NewInvitation,
    responses(
        (status = 201, description = "Invited; the link is shown once", body = IssuedInvitation),
        (status = 400, description = "Not an email address", body = ErrorBody),
        (status = 401, description = "Missing or unknown credentials", body = ErrorBody),
        (status = 403, description = "The caller's role is below admin, or below the role offered", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiJson(request): ApiJson<NewInvitation>,
) -> Result<(StatusCode, Json<IssuedInvitation>), ApiError> {
    let email = users::normalize_email(&request.email)
        .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    if !workspace.role.may_grant(request.role) {
        return Err(ApiError::Forbidden {
            role: workspace.role,
            needed: request.role.max(Role::Admin),
        });
    }
    let token = tokens::generate(Kind::Invitation);
    let lifetime =
        chrono::Duration::from_std(state.invitation_lifetime).unwrap_or(chrono::Duration::MAX);
    let invited_by = match workspace.actor {
        Actor::User(user) => Some(user),
        Actor::ApiKey(_) | Actor::AdminToken => None,
    };
    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO invitations (id, workspace_id, email, role, token_sha256, invited_by, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
            ),
            &[
                &InvitationId::generate(),
                &workspace.id,
                &email,
                &request.role.as_str(),
                &tokens::digest(&token),
                &invited_by,
                &(Utc::now() + lifetime),
            ],
        )
        .await?;
    let invitation = InvitationView::from_row(&row)?;
    let workspace_name: String = tx
        .query_one(
            "SELECT name FROM workspaces WHERE id = $1",
            &[&workspace.id],
        )
        .await?
        .try_get("name")?;
    workspace
        .audit(
            &tx,
            Event::new(Action::InvitationCreated, "invitation", invitation.id)
                .with_summary(json!({ "email": email, "role": request.role })),
        )
        .await?;
    tx.commit().await?;
    let url = format!("{}/invitations/accept#token={token}", state.public_url);
    let mailed = match state.mailer.as_deref() {
        Some(mailer) => mail::sent(
            mailer
                .invitation(
                    &email,
                    &workspace_name,
                    request.role.as_str(),
                    &url,
                    invitation.expires_at,
                )
                .await,
            "invitation",
        ),
        None => false,
    };
    Ok((
        StatusCode::CREATED,
        Json(IssuedInvitation {
            invitation,
            url,
            mailed,
        }),
    ))
}

/// The workspace's invitations not yet accepted, newest first (expired ones included, to
/// see who never came).
#[utoipa::path(
    get,
    operation_id = "listInvitations",
    path = "/api/v1/invitations",
    tag = "workspaces",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Open invitations", body = List<InvitationView>),
        (status = 401, description = "Missing or unknown credentials", body = ErrorBody),
        (status = 403, description = "The caller's role is below admin", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    workspace: Workspace,
) -> Result<Json<List<InvitationView>>, ApiError> {
    let db = state.pool.get().await?;
    let rows = db
        .query(
            &format!(
                "SELECT {COLUMNS} FROM invitations WHERE workspace_id = $1 AND accepted_at IS NULL \
                 ORDER BY id DESC"
            ),
            &[&workspace.id],
        )
        .await?;
    let items = rows
        .iter()
        .map(InvitationView::from_row)
        .collect::<Result<_, _>>()?;
    Ok(Json(List {
        items,
        next_cursor: None,
    }))
}

/// Withdraw an invitation: its link stops working.
#[utoipa::path(
    delete,
    operation_id = "revokeInvitation",
    path = "/api/v1/invitations/{id}",
    tag = "workspaces",
    security(("api_key" = [])),
    params(("id" = uuid::Uuid, Path, description = "Invitation id")),
    responses(
        (status = 204, description = "Withdrawn"),
        (status = 401, description = "Missing or unknown credentials", body = ErrorBody),
        (status = 403, description = "The caller's role is below admin", body = ErrorBody),
        (status = 404, description = "No such open invitation in this workspace", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(id): ApiPath<InvitationId>,
) -> Result<StatusCode, ApiError> {
    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    let row = tx
        .query_opt(
            "DELETE FROM invitations WHERE id = $1 AND workspace_id = $2 AND accepted_at IS NULL \
             RETURNING email",
            &[&id, &workspace.id],
        )
        .await?
        .ok_or(ApiError::NotFound("invitation"))?;
    let email: String = row.try_get("email")?;
    workspace
        .audit(
            &tx,
            Event::new(Action::InvitationRevoked, "invitation", id)
                .with_summary(json!({ "email": email })),
        )
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
pub struct Acceptance {
    /// The token of the invitation link.
    #[schema(value_type = String)]
    pub token: SecretString,
    /// For a person without an account: the name to show.
    pub display_name: Option<String>,
    /// For a person without an account: the password to sign in with.
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Joined {
    pub workspace_id: WorkspaceId,
    pub role: Role,
}

/// Accept an invitation. A person who has an account must be signed in as the invited
/// email; one who has none gives a name and a password, and is signed in.
#[utoipa::path(
    post,
    operation_id = "acceptInvitation",
    path = "/api/v1/invitations/accept",
    tag = "people",
    request_body = Acceptance,
    responses(
        (status = 200, description = "Joined; a new account is also signed in (the session cookie is set)", body = Joined),
        (status = 400, description = "A new account without a name or with a too short password", body = ErrorBody),
        (status = 401, description = "The invited email has an account: sign in as it first", body = ErrorBody),
        (status = 403, description = "Signed in as someone else, or not sent from this site", body = ErrorBody),
        (status = 404, description = "Unknown, used or expired invitation", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn accept(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    ApiJson(acceptance): ApiJson<Acceptance>,
) -> Result<Response, ApiError> {
    use secrecy::ExposeSecret;
    let session_token = state.sessions.token(&headers);
    auth::same_site(&Method::POST, &headers, &state.public_origin, session_token)?;
    let mut db = state.pool.get().await?;
    let signed_in_as = match session_token {
        Some(token) => sessions::find(&db, token, &state.sessions)
            .await?
            .map(|live| live.user),
        None => None,
    };
    let tx = db.transaction().await?;
    let invitation = tx
        .query_opt(
            "SELECT id, workspace_id, email, role FROM invitations \
             WHERE token_sha256 = $1 AND accepted_at IS NULL AND expires_at > now() FOR UPDATE",
            &[&tokens::digest(acceptance.token.expose_secret())],
        )
        .await?
        .ok_or(ApiError::NotFound("invitation"))?;
    let id: InvitationId = invitation.try_get("id")?;
    let workspace: WorkspaceId = invitation.try_get("workspace_id")?;
    let email: String = invitation.try_get("email")?;
    let offered = stored_role(invitation.try_get("role")?)?;
    let existing = users::credentials(&tx, &email).await?;
    let (user, started) = match existing {
        Some(user) if signed_in_as == Some(user.id) => (user.id, None),
        Some(_) if signed_in_as.is_some() => {
            return Err(ApiError::NotPermitted(
                "this invitation is for another email: sign out, then sign in as the invited email",
            ));
        }
        Some(_) => return Err(ApiError::Unauthorized),
        None => {
            state.passwords_allowed()?;
            let name = acceptance
                .display_name
                .as_deref()
                .map(str::trim)
                .filter(|name| !name.is_empty() && name.chars().count() <= 200)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_request",
                        "`display_name` (1 to 200 characters) is needed to create your account",
                    )
                })?
                .to_owned();
            let password = acceptance.password.ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_request",
                    "`password` is needed to create your account",
                )
            })?;
            let hash = passwords::hash(password).await?;
            let user = users::create(&tx, &email, &name, Some(&hash)).await?;
            let started = sessions::start(&tx, user, &state.sessions, &client).await?;
            (user, Some(started))
        }
    };
    let role = members::add(&tx, workspace, user, offered).await?;
    tx.execute(
        "UPDATE invitations SET accepted_at = now() WHERE id = $1",
        &[&id],
    )
    .await?;
    audit::record(
        &tx,
        Some(workspace),
        Some(Actor::User(user)),
        &client,
        Event::new(Action::MemberAdded, "member", user)
            .with_summary(json!({ "email": email, "role": role, "invitation": id })),
    )
    .await?;
    tx.commit().await?;
    let mut response = Json(Joined {
        workspace_id: workspace,
        role,
    })
    .into_response();
    if let Some(started) = started {
        response.headers_mut().insert(
            header::SET_COOKIE,
            state.sessions.set_cookie(&started.token),
        );
    }
    Ok(response)
}
