//! Signing in with the instance's OpenID provider (architecture §11), and the ways this
//! instance offers to sign in at all.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use deadpool_postgres::GenericClient;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use weft_domain::ids::UserId;

use super::members;
use crate::audit::{self, Action, Actor, Client, Event};
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;
use crate::identity::sessions;
use crate::identity::sso::{Identity, Sso, SsoError};
use crate::identity::users;
use crate::state::AppState;

/// How long a person has between leaving for the provider and coming back.
const FLOW_LIFETIME_MINUTES: i32 = 10;

#[derive(Debug, Serialize, ToSchema)]
pub struct SignInMethods {
    /// Email and password (`POST /api/v1/session`).
    pub password: bool,
    /// Single sign-on (`GET /api/v1/sso/start`).
    pub sso: bool,
    /// Open sign-up (`POST /api/v1/signup`).
    pub signup: bool,
}

/// How people sign in to this instance: what the log-in page offers.
#[utoipa::path(
    get,
    operation_id = "getSignInMethods",
    path = "/api/v1/sign-in-methods",
    tag = "people",
    responses((status = 200, description = "The ways to sign in", body = SignInMethods))
)]
pub async fn methods(State(state): State<AppState>) -> Json<SignInMethods> {
    let sso_only = state.sso.as_ref().is_some_and(|sso| sso.settings.only);
    Json(SignInMethods {
        password: !sso_only,
        sso: state.sso.is_some(),
        signup: state.signup_open && !sso_only,
    })
}

fn configured(state: &AppState) -> Result<&Sso, ApiError> {
    state.sso.as_deref().ok_or(ApiError::NotFound(
        "single sign-on (WEFT_OIDC_ISSUER is not set)",
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StartQuery {
    /// A path of this site to land on once signed in (default `/`).
    pub return_to: Option<String>,
}

/// Start signing in with the OpenID provider: redirects there.
#[utoipa::path(
    get,
    operation_id = "startSso",
    path = "/api/v1/sso/start",
    tag = "people",
    params(StartQuery),
    responses(
        (status = 302, description = "To the provider's sign-in page"),
        (status = 400, description = "`return_to` is not a path of this site", body = ErrorBody),
        (status = 404, description = "Single sign-on is not configured", body = ErrorBody),
        (status = 502, description = "The provider cannot be reached", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn start(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<StartQuery>,
) -> Result<Response, ApiError> {
    let sso = configured(&state)?;
    let return_to = query.return_to.unwrap_or_else(|| "/".to_owned());
    // Only a path of this site: an open redirect would hand a signed-in person to anyone.
    let local = return_to.starts_with('/')
        && !return_to.starts_with("//")
        && !return_to.contains(['\\', '\r', '\n']);
    if !local {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`return_to` must be a path of this site, like /scenarios",
        ));
    }
    let begun = sso.begin().await.map_err(provider_error)?;
    let verifier = state.keys.encrypt(
        begun.verifier.expose_secret().as_bytes(),
        &verifier_aad(&begun.state),
    );
    let db = state.pool.get().await?;
    db.execute("DELETE FROM sso_states WHERE expires_at < now()", &[])
        .await?;
    db.execute(
        "INSERT INTO sso_states (state, nonce, verifier, return_to, expires_at) \
         VALUES ($1, $2, $3, $4, now() + make_interval(mins => $5))",
        &[
            &begun.state,
            &begun.nonce,
            &verifier,
            &return_to,
            &FLOW_LIFETIME_MINUTES,
        ],
    )
    .await?;
    Ok((StatusCode::FOUND, [(header::LOCATION, begun.url)]).into_response())
}

fn verifier_aad(state: &str) -> String {
    format!("weft:sso-state:{state}")
}

fn provider_error(error: SsoError) -> ApiError {
    match error {
        SsoError::InvalidToken(_) | SsoError::NoIdToken => {
            ApiError::bad_request("invalid_id_token", error.to_string())
        }
        SsoError::Settings(_) => ApiError::Internal(Box::new(error)),
        SsoError::Discovery { .. } | SsoError::Exchange(_) => ApiError::BadGateway {
            code: "sso_provider_error",
            message: error.to_string(),
        },
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    /// Set by the provider when the person or the provider refused.
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// Where the provider sends people back: checks what it says, signs the person in and
/// redirects to where they were going.
#[utoipa::path(
    get,
    operation_id = "completeSso",
    path = "/api/v1/sso/callback",
    tag = "people",
    params(CallbackQuery),
    responses(
        (status = 302, description = "Signed in (the session cookie is set); to `return_to`"),
        (status = 400, description = "Unknown, used or expired `state`, the provider refused, or the ID token is not valid", body = ErrorBody),
        (status = 403, description = "No account for this identity, or the account is disabled", body = ErrorBody),
        (status = 404, description = "Single sign-on is not configured", body = ErrorBody),
        (status = 502, description = "The provider cannot be reached or refused the code", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn callback(
    State(state): State<AppState>,
    client: Client,
    ApiQuery(query): ApiQuery<CallbackQuery>,
) -> Result<Response, ApiError> {
    let sso = configured(&state)?;
    let flow_state = query.state.as_deref().unwrap_or_default();
    let mut db = state.pool.get().await?;
    // Taken and deleted at once: a state works for one callback.
    let flow = db
        .query_opt(
            "DELETE FROM sso_states WHERE state = $1 \
             RETURNING nonce, verifier, return_to, expires_at < now() AS expired",
            &[&flow_state],
        )
        .await?
        .filter(|row| !row.get::<_, bool>("expired"))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_sso_state",
                "unknown, used or expired sign-in: start again from the log-in page",
            )
        })?;
    if let Some(error) = query.error.as_deref() {
        let description = query.error_description.as_deref().unwrap_or_default();
        return Err(ApiError::bad_request(
            "sso_refused",
            format!("the provider refused the sign-in: {error} {description}")
                .trim_end()
                .to_owned(),
        ));
    }
    let code = query
        .code
        .as_deref()
        .filter(|code| !code.is_empty())
        .ok_or_else(|| ApiError::bad_request("invalid_query", "the callback carries no `code`"))?;
    let verifier = state
        .keys
        .decrypt(flow.try_get("verifier")?, &verifier_aad(flow_state))
        .map_err(|e| {
            ApiError::Internal(format!("the sign-in's PKCE verifier does not decrypt: {e}").into())
        })?;
    let verifier = SecretString::from(
        String::from_utf8(verifier)
            .map_err(|_| ApiError::Internal("the sign-in's PKCE verifier is not text".into()))?,
    );
    let nonce: String = flow.try_get("nonce")?;
    let identity = sso
        .finish(code, verifier, &nonce)
        .await
        .map_err(provider_error)?;

    let tx = db.transaction().await?;
    let (user, provisioned) = match account(&tx, sso, &identity).await? {
        Some(found) => found,
        None => {
            audit::record(
                &tx,
                None,
                None,
                &client,
                Event {
                    action: Action::SessionLoginFailed,
                    target_kind: "user",
                    target_id: None,
                    summary: json!({ "method": "sso", "email": identity.email, "reason": "no account" }),
                },
            )
            .await?;
            tx.commit().await?;
            return Err(ApiError::NotPermitted(
                "there is no Weft account for this identity: ask a workspace admin for an invitation",
            ));
        }
    };
    let started = sessions::start(&tx, user, &state.sessions, &client).await?;
    tx.execute(
        "UPDATE users SET last_login_at = now() WHERE id = $1",
        &[&user],
    )
    .await?;
    audit::record(
        &tx,
        None,
        Some(Actor::User(user)),
        &client,
        Event::new(Action::SessionLogin, "session", started.id).with_summary(json!({
            "method": "sso",
            "issuer": identity.issuer,
            "provisioned": provisioned,
        })),
    )
    .await?;
    tx.commit().await?;
    let return_to: String = flow.try_get("return_to")?;
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, return_to),
            (
                header::SET_COOKIE,
                state
                    .sessions
                    .set_cookie(&started.token)
                    .to_str()
                    .unwrap_or_default()
                    .to_owned(),
            ),
        ],
    )
        .into_response())
}

