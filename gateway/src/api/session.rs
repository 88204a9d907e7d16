//! Signing in and out, and a person's sessions (architecture §11).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use weft_domain::ids::SessionId;

use super::workspaces::{MyWorkspace, of_person};
use crate::access::Person;
use crate::audit::{self, Action, Actor, Client, Event};
use crate::auth;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::identity::users::{self, UserView};
use crate::identity::{login_throttle, passwords, sessions};
use crate::paging::List;
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
pub struct Login {
    pub email: String,
    #[schema(value_type = String, format = Password)]
    pub password: secrecy::SecretString,
}

/// The signed-in person, what the web app needs to act for them, and where.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub user: UserView,
    /// Send it in `X-Weft-CSRF` with every request that changes something.
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
    /// The workspaces they belong to, with their role in each; name one in
    /// `X-Weft-Workspace` to act in it.
    pub workspaces: Vec<MyWorkspace>,
}

/// Sign in with an email and a password.
///
/// Sets the session cookie. An unknown email, a wrong password and a disabled account get
/// the same answer in the same time; repeated failures for an account or from an address
/// are slowed down (429 with `Retry-After`).
#[utoipa::path(
    post,
    operation_id = "login",
    path = "/api/v1/session",
    tag = "people",
    request_body = Login,
    responses(
        (status = 200, description = "Signed in; the session cookie is set", body = SessionView),
        (status = 401, description = "The email or the password is wrong", body = ErrorBody),
        (status = 403, description = "Not sent from this site (Origin), or this instance signs in with single sign-on only", body = ErrorBody),
        (status = 422, description = "JSON of the wrong shape", body = ErrorBody),
        (status = 429, description = "Too many failed logins; wait `Retry-After` seconds", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    client: Client,
    headers: HeaderMap,
    ApiJson(login): ApiJson<Login>,
) -> Result<Response, ApiError> {
    auth::same_site(
        &axum::http::Method::POST,
        &headers,
        &state.public_origin,
        None,
    )?;
    state.passwords_allowed()?;
    let email = users::normalize_email(&login.email).map_err(|_| ApiError::InvalidCredentials);
    let db = state.pool.get().await?;
    let email = match email {
        Ok(email) => email,
        Err(refused) => {
            passwords::verify(login.password, None).await;
            return Err(refused);
        }
    };
    let subjects = login_throttle::subjects(&email, client.address.as_deref());
    if let Some(wait) = login_throttle::blocked_for(&db, &subjects).await? {
        return Err(ApiError::TooManyAttempts {
            retry_after_seconds: wait.as_secs(),
        });
    }
    let found = users::credentials(&db, &email).await?;
    let stored = found.as_ref().and_then(|user| user.password_hash.clone());
    let matches = passwords::verify(login.password, stored).await;
    let user = found.filter(|user| matches && !user.disabled);
    let Some(user) = user else {
        login_throttle::failed(&db, &subjects).await?;
        audit::record(
            &db,
            None,
            None,
            &client,
            Event {
                action: Action::SessionLoginFailed,
                target_kind: "user",
                target_id: None,
                summary: json!({ "email": email }),
            },
        )
        .await?;
        return Err(ApiError::InvalidCredentials);
    };
    let mut db = db;
    let tx = db.transaction().await?;
    login_throttle::succeeded(&tx, &email).await?;
    let started = sessions::start(&tx, user.id, &state.sessions, &client).await?;
    tx.execute(
        "UPDATE users SET last_login_at = now() WHERE id = $1",
        &[&user.id],
    )
    .await?;
    audit::record(
        &tx,
        None,
        Some(Actor::User(user.id)),
        &client,
        Event::new(Action::SessionLogin, "session", started.id)
            .with_summary(json!({ "method": "password" })),
    )
    .await?;
    tx.commit().await?;
    signed_in(&state, &db, user.id, &started).await
}

/// The answer to a request that signed someone in: their session, and its cookie.
pub(super) async fn signed_in(
    state: &AppState,
    db: &deadpool_postgres::Client,
    user: weft_domain::ids::UserId,
    started: &sessions::Started,
) -> Result<Response, ApiError> {
    let view = view(db, user, &started.token, started.expires_at).await?;
    let mut response = Json(view).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        state.sessions.set_cookie(&started.token),
    );
    Ok(response)
}

async fn view(
    db: &deadpool_postgres::Client,
    user: weft_domain::ids::UserId,
    token: &str,
    expires_at: DateTime<Utc>,
) -> Result<SessionView, ApiError> {
    let row = db
        .query_one(
            &format!("SELECT {} FROM users u WHERE u.id = $1", UserView::COLUMNS),
            &[&user],
        )
        .await?;
    Ok(SessionView {
        user: UserView::from_row(&row)?,
        csrf_token: sessions::csrf_token(token),
        expires_at,
        workspaces: of_person(db, user).await?,
    })
}

