//! The OAuth 2.0 token endpoint's three grants (authorization code, refresh token, client
//! credentials), sent through the egress-guarded client; the answer is read by the pure
//! [`weft_domain::oauth::read_token_response`].
//!
//! Client id and secret go in the form body (`client_secret_post`), which every provider
//! we ship accepts. `Accept: application/json` is sent because GitHub answers
//! form-encoded without it; a form-encoded answer is read all the same.

use std::time::Duration;

use chrono::Utc;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, Url};
use weft_domain::manifest::{Grant, OAuth2};
use weft_domain::oauth::{OAuthError, TokenSet, read_token_response};

use weft_domain::connector::Carrying;

use crate::egress::{GuardedClient, SendError};

/// How long a token endpoint may take to answer.
pub const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest token response read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// Exchanges an authorization code (with its PKCE verifier) for tokens.
pub async fn exchange_code(
    http: &GuardedClient,
    spec: &OAuth2,
    client_id: &str,
    client_secret: &str,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Result<TokenSet, OAuthError> {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
        ("client_id", client_id),
        ("client_secret", client_secret),
    ];
    token_request(http, spec, &form).await
}

/// Trades a refresh token for a new access token (and perhaps a new refresh token).
pub async fn refresh(
    http: &GuardedClient,
    spec: &OAuth2,
    client_id: &str,
    client_secret: &str,
    refresh_token: &str,
) -> Result<TokenSet, OAuthError> {
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", client_id),
        ("client_secret", client_secret),
    ];
    token_request(http, spec, &form).await
}

/// Obtains a token for the client itself (the client-credentials grant), with the
/// manifest's scopes.
pub async fn client_credentials(
    http: &GuardedClient,
    spec: &OAuth2,
    client_id: &str,
    client_secret: &str,
) -> Result<TokenSet, OAuthError> {
    if spec.grant != Grant::ClientCredentials {
        return Err(OAuthError::Settings(
            "auth.grant is not client_credentials".into(),
        ));
    }
    let scope = spec.scopes.join(&spec.scope_separator);
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", client_secret),
    ];
    if !scope.is_empty() {
        form.push(("scope", &scope));
    }
    token_request(http, spec, &form).await
}

async fn token_request(
    http: &GuardedClient,
    spec: &OAuth2,
    form: &[(&str, &str)],
) -> Result<TokenSet, OAuthError> {
    let url = Url::parse(&spec.token_url)
        .map_err(|e| OAuthError::Settings(format!("auth.token_url `{}`: {e}", spec.token_url)))?;
    let request = http
        .request(Method::POST, url)
        .header(ACCEPT, "application/json")
        .timeout(TOKEN_TIMEOUT)
        .form(form)
        .build()
        .map_err(|e| OAuthError::Settings(format!("the token request cannot be built: {e}")))?;
    // The form carries the client secret, and a code or refresh token.
    let mut response = http
        .execute(request, Carrying::Credentials)
        .await
        .map_err(|e| match e {
            SendError::Refused(refused) => OAuthError::Egress(refused.to_string()),
            SendError::Redirect(refused) => OAuthError::Egress(refused.to_string()),
            other => OAuthError::Unreachable(other.describe()),
        })?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_TOKEN_RESPONSE {
                    return Err(OAuthError::InvalidResponse(format!(
                        "over {MAX_TOKEN_RESPONSE} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(OAuthError::Unreachable(SendError::Http(e).describe())),
        }
    }
    let tokens = read_token_response(status, content_type.as_deref(), &body, Utc::now());
    zeroize::Zeroize::zeroize(&mut body);
    tokens
}