/// The enabled person `identity` signs in as, and whether they were just given an
/// account: the one linked to the identity; else the one with its verified email (now
/// linked); else a new one, if provisioning admits the email or an invitation waits for it.
async fn account(
    db: &impl GenericClient,
    sso: &Sso,
    identity: &Identity,
) -> Result<Option<(UserId, bool)>, ApiError> {
    let linked = db
        .query_opt(
            "SELECT u.id, u.disabled_at IS NOT NULL AS disabled FROM sso_identities i \
             JOIN users u ON u.id = i.user_id WHERE i.issuer = $1 AND i.subject = $2",
            &[&identity.issuer, &identity.subject],
        )
        .await?;
    if let Some(row) = linked {
        return enabled(row.try_get("id")?, row.try_get("disabled")?)
            .map(|user| Some((user, false)));
    }
    let Some(email) = identity
        .email
        .as_deref()
        .filter(|_| identity.email_verified)
    else {
        return Ok(None);
    };
    let email = users::normalize_email(email).map_err(|_| {
        ApiError::bad_request(
            "invalid_id_token",
            "the provider's email claim is not an address",
        )
    })?;
    let link = |user: UserId| async move {
        db.execute(
            "INSERT INTO sso_identities (issuer, subject, user_id) VALUES ($1, $2, $3)",
            &[&identity.issuer, &identity.subject, &user],
        )
        .await
    };
    if let Some(existing) = users::credentials(db, &email).await? {
        let user = enabled(existing.id, existing.disabled)?;
        link(user).await?;
        return Ok(Some((user, false)));
    }
    let invited: bool = db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM invitations WHERE email = $1 AND accepted_at IS NULL \
             AND expires_at > now())",
            &[&email],
        )
        .await?
        .try_get(0)?;
    let provisioning = sso
        .settings
        .provisioning
        .as_ref()
        .filter(|provisioning| provisioning.admits(&email));
    if provisioning.is_none() && !invited {
        return Ok(None);
    }
    let name = identity
        .name
        .clone()
        .filter(|name| !name.trim().is_empty() && name.chars().count() <= 200)
        .unwrap_or_else(|| email.split('@').next().unwrap_or_default().to_owned());
    let user = users::create(db, &email, &name, None).await?;
    link(user).await?;
    if let Some(provisioning) = provisioning {
        members::add(db, provisioning.workspace, user, provisioning.role).await?;
    }
    Ok(Some((user, true)))
}

fn enabled(user: UserId, disabled: bool) -> Result<UserId, ApiError> {
    if disabled {
        Err(ApiError::NotPermitted("this account is disabled"))
    } else {
        Ok(user)
    }
}