/// The signed-in person, their CSRF token and their workspaces.
#[utoipa::path(
    get,
    operation_id = "getSession",
    path = "/api/v1/session",
    tag = "people",
    security(("session" = [])),
    responses(
        (status = 200, description = "The session", body = SessionView),
        (status = 401, description = "Not signed in, or the session ended", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn current(
    State(state): State<AppState>,
    person: Person,
) -> Result<Json<SessionView>, ApiError> {
    let db = state.pool.get().await?;
    let row = db
        .query_one(
            &format!(
                "SELECT {}, s.expires_at AS session_expires_at FROM users u \
                 JOIN sessions s ON s.user_id = u.id WHERE s.id = $1",
                UserView::COLUMNS
            ),
            &[&person.session],
        )
        .await?;
    Ok(Json(SessionView {
        user: UserView::from_row(&row)?,
        csrf_token: person.csrf_token,
        expires_at: row.try_get("session_expires_at")?,
        workspaces: of_person(&db, person.user).await?,
    }))
}

/// Sign out: ends this session and clears its cookie.
#[utoipa::path(
    delete,
    operation_id = "logout",
    path = "/api/v1/session",
    tag = "people",
    security(("session" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "No CSRF token, or not sent from this site", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn logout(State(state): State<AppState>, person: Person) -> Result<Response, ApiError> {
    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    tx.execute("DELETE FROM sessions WHERE id = $1", &[&person.session])
        .await?;
    audit::record(
        &tx,
        None,
        Some(Actor::User(person.user)),
        &person.client,
        Event::new(Action::SessionLogout, "session", person.session),
    )
    .await?;
    tx.commit().await?;
    Ok(signed_out(&state))
}

fn signed_out(state: &AppState) -> Response {
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, state.sessions.clear_cookie())],
    )
        .into_response()
}

/// One of a person's sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionSummary {
    pub id: SessionId,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub client_address: Option<String>,
    pub user_agent: Option<String>,
    /// The session this request came with.
    pub current: bool,
}

/// The signed-in person's live sessions, newest first.
#[utoipa::path(
    get,
    operation_id = "listMySessions",
    path = "/api/v1/me/sessions",
    tag = "people",
    security(("session" = [])),
    responses(
        (status = 200, description = "Their sessions", body = List<SessionSummary>),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list_mine(
    State(state): State<AppState>,
    person: Person,
) -> Result<Json<List<SessionSummary>>, ApiError> {
    let db = state.pool.get().await?;
    let idle = state.sessions.idle.as_secs_f64();
    let rows = db
        .query(
            "SELECT id, created_at, last_seen_at, expires_at, client_address, user_agent \
             FROM sessions WHERE user_id = $1 AND expires_at > now() \
               AND last_seen_at > now() - make_interval(secs => $2) \
             ORDER BY id DESC",
            &[&person.user, &idle],
        )
        .await?;
    let items = rows
        .iter()
        .map(|row| {
            let id: SessionId = row.try_get("id")?;
            Ok(SessionSummary {
                id,
                created_at: row.try_get("created_at")?,
                last_seen_at: row.try_get("last_seen_at")?,
                expires_at: row.try_get("expires_at")?,
                client_address: row.try_get("client_address")?,
                user_agent: row.try_get("user_agent")?,
                current: id == person.session,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    Ok(Json(List {
        items,
        next_cursor: None,
    }))
}

/// Log out everywhere: ends every session of the signed-in person, this one included.
#[utoipa::path(
    delete,
    operation_id = "revokeMySessions",
    path = "/api/v1/me/sessions",
    tag = "people",
    security(("session" = [])),
    responses(
        (status = 204, description = "Every session ended"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "No CSRF token, or not sent from this site", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn revoke_all(
    State(state): State<AppState>,
    person: Person,
) -> Result<Response, ApiError> {
    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    let ended = tx
        .execute("DELETE FROM sessions WHERE user_id = $1", &[&person.user])
        .await?;
    audit::record(
        &tx,
        None,
        Some(Actor::User(person.user)),
        &person.client,
        Event::new(Action::SessionRevoked, "user", person.user)
            .with_summary(json!({ "sessions": ended, "everywhere": true })),
    )
    .await?;
    tx.commit().await?;
    Ok(signed_out(&state))
}

/// End one of the signed-in person's sessions (a lost laptop).
#[utoipa::path(
    delete,
    operation_id = "revokeMySession",
    path = "/api/v1/me/sessions/{id}",
    tag = "people",
    security(("session" = [])),
    params(("id" = uuid::Uuid, Path, description = "Session id")),
    responses(
        (status = 204, description = "The session ended"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "No CSRF token, or not sent from this site", body = ErrorBody),
        (status = 404, description = "No such session of theirs", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    person: Person,
    ApiPath(id): ApiPath<SessionId>,
) -> Result<StatusCode, ApiError> {
    let mut db = state.pool.get().await?;
    let tx = db.transaction().await?;
    let ended = tx
        .execute(
            "DELETE FROM sessions WHERE id = $1 AND user_id = $2",
            &[&id, &person.user],
        )
        .await?;
    if ended == 0 {
        return Err(ApiError::NotFound("session"));
    }
    audit::record(
        &tx,
        None,
        Some(Actor::User(person.user)),
        &person.client,
        Event::new(Action::SessionRevoked, "session", id),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
