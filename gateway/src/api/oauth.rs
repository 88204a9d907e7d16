//! The OAuth2 authorization-code flow of a connection (architecture §6, §7), with PKCE (S256).
//!
//! 1. `GET /api/v1/oauth/{connector}/start?connection_id=…` (API key): records a `state`
//!    (random, single-use, valid ten minutes, bound to the workspace and the connection)
//!    with the PKCE verifier sealed beside it, and sends the user to the provider.
//! 2. The provider sends the user back to `GET /api/v1/oauth/callback?code&state`. That
//!    request carries no API key: the `state` names the workspace and the connection. It is
//!    deleted as it is read, so it works once; the code is exchanged with the verifier at
//!    the token endpoint (through the egress guard), and the tokens are sealed into the
//!    connection's credentials, which becomes `active`. A refusal marks it `error`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use weft_domain::connector::Credentials;
use weft_domain::ids::{ConnectionId, WorkspaceId};
use weft_domain::manifest::{Auth, Grant, Manifest, OAuth2};
use weft_domain::oauth::{self, OAuthError, Pkce};
use weft_runtime::token_endpoint;

use crate::access::Workspace;
use crate::audit::{self, Action as AuditAction, Actor, Client, Event};
use crate::catalog::{self, Connector};
use crate::connection_store::{self, StoredConnection};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};
use crate::secrets::oauth_verifier_aad;
use crate::state::AppState;

/// Where providers send users back, under `WEFT_PUBLIC_URL`.
pub const CALLBACK_PATH: &str = "/api/v1/oauth/callback";

/// How long a started flow may take to come back.
const STATE_LIFETIME_MINUTES: i32 = 10;

/// The OAuth2 settings of an authorization-code connector.
fn code_grant(manifest: &Manifest) -> Result<&OAuth2, ApiError> {
    match &manifest.auth {
        Auth::Oauth2(spec) if spec.grant == Grant::AuthorizationCode => Ok(spec),
        other => Err(ApiError::bad_request(
            "not_oauth",
            format!(
                "connector `{}` does not use the OAuth2 authorization-code grant (its auth is {}); give its credentials when creating the connection",
                manifest.key,
                match other {
                    Auth::Oauth2(_) => "oauth2 client_credentials",
                    other => other.kind(),
                }
            ),
        )),
    }
}

/// The manifest of a connector that can run the flow.
async fn oauth_manifest(
    client: &impl deadpool_postgres::GenericClient,
    workspace: WorkspaceId,
    key: &str,
) -> Result<Manifest, ApiError> {
    match catalog::resolve(client, workspace, key).await? {
        None => Err(ApiError::NotFound("connector")),
        Some(Connector::Http) => Err(ApiError::bad_request(
            "not_oauth",
            "the http connector has no OAuth flow",
        )),
        Some(connector) => Ok(connector
            .manifest()
            .cloned()
            .expect("every connector but http has a manifest")),
    }
}

fn open_credentials(
    state: &AppState,
    workspace: WorkspaceId,
    connection: &StoredConnection,
) -> Result<Credentials, ApiError> {
    let sealed = connection.credentials.as_deref().ok_or_else(|| ApiError::Conflict {
        code: "credentials_missing",
        message: "the connection has no client credentials: set `client_id` and `client_secret` with PATCH /api/v1/connections/{id}".to_owned(),
    })?;
    Credentials::open(&state.keys, sealed, workspace, connection.id).map_err(|e| {
        ApiError::Conflict {
            code: "credentials_unreadable",
            message: format!(
                "the connection's credentials do not decrypt ({e}): set them again with PATCH /api/v1/connections/{}",
                connection.id
            ),
        }
    })
}

fn client_field<'a>(credentials: &'a Credentials, field: &str) -> Result<&'a str, ApiError> {
    credentials
        .get(field)
        .map(ExposeSecret::expose_secret)
        .filter(|value| !value.is_empty())
        .ok_or_else(|| ApiError::Conflict {
            code: "credentials_missing",
            message: format!(
                "the connection has no `{field}`: set it with PATCH /api/v1/connections/{{id}}"
            ),
        })
}

