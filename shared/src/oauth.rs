//! OAuth 2.0 (RFC 6749) for connections: the authorize URL with PKCE (RFC 7636, S256), and
//! the token endpoint's three grants (authorization code, refresh token, client
//! credentials). The URL, PKCE and the reading of a token response are pure; the grants
//! are thin calls through the egress-guarded client.
//!
//! Client id and secret go in the form body (`client_secret_post`), which every provider
//! we ship accepts. `Accept: application/json` is sent because GitHub answers
//! form-encoded without it; a form-encoded answer is read all the same.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, Url};
use secrecy::SecretString;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::egress::{Carrying, GuardedClient, SendError};
use crate::manifest::{Grant, OAuth2};

/// How long a token endpoint may take to answer.
pub const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest token response read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// The longest provider message kept in an error.
const MAX_PROVIDER_MESSAGE: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    #[error("the connector's oauth2 settings cannot be used: {0}")]
    Settings(String),
    /// The provider refused the grant; the text is its `error` and `error_description`.
    #[error("the authorization server refused the grant: {0}")]
    Refused(String),
    #[error("{0}")]
    Egress(String),
    #[error("the token endpoint could not be reached: {0}")]
    Unreachable(String),
    #[error("the token endpoint answered {0}; try again later")]
    Unavailable(u16),
    #[error("the token endpoint's answer is not a token response: {0}")]
    InvalidResponse(String),
}

impl OAuthError {
    /// Whether asking again later may succeed (network trouble, a 5xx or 429): the
    /// connection itself is not at fault.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::Unavailable(_))
    }
}

/// A PKCE pair: the verifier stays with whoever exchanges the code, the challenge goes
/// into the authorize URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    /// A random verifier (32 bytes, 43 characters of base64url) and its S256 challenge.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let verifier = URL_SAFE_NO_PAD.encode(bytes);
        let challenge = pkce_challenge(&verifier);
        Self {
            verifier,
            challenge,
        }
    }
}

/// The S256 challenge of a verifier: base64url(SHA-256(verifier)), unpadded.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Where to send the user to authorize a connection: the manifest's `authorize_url` with
/// `response_type=code`, the client id, the redirect URI, the scopes (joined by the
/// manifest's separator), the `state` and the PKCE challenge (S256), plus the manifest's
/// `authorize_params`.
pub fn authorize_url(
    spec: &OAuth2,
    client_id: &str,
    redirect_uri: &str,
    state: &str,
    challenge: &str,
) -> Result<Url, OAuthError> {
    let base = spec.authorize_url.as_deref().ok_or_else(|| {
        OAuthError::Settings(
            "auth.authorize_url is required for the authorization-code grant".into(),
        )
    })?;
    let mut url = Url::parse(base)
        .map_err(|e| OAuthError::Settings(format!("auth.authorize_url `{base}`: {e}")))?;
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state)
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        if !spec.scopes.is_empty() {
            query.append_pair("scope", &spec.scopes.join(&spec.scope_separator));
        }
        for (name, value) in &spec.authorize_params {
            query.append_pair(name, value);
        }
    }
    Ok(url)
}

/// What a token endpoint granted.
#[derive(Debug, Clone)]
pub struct TokenSet {
    pub access_token: SecretString,
    /// Absent when the provider issues none or keeps the current one.
    pub refresh_token: Option<SecretString>,
    /// From `expires_in`; `None` when the token does not expire (or the provider says not).
    pub expires_at: Option<DateTime<Utc>>,
}

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

