//! Single sign-on with OpenID Connect (architecture §11): the authorization-code flow with
//! PKCE and a nonce, and the ID token checked for its issuer, audience, expiry, nonce and
//! signature (against the provider's published keys).
//!
//! The provider's metadata and keys are discovered on first use and kept for a while, so
//! the gateway starts even when the provider is down, and follows a key rotation.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;
use weft_domain::access::Role;
use weft_domain::ids::WorkspaceId;

/// How long discovered metadata (and with it the signing keys) is trusted.
const METADATA_LIFETIME: Duration = Duration::from_secs(600);
/// How long a call to the provider may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// The single sign-on settings of the gateway (`WEFT_OIDC_*`).
#[derive(Debug, Clone)]
pub struct SsoSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    /// Where the provider sends people back: `<WEFT_PUBLIC_URL>/api/v1/sso/callback`.
    pub redirect_uri: String,
    /// Who is given an account on first sign-in, and where.
    pub provisioning: Option<Provisioning>,
    /// Passwords are refused: everyone signs in through the provider.
    pub only: bool,
}

/// People whose verified email is in one of `domains` get an account on their first
/// sign-in, as `role` members of `workspace`.
#[derive(Debug, Clone)]
pub struct Provisioning {
    pub domains: Vec<String>,
    pub workspace: WorkspaceId,
    pub role: Role,
}

impl Provisioning {
    pub fn admits(&self, email: &str) -> bool {
        email
            .rsplit_once('@')
            .is_some_and(|(_, domain)| self.domains.iter().any(|allowed| allowed == domain))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    #[error(
        "the OpenID provider at {issuer} cannot be reached or described itself wrongly: {reason}"
    )]
    Discovery { issuer: String, reason: String },
    #[error("the OpenID provider refused the code exchange: {0}")]
    Exchange(String),
    #[error("the OpenID provider answered without an ID token")]
    NoIdToken,
    #[error("the ID token is not valid: {0}")]
    InvalidToken(String),
    #[error("WEFT_OIDC_ISSUER or WEFT_PUBLIC_URL is not a valid URL: {0}")]
    Settings(String),
}

/// A flow just begun: send the person to `url`; keep the rest for the callback.
pub struct Begun {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub verifier: SecretString,
}

/// Who the provider says signed in.
#[derive(Debug, Clone)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    /// Lower-cased.
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
}

pub struct Sso {
    pub settings: SsoSettings,
    http: ProviderHttp,
    metadata: Mutex<Option<(Instant, CoreProviderMetadata)>>,
}

impl Sso {
    pub fn new(settings: SsoSettings) -> Result<Self, reqwest::Error> {
        // Following redirects would let a provider's answer point the gateway anywhere.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .build()?;
        Ok(Self {
            settings,
            http: ProviderHttp(http),
            metadata: Mutex::new(None),
        })
    }

    async fn metadata(&self, fresh: bool) -> Result<CoreProviderMetadata, SsoError> {
        let mut cached = self.metadata.lock().await;
        if let Some((at, metadata)) = cached.as_ref()
            && !fresh
            && at.elapsed() < METADATA_LIFETIME
        {
            return Ok(metadata.clone());
        }
        let discovery = |reason: String| SsoError::Discovery {
            issuer: self.settings.issuer.clone(),
            reason,
        };
        let issuer = IssuerUrl::new(self.settings.issuer.clone())
            .map_err(|e| SsoError::Settings(e.to_string()))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| discovery(chain(&e)))?;
        *cached = Some((Instant::now(), metadata.clone()));
        Ok(metadata)
    }

    fn client(
        &self,
        metadata: CoreProviderMetadata,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        SsoError,
    > {
        let redirect = RedirectUrl::new(self.settings.redirect_uri.clone())
            .map_err(|e| SsoError::Settings(e.to_string()))?;
        let secret = self
            .settings
            .client_secret
            .as_ref()
            .map(|secret| ClientSecret::new(secret.expose_secret().to_owned()));
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            secret,
        )
        .set_redirect_uri(redirect))
    }

    /// The provider's authorization URL for a new sign-in.
    pub async fn begin(&self) -> Result<Begun, SsoError> {
        let client = self.client(self.metadata(false).await?)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".to_owned()))
            .add_scope(Scope::new("profile".to_owned()))
            .set_pkce_challenge(challenge)
            .url();
        Ok(Begun {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: SecretString::from(verifier.secret().clone()),
        })
    }

    /// Exchanges the callback's code and checks the ID token it brings.
    pub async fn finish(
        &self,
        code: &str,
        verifier: SecretString,
        nonce: &str,
    ) -> Result<Identity, SsoError> {
        let metadata = self.metadata(false).await?;
        let issuer = metadata.issuer().to_string();
        let client = self.client(metadata)?;
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| SsoError::Exchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.expose_secret().to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| SsoError::Exchange(chain(&e)))?;
        let id_token = tokens.id_token().ok_or(SsoError::NoIdToken)?;
        let nonce = Nonce::new(nonce.to_owned());
        let claims = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Ok(claims) => claims.clone(),
            // A key the cached metadata does not know: the provider may have rotated its
            // keys since. Look once more before refusing.
            Err(_) => {
                let client = self.client(self.metadata(true).await?)?;
                id_token
                    .claims(&client.id_token_verifier(), &nonce)
                    .map_err(|e| SsoError::InvalidToken(e.to_string()))?
                    .clone()
            }
        };
        let mut identity = Identity {
            issuer,
            subject: claims.subject().to_string(),
            email: claims.email().map(|email| email.to_lowercase()),
            email_verified: claims.email_verified().unwrap_or(false),
            name: claims
                .name()
                .and_then(|name| name.get(None))
                .map(|name| name.to_string()),
        };
        // Providers that follow the core spec to the letter put the scopes' claims only
        // behind the userinfo endpoint: ask it, for the same subject.
        if identity.email.is_none() {
            let info: openidconnect::core::CoreUserInfoClaims = client
                .user_info(
                    tokens.access_token().clone(),
                    Some(claims.subject().clone()),
                )
                .map_err(|e| SsoError::Exchange(e.to_string()))?
                .request_async(&self.http)
                .await
                .map_err(|e| SsoError::Exchange(chain(&e)))?;
            identity.email = info.email().map(|email| email.to_lowercase());
            identity.email_verified = info.email_verified().unwrap_or(false);
            if identity.name.is_none() {
                identity.name = info
                    .name()
                    .and_then(|name| name.get(None))
                    .map(|name| name.to_string());
            }
        }
        Ok(identity)
    }
}

/// The error and its causes, on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The provider's HTTP, through the gateway's own client.
struct ProviderHttp(reqwest::Client);

impl<'c> openidconnect::AsyncHttpClient<'c> for ProviderHttp {
    type Error = reqwest::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<openidconnect::HttpResponse, Self::Error>> + Send + 'c>>;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(send(&self.0, request))
    }
}

async fn send(
    http: &reqwest::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, reqwest::Error> {
    let (parts, body) = request.into_parts();
    let response = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await?.to_vec();
    let mut answer = openidconnect::HttpResponse::new(body);
    *answer.status_mut() = status;
    *answer.headers_mut() = headers;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisioning_admits_whole_domains_only() {
        let provisioning = Provisioning {
            domains: vec!["example.com".to_owned()],
            workspace: WorkspaceId::nil(),
            role: Role::Viewer,
        };
        assert!(provisioning.admits("ada@example.com"));
        assert!(!provisioning.admits("ada@notexample.com"));
        assert!(!provisioning.admits("ada@example.com.evil"));
        assert!(!provisioning.admits("example.com"));
    }
}