/// A `state`: 256 random bits, unguessable, in base64url.
fn new_state() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StartQuery {
    /// The connection to authorize (of this connector, in this workspace).
    pub connection_id: ConnectionId,
    /// `json` answers 200 with the URL instead of redirecting (for curl).
    pub format: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorizeUrl {
    /// Open this in a browser to authorize the connection.
    pub authorize_url: String,
    /// The flow must come back before this instant.
    pub expires_at: DateTime<Utc>,
}

/// Start the OAuth2 authorization-code flow of a connection: redirects to the provider.
#[utoipa::path(
    get,
    operation_id = "startOAuth",
    path = "/api/v1/oauth/{connector}/start",
    tag = "oauth",
    security(("api_key" = [])),
    params(("connector" = String, Path, description = "Connector key"), StartQuery),
    responses(
        (status = 302, description = "To the provider's authorize URL (with `state`, `code_challenge` and the redirect URI `<WEFT_PUBLIC_URL>/api/v1/oauth/callback`)", headers(("Location" = String, description = "The authorize URL"))),
        (status = 200, description = "With `format=json`: the authorize URL", body = AuthorizeUrl),
        (status = 400, description = "The connector does not use the authorization-code grant (`not_oauth`), the connection is another connector's, or a malformed query", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 404, description = "No such connector or connection in this workspace", body = ErrorBody),
        (status = 409, description = "The connection lacks a usable `client_id` (`credentials_missing`, `credentials_unreadable`) or the manifest's OAuth settings are unusable (`oauth_settings`)", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn start(
    State(state): State<AppState>,
    workspace: Workspace,
    ApiPath(connector): ApiPath<String>,
    ApiQuery(query): ApiQuery<StartQuery>,
) -> Result<Response, ApiError> {
    let client = state.pool.get().await?;
    let manifest = oauth_manifest(&client, workspace.id, &connector).await?;
    let spec = code_grant(&manifest)?;
    let connection = connection_store::load(&client, workspace.id, query.connection_id)
        .await?
        .ok_or(ApiError::NotFound("connection"))?;
    if connection.connector != manifest.key {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "connection {} belongs to connector `{}`, not `{}`",
                connection.id, connection.connector, manifest.key
            ),
        ));
    }
    let credentials = open_credentials(&state, workspace.id, &connection)?;
    let client_id = client_field(&credentials, "client_id")?;
    let pkce = Pkce::generate();
    let flow_state = new_state();
    let redirect_uri = format!("{}{CALLBACK_PATH}", state.public_url);
    let url = oauth::authorize_url(spec, client_id, &redirect_uri, &flow_state, &pkce.challenge)
        .map_err(|e| ApiError::Conflict {
            code: "oauth_settings",
            message: e.to_string(),
        })?;
    let verifier = state.keys.encrypt(
        pkce.verifier.as_bytes(),
        &oauth_verifier_aad(workspace.id, &flow_state),
    );
    let mut client = client;
    let transaction = client.transaction().await?;
    // Flows never finished are swept here; the index on `expires_at` keeps it cheap.
    transaction
        .execute("DELETE FROM oauth_states WHERE expires_at < now()", &[])
        .await?;
    let expires_at: DateTime<Utc> = transaction
        .query_one(
            "INSERT INTO oauth_states
                 (state, workspace_id, connection_id, verifier, redirect_uri, expires_at, actor_kind, actor_id)
             VALUES ($1, $2, $3, $4, $5, now() + make_interval(mins => $6), $7, $8)
             RETURNING expires_at",
            &[
                &flow_state,
                &workspace.id,
                &connection.id,
                &verifier,
                &redirect_uri,
                &STATE_LIFETIME_MINUTES,
                &workspace.actor.kind().as_str(),
                &workspace.actor.id(),
            ],
        )
        .await?
        .try_get("expires_at")?;
    workspace
        .audit(
            &transaction,
            Event::new(
                AuditAction::ConnectionAuthorizationStarted,
                "connection",
                connection.id,
            )
            .with_summary(json!({ "connector": manifest.key })),
        )
        .await?;
    transaction.commit().await?;
    tracing::info!(workspace_id = %workspace.id, connection_id = %connection.id, connector = %manifest.key, "OAuth flow started");
    if query.format.as_deref() == Some("json") {
        let body = AuthorizeUrl {
            authorize_url: url.to_string(),
            expires_at,
        };
        return Ok(Json(body).into_response());
    }
    Ok((StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// The authorization code.
    pub code: Option<String>,
    /// The `state` of the flow's start.
    pub state: Option<String>,
    /// Set by the provider when the user or the provider refused.
    pub error: Option<String>,
    pub error_description: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Authorized {
    pub connection_id: ConnectionId,
    pub connector: String,
    /// `active`: the connection can be used.
    pub status: String,
    pub message: String,
}

fn invalid_state(message: &str) -> ApiError {
    ApiError::bad_request(
        "invalid_oauth_state",
        format!("{message}: start the flow again at GET /api/v1/oauth/{{connector}}/start"),
    )
}

/// The provider's redirect back: exchanges the code for tokens and stores them sealed.
#[utoipa::path(
    get,
    operation_id = "completeOAuth",
    path = "/api/v1/oauth/callback",
    tag = "oauth",
    params(CallbackQuery),
    responses(
        (status = 200, description = "The connection is authorized and `active`", body = Authorized),
        (status = 400, description = "Unknown, used or expired `state` (`invalid_oauth_state`); the provider refused (`oauth_refused`, the connection is now `error`); no code", body = ErrorBody),
        (status = 502, description = "The token endpoint failed (`oauth_provider_error`); the connection is now `error`", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn callback(
    State(state): State<AppState>,
    client_info: Client,
    ApiQuery(query): ApiQuery<CallbackQuery>,
) -> Result<Json<Authorized>, ApiError> {
    let flow_state = query
        .state
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid_state("the callback carries no `state`"))?;
    let mut client = state.pool.get().await?;
    // Taken and deleted at once: a state works for one callback, however many arrive.
    let row = client
        .query_opt(
            "DELETE FROM oauth_states WHERE state = $1
             RETURNING workspace_id, connection_id, verifier, redirect_uri, actor_kind, actor_id,
                       expires_at < now() AS expired",
            &[&flow_state],
        )
        .await?
        .ok_or_else(|| invalid_state("unknown or already used OAuth `state`"))?;
    if row.try_get::<_, bool>("expired")? {
        return Err(invalid_state("the OAuth flow expired"));
    }
    let workspace: WorkspaceId = row.try_get("workspace_id")?;
    let connection_id: ConnectionId = row.try_get("connection_id")?;
    let flow = Flow {
        workspace,
        connection: connection_id,
        started_by: Actor::stored(row.try_get("actor_kind")?, row.try_get("actor_id")?),
        client: client_info,
    };
    let connection = connection_store::load(&client, workspace, connection_id)
        .await?
        .ok_or(ApiError::NotFound("connection"))?;

    if let Some(error) = query.error.as_deref().filter(|e| !e.is_empty()) {
        let message = match query.error_description.as_deref() {
            Some(description) if !description.is_empty() => format!("{error}: {description}"),
            _ => error.to_owned(),
        };
        let message = format!("the provider refused the authorization: {message}");
        mark_error(&mut client, &flow, &message).await?;
        return Err(ApiError::bad_request("oauth_refused", message));
    }
    let code = query
        .code
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("invalid_request", "the callback carries no `code`")
        })?;
    let verifier = state
        .keys
        .decrypt(
            row.try_get("verifier")?,
            &oauth_verifier_aad(workspace, flow_state),
        )
        .map_err(|e| {
            ApiError::Internal(format!("the flow's PKCE verifier does not decrypt: {e}").into())
        })?;
    let verifier = String::from_utf8(verifier)
        .map_err(|_| ApiError::Internal("the flow's PKCE verifier is not text".into()))?;
    let redirect_uri: String = row.try_get("redirect_uri")?;

    let manifest = oauth_manifest(&client, workspace, &connection.connector).await?;
    let spec = code_grant(&manifest)?;
    let mut credentials = open_credentials(&state, workspace, &connection)?;
    let exchanged = token_endpoint::exchange_code(
        &state.oauth_http,
        spec,
        client_field(&credentials, "client_id")?,
        client_field(&credentials, "client_secret")?,
        code,
        &redirect_uri,
        &verifier,
    )
    .await;
    let tokens = match exchanged {
        Ok(tokens) => tokens,
        Err(e) => {
            let message = format!("the OAuth code exchange failed: {e}");
            mark_error(&mut client, &flow, &message).await?;
            return Err(exchange_error(e, message));
        }
    };
    credentials.set_tokens(&tokens);
    let mut fields = connection.credential_fields.clone();
    fields.retain(|f| f != "expires_at");
    fields.push("access_token".to_owned());
    if tokens.refresh_token.is_some() {
        fields.push("refresh_token".to_owned());
    }
    if tokens.expires_at.is_some() {
        fields.push("expires_at".to_owned());
    }
    fields.sort();
    fields.dedup();
    let sealed = credentials.seal(&state.keys, workspace, connection_id);
    let transaction = client.transaction().await?;
    transaction
        .execute(
            "UPDATE connections SET credentials = $3, credential_fields = $4, status = 'active',
                 last_error = NULL, updated_at = now(), updated_by_kind = $5, updated_by_id = $6
             WHERE id = $1 AND workspace_id = $2",
            &[
                &connection_id,
                &workspace,
                &sealed,
                &fields,
                &flow.started_by.map(|actor| actor.kind().as_str()),
                &flow.started_by.and_then(Actor::id),
            ],
        )
        .await?;
    flow.audit(
        &transaction,
        AuditAction::ConnectionAuthorized,
        json!({ "credential_fields": fields }),
    )
    .await?;
    transaction.commit().await?;
    tracing::info!(workspace_id = %workspace, %connection_id, connector = %manifest.key, "OAuth flow completed");
    Ok(Json(Authorized {
        connection_id,
        connector: manifest.key,
        status: "active".to_owned(),
        message: "The connection is authorized; you can close this window.".to_owned(),
    }))
}

fn exchange_error(error: OAuthError, message: String) -> ApiError {
    match error {
        OAuthError::Refused(_) => ApiError::bad_request("oauth_refused", message),
        OAuthError::Settings(_) => ApiError::bad_request("oauth_settings", message),
        OAuthError::Egress(_) => ApiError::bad_request("egress_refused", message),
        OAuthError::Unreachable(_)
        | OAuthError::Unavailable(_)
        | OAuthError::InvalidResponse(_) => ApiError::BadGateway {
            code: "oauth_provider_error",
            message,
        },
    }
}

/// The flow a callback completes: where, and who started it.
struct Flow {
    workspace: WorkspaceId,
    connection: ConnectionId,
    started_by: Option<Actor>,
    client: Client,
}

impl Flow {
    async fn audit(
        &self,
        db: &impl deadpool_postgres::GenericClient,
        action: AuditAction,
        summary: serde_json::Value,
    ) -> Result<(), ApiError> {
        let event = Event::new(action, "connection", self.connection).with_summary(summary);
        audit::record(
            db,
            Some(self.workspace),
            self.started_by,
            &self.client,
            event,
        )
        .await?;
        Ok(())
    }
}

async fn mark_error(
    client: &mut deadpool_postgres::Client,
    flow: &Flow,
    message: &str,
) -> Result<(), ApiError> {
    let transaction = client.transaction().await?;
    transaction
        .execute(
            "UPDATE connections SET status = 'error', last_error = $3, updated_at = now()
             WHERE id = $1 AND workspace_id = $2",
            &[&flow.connection, &flow.workspace, &message],
        )
        .await?;
    flow.audit(
        &transaction,
        AuditAction::ConnectionAuthorizationFailed,
        json!({ "error": message }),
    )
    .await?;
    transaction.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn manifest(auth: serde_json::Value) -> Manifest {
        weft_domain::manifest::validate(&json!({
            "key": "crm", "name": "CRM", "version": "1.0.0", "base_url": "https://crm.test",
            "auth": auth,
            "actions": [{"key": "find", "name": "Find", "request": {"method": "GET", "path": "/find"}}]
        }))
        .expect("valid manifest")
    }

    #[test]
    fn only_authorization_code_connectors_have_a_flow() {
        let code = manifest(json!({
            "type": "oauth2", "authorize_url": "https://crm.test/authorize", "token_url": "https://crm.test/token"
        }));
        assert!(code_grant(&code).is_ok());
        let client = manifest(json!({
            "type": "oauth2", "grant": "client_credentials", "token_url": "https://crm.test/token"
        }));
        let error = code_grant(&client).expect_err("no flow");
        assert_eq!(error.code(), "not_oauth");
        assert!(error.to_string().contains("client_credentials"), "{error}");
        let error = code_grant(&manifest(json!({"type": "bearer"}))).expect_err("no flow");
        assert!(error.to_string().contains("its auth is bearer"), "{error}");
    }

    #[test]
    fn states_are_unguessable_and_url_safe() {
        let state = new_state();
        assert_eq!(state.len(), 43);
        assert!(
            state
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(state, new_state());
    }

    #[test]
    fn provider_failures_are_told_from_refusals() {
        let refused = exchange_error(OAuthError::Refused("invalid_grant".into()), "m".into());
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        assert_eq!(refused.code(), "oauth_refused");
        let down = exchange_error(OAuthError::Unavailable(503), "m".into());
        assert_eq!(down.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(down.code(), "oauth_provider_error");
    }
}