/// Reads a token endpoint's answer (RFC 6749 §5.1, §5.2): JSON, or form-encoded as
/// GitHub sends without `Accept`. An `error` field is a refusal whatever the status
/// (GitHub and Slack answer 200 with one). Messages never include a token.
pub fn read_token_response(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<TokenSet, OAuthError> {
    if status == 429 || status >= 500 {
        return Err(OAuthError::Unavailable(status));
    }
    let is_form = content_type.is_some_and(|ct| ct.contains("x-www-form-urlencoded"));
    let fields: Option<Map<String, Value>> = if is_form {
        Some(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect(),
        )
    } else {
        match serde_json::from_slice(body) {
            Ok(Value::Object(fields)) => Some(fields),
            _ => None,
        }
    };
    let Some(fields) = fields else {
        return Err(if (200..300).contains(&status) {
            OAuthError::InvalidResponse("not a JSON object".into())
        } else {
            OAuthError::Refused(format!("the token endpoint answered {status}"))
        });
    };
    let text = |name: &str| match fields.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    if let Some(error) = text("error") {
        let message = match text("error_description") {
            Some(description) => format!("{error}: {description}"),
            None => error,
        };
        return Err(OAuthError::Refused(cut(&message)));
    }
    if !(200..300).contains(&status) {
        return Err(OAuthError::Refused(format!(
            "the token endpoint answered {status}"
        )));
    }
    let access_token = text("access_token")
        .ok_or_else(|| OAuthError::InvalidResponse("it has no access_token".into()))?;
    let expires_in = match fields.get("expires_in") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    Ok(TokenSet {
        access_token: SecretString::from(access_token),
        refresh_token: text("refresh_token").map(SecretString::from),
        expires_at: expires_in
            .filter(|seconds| *seconds > 0)
            .map(|seconds| now + chrono::Duration::seconds(seconds)),
    })
}

fn cut(message: &str) -> String {
    if message.len() <= MAX_PROVIDER_MESSAGE {
        return message.to_owned();
    }
    let mut end = MAX_PROVIDER_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use secrecy::ExposeSecret;

    use super::*;

    fn spec() -> OAuth2 {
        OAuth2 {
            grant: Grant::AuthorizationCode,
            authorize_url: Some(
                "https://github.test/login/oauth/authorize?allow_signup=false".into(),
            ),
            token_url: "https://github.test/login/oauth/access_token".into(),
            scopes: vec!["repo".into(), "read:org".into()],
            scope_separator: " ".into(),
            authorize_params: BTreeMap::from([("prompt".to_owned(), "consent".to_owned())]),
        }
    }

    #[test]
    fn the_pkce_challenge_follows_rfc_7636() {
        // RFC 7636, appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let pkce = Pkce::generate();
        assert_eq!(pkce.verifier.len(), 43);
        assert_eq!(pkce.challenge, pkce_challenge(&pkce.verifier));
        assert_ne!(pkce.verifier, Pkce::generate().verifier);
    }

    #[test]
    fn the_authorize_url_carries_client_state_scopes_and_challenge() {
        let url = authorize_url(
            &spec(),
            "cid",
            "https://weft.test/api/v1/oauth/callback",
            "st",
            "ch",
        )
        .expect("url");
        let query: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(url.path(), "/login/oauth/authorize");
        for (name, value) in [
            ("allow_signup", "false"),
            ("response_type", "code"),
            ("client_id", "cid"),
            ("redirect_uri", "https://weft.test/api/v1/oauth/callback"),
            ("state", "st"),
            ("code_challenge", "ch"),
            ("code_challenge_method", "S256"),
            ("scope", "repo read:org"),
            ("prompt", "consent"),
        ] {
            assert_eq!(query.get(name).map(String::as_str), Some(value), "{name}");
        }
        let commas = OAuth2 {
            scope_separator: ",".into(),
            ..spec()
        };
        let url = authorize_url(&commas, "c", "r", "s", "x").expect("url");
        assert!(
            url.query()
                .is_some_and(|q| q.contains("scope=repo%2Cread%3Aorg")),
            "{url}"
        );
        let none = OAuth2 {
            authorize_url: None,
            ..spec()
        };
        assert!(matches!(
            authorize_url(&none, "c", "r", "s", "x"),
            Err(OAuthError::Settings(_))
        ));
    }

    #[test]
    fn token_responses_in_json_or_form_become_token_sets() {
        let now = Utc::now();
        let json = br#"{"access_token":"at","refresh_token":"rt","expires_in":3600,"token_type":"bearer"}"#;
        let tokens = read_token_response(200, Some("application/json"), json, now).expect("ok");
        assert_eq!(tokens.access_token.expose_secret(), "at");
        assert_eq!(
            tokens.refresh_token.as_ref().map(|t| t.expose_secret()),
            Some("rt")
        );
        assert_eq!(
            tokens.expires_at,
            Some(now + chrono::Duration::seconds(3600))
        );

        let form = b"access_token=gho_1&scope=repo&token_type=bearer";
        let tokens = read_token_response(
            200,
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            form,
            now,
        )
        .expect("ok");
        assert_eq!(tokens.access_token.expose_secret(), "gho_1");
        assert!(tokens.refresh_token.is_none() && tokens.expires_at.is_none());

        let string_expiry = br#"{"access_token":"a","expires_in":"60"}"#;
        let tokens = read_token_response(200, None, string_expiry, now).expect("ok");
        assert_eq!(tokens.expires_at, Some(now + chrono::Duration::seconds(60)));
    }

    #[test]
    fn refusals_carry_the_providers_words_and_never_a_token() {
        let now = Utc::now();
        let refused = read_token_response(
            400,
            Some("application/json"),
            br#"{"error":"invalid_grant","error_description":"The refresh token expired"}"#,
            now,
        )
        .expect_err("refused");
        assert_eq!(
            refused,
            OAuthError::Refused("invalid_grant: The refresh token expired".into())
        );
        assert!(!refused.is_transient());
        // GitHub refuses with 200 and an error field.
        let github = read_token_response(
            200,
            Some("application/json"),
            br#"{"error":"bad_verification_code","access_token":"leak"}"#,
            now,
        )
        .expect_err("refused");
        assert_eq!(github, OAuthError::Refused("bad_verification_code".into()));
        let missing = read_token_response(200, None, br#"{"refresh_token":"rt-secret"}"#, now)
            .expect_err("no access token");
        assert!(!missing.to_string().contains("rt-secret"), "{missing}");
        assert_eq!(
            read_token_response(503, None, b"down", now).err(),
            Some(OAuthError::Unavailable(503))
        );
        assert!(OAuthError::Unavailable(503).is_transient());
        assert_eq!(
            read_token_response(401, Some("text/html"), b"<html>", now).err(),
            Some(OAuthError::Refused(
                "the token endpoint answered 401".into()
            ))
        );
    }
}
