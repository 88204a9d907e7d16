//! Accounts without an invitation: open sign-up (`WEFT_SIGNUP=open`) and choosing a new
//! password through a reset link (architecture §11).

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::session::signed_in;
use super::workspaces;
use crate::audit::{self, Action, Actor, Client, Event};
use crate::auth;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;
use crate::identity::users;
use crate::identity::{passwords, resets, sessions};
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
pub struct SignUp {
    pub email: String,
    pub display_name: String,
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    /// The name of the workspace they get; "My workspace" if left out.
    pub workspace_name: Option<String>,
}

/// Create an account and a workspace of one's own, and sign in. Only when the instance
/// allows it (`WEFT_SIGNUP=open`); otherwise people join by invitation.
#[utoipa::path(
    post,
    operation_id = "signUp",
    path = "/api/v1/signup",
    tag = "people",
    request_body = SignUp,
    responses(
        (status = 200, description = "Signed up and in; the session cookie is set", body = super::session::SessionView),
        (status = 400, description = "An invalid email, name or password", body = ErrorBody),
        (status = 403, description = "Sign-up is closed on this instance, or not sent from this site", body = ErrorBody),
        (status = 409, description = "The email has an account already", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn sign_up(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    ApiJson(request): ApiJson<SignUp>,
) -> Result<Response, ApiError> {
    auth::same_site(&Method::POST, &headers, &state.public_origin, None)?;
    state.passwords_allowed()?;
    if !state.signup_open {
        return Err(ApiError::NotPermitted(
            "sign-up is closed on this instance: ask a workspace admin for an invitation",
        ));
    }
    let email = users::normalize_email(&request.email)
        .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    let name = request.display_name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::bad_request(
            "invalid_request",
            "`display_name` must be 1 to 200 characters",
        ));
    }
    let workspace_name =
        workspaces::valid_name(request.workspace_name.as_deref().unwrap_or("My workspace"))?;
    let hash = passwords::hash(request.password).await?;
    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    let user = users::create(&tx, &email, &name, Some(&hash)).await?;
    let workspace = workspaces::insert(&tx, &workspace_name, Some(user)).await?;
    let started = sessions::start(&tx, user, &state.sessions, &client).await?;
    audit::record(
        &tx,
        Some(workspace.id),
        Some(Actor::User(user)),
        &client,
        Event::new(Action::UserCreated, "user", user)
            .with_summary(json!({ "email": email, "workspace": workspace.id, "via": "signup" })),
    )
    .await?;
    tx.commit().await?;
    signed_in(&state, &db, user, &started).await
}

#[derive(Deserialize, ToSchema)]
pub struct NewPassword {
    /// The token of the reset link.
    #[schema(value_type = String)]
    pub token: SecretString,
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
}

/// Choose a new password with a reset link. Every session of the person ends; they sign
/// in again with the new password.
#[utoipa::path(
    post,
    operation_id = "resetPassword",
    path = "/api/v1/password-reset",
    tag = "people",
    request_body = NewPassword,
    responses(
        (status = 204, description = "The password is set"),
        (status = 400, description = "The password is too short or too long", body = ErrorBody),
        (status = 403, description = "Not sent from this site", body = ErrorBody),
        (status = 404, description = "Unknown, used or expired reset link", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn reset_password(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    ApiJson(request): ApiJson<NewPassword>,
) -> Result<StatusCode, ApiError> {
    auth::same_site(&Method::POST, &headers, &state.public_origin, None)?;
    let hash = passwords::hash(request.password).await?;
    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    let user = resets::redeem(&tx, request.token.expose_secret(), &hash)
        .await?
        .ok_or(ApiError::NotFound("password reset"))?;
    audit::record(
        &tx,
        None,
        Some(Actor::User(user)),
        &client,
        Event::new(Action::PasswordReset, "user", user),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
