//! What every handler shares. Cheap to clone: each field is a handle.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use weft_domain::crypto::KeyRing;
use weft_domain::manifest::InputSchemas;
use weft_runtime::egress::GuardedClient;
use weft_runtime::queue::Publisher;

use crate::error::ApiError;
use crate::identity::sessions::SessionPolicy;
use crate::identity::sso::Sso;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::replies::Replies;

#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub publisher: Arc<Publisher>,
    pub metrics: Metrics,
    /// Encrypts and decrypts the secrets the gateway stores.
    pub keys: Arc<KeyRing>,
    /// `None` turns the admin API off.
    pub admin_token: Option<Arc<str>>,
    /// Largest JSON body of the REST API, in bytes.
    pub api_max_body: usize,
    /// Largest webhook body, in bytes.
    pub webhook_max_body: usize,
    /// This process's reply queue: the results of actions executed directly come back here.
    pub replies: Arc<Replies>,
    /// Compiled `input_schema`s of the actions executed directly.
    pub input_schemas: Arc<InputSchemas>,
    /// `WEFT_PUBLIC_URL`, without a trailing slash.
    pub public_url: Arc<str>,
    /// Its origin (scheme, host, port): what a signed-in browser's `Origin` must be.
    pub public_origin: Arc<str>,
    /// How sessions are kept.
    pub sessions: Arc<SessionPolicy>,
    /// `WEFT_SIGNUP=open`.
    pub signup_open: bool,
    /// `WEFT_USERS_CREATE_WORKSPACES`.
    pub users_create_workspaces: bool,
    /// Single sign-on, when `WEFT_OIDC_ISSUER` is set.
    pub sso: Option<Arc<Sso>>,
    /// Mails invitations and resets, when `WEFT_SMTP_URL` is set.
    pub mailer: Option<Arc<Mailer>>,
    /// `WEFT_INVITATION_LIFETIME`.
    pub invitation_lifetime: Duration,
    /// Calls OAuth token endpoints, under the same egress policy as the workers.
    pub oauth_http: GuardedClient,
    /// `WEFT_HTTP_REQUEST_TIMEOUT`.
    pub request_timeout: Duration,
    /// `WEFT_MAX_RUN_TIMEOUT`: the longest `settings.timeout` a scenario is saved with.
    pub max_run_timeout: Duration,
}

impl AppState {
    /// Whether people may sign in (or sign up) with a password: not in `WEFT_SSO_ONLY`.
    pub fn passwords_allowed(&self) -> Result<(), ApiError> {
        match &self.sso {
            Some(sso) if sso.settings.only => Err(ApiError::NotPermitted(
                "this instance signs people in with single sign-on only: use GET /api/v1/sso/start",
            )),
            _ => Ok(()),
        }
    }
}
