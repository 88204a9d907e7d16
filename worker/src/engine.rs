//! The declarative HTTP engine (architecture §6): one code path executes the built-in `http`
//! connector and every manifest action. A task's request is prepared, its connection's
//! credentials are opened (only here, only for this attempt) and put in as the auth type
//! says, OAuth2 tokens are obtained or renewed when needed, the request is sent through
//! the egress guard, and the answer is classified and interpreted.
//!
//! Whatever an attempt records (output, error, connection error) has every credential
//! value cut out, so an upstream that echoes a key back cannot put it in a run record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderName, HeaderValue};
use secrecy::ExposeSecret;
use serde_json::Value;
use tracing::Instrument;
use weft_domain::connector::{self, Credentials, CredentialsError, PreparedRequest};
use weft_domain::crypto::KeyRing;
use weft_domain::ids::{ConnectionId, WorkspaceId};
use weft_domain::manifest::{Auth, Grant, HTTP_CONNECTOR, HTTP_REQUEST_ACTION, OAuth2};
use weft_domain::messages::{
    ActionCall, BUILTIN_CONNECTOR, ConnectionUpdate, DELAY_ACTION, ErrorClass, NodeError,
    NodeResult, NodeTask, Outcome,
};
use weft_domain::oauth::{OAuthError, TokenSet};
use weft_domain::template::Templates;
use weft_runtime::egress::EgressPolicy;
use weft_runtime::token_endpoint;
use zeroize::Zeroizing;

use crate::http::{HttpEngine, Response};
use crate::outcome;

/// An access token expiring sooner than this is renewed before the request.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// How long a token this worker obtained is offered to other tasks of its connection.
const TOKEN_CACHE_AGE: Duration = Duration::from_secs(3600);
/// Connections whose tokens are remembered before unused entries are dropped.
const TOKEN_CACHE_SIZE: usize = 1024;

/// What one attempt produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    /// The last upstream status, `None` when no response came (for metrics).
    pub status: Option<u16>,
    pub result: Result<Value, NodeError>,
    /// Renewed tokens (sealed) or a broken connection, for whoever stores the result.
    pub connection: Option<ConnectionUpdate>,
}

impl Execution {
    fn failed(error: NodeError) -> Self {
        Self {
            status: None,
            result: Err(error),
            connection: None,
        }
    }

    /// The message that goes back to the scheduler (or the gateway).
    pub fn into_result(
        self,
        task: &NodeTask,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
    ) -> NodeResult {
        let outcome = match self.result {
            Ok(output) => Outcome::Success { output },
            Err(error) => Outcome::Failure { error },
        };
        NodeResult {
            connection: self.connection,
            ..task.result(started_at, finished_at, outcome)
        }
    }
}

fn permanent(message: impl Into<String>) -> NodeError {
    NodeError::new(ErrorClass::Permanent, message)
}

pub struct Engine {
    http: HttpEngine,
    templates: Templates,
    keys: KeyRing,
    tokens: TokenCache,
}

impl Engine {
    pub fn new(
        policy: EgressPolicy,
        keys: KeyRing,
        max_response_bytes: usize,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: HttpEngine::new(policy, max_response_bytes)?,
            templates: Templates::new(),
            keys,
            tokens: TokenCache::default(),
        })
    }

    /// Executes one attempt of a task, within its timeout.
    pub async fn execute(&self, task: &NodeTask) -> Execution {
        let deadline = Instant::now() + Duration::from_millis(task.timeout_ms.max(1));
        let call = task.call.as_deref();
        match (task.connector.as_str(), task.action.as_str(), call) {
            // A delay node's task: it is due (it waited in the delay tiers), so it is done.
            (BUILTIN_CONNECTOR, DELAY_ACTION, _) => {
                let until = task
                    .input
                    .get("until")
                    .cloned()
                    .unwrap_or_else(|| Value::from(Utc::now().to_rfc3339()));
                return Execution {
                    status: None,
                    result: Ok(serde_json::json!({ "waited_until": until })),
                    connection: None,
                };
            }
            (HTTP_CONNECTOR, HTTP_REQUEST_ACTION, None) | (_, _, Some(_)) => {}
            (connector, action, None) => {
                return Execution::failed(permanent(format!(
                    "this worker cannot execute `{connector}.{action}`: the task carries no action call"
                )));
            }
        }
        let mut session = match Session::open(task, call, &self.keys) {
            Ok(session) => session,
            Err(error) => return Execution::failed(error),
        };
        let mut status = None;
        let mut result = self
            .attempt(task, call, &mut session, deadline, &mut status)
            .await;
        match &mut result {
            Ok(output) => connector::redact(output, &session.secrets),
            Err(error) => redact_error(error, &session.secrets),
        }
        Execution {
            status,
            result,
            connection: session.update(&self.keys, task.workspace_id),
        }
    }

    async fn attempt(
        &self,
        task: &NodeTask,
        call: Option<&ActionCall>,
        session: &mut Session,
        deadline: Instant,
        status: &mut Option<u16>,
    ) -> Result<Value, NodeError> {
        let mut prepared = match call {
            Some(call) => connector::prepare(call, &task.input, &self.templates)?,
            None => connector::prepare_http(&task.input)?,
        };
        if let Some(idempotency) = call.and_then(|c| c.idempotency.as_ref()) {
            let name = HeaderName::from_bytes(idempotency.header.as_bytes()).map_err(|_| {
                permanent(format!(
                    "idempotency.header: `{}` is not a header name",
                    idempotency.header
                ))
            })?;
            let key = connector::idempotency_key(task.run_id, &task.node_id, task.item_index);
            let value = HeaderValue::from_str(&key)
                .map_err(|_| permanent("the idempotency key is not a header value"))?;
            prepared.headers.insert(name, value);
        }

        if session.token_needed() {
            self.renew(task, session, deadline, Renewal::Needed).await?;
        }
        let mut response = self.send(&prepared, session, deadline).await?;
        *status = Some(response.status);
        if response.status == 401 && matches!(session.auth, Auth::Oauth2(_)) {
            self.renew(task, session, deadline, Renewal::Rejected)
                .await?;
            response = self.send(&prepared, session, deadline).await?;
            *status = Some(response.status);
        }

        let spec = call.map(|c| &c.response);
        if let Some(mut error) = outcome::classify(
            response.status,
            response.retry_after.as_deref(),
            &response.text,
            Utc::now(),
        ) {
            if let Some(message) = spec.and_then(|s| connector::error_message(s, &response.value)) {
                error.message = format!("{}: {message}", error.message);
            }
            return Err(error);
        }
        match spec {
            Some(spec) => connector::interpret(spec, response.value, &self.templates),
            None => Ok(response.value),
        }
    }

    /// Sends the prepared request with the session's current credentials.
    async fn send(
        &self,
        prepared: &PreparedRequest,
        session: &Session,
        deadline: Instant,
    ) -> Result<Response, NodeError> {
        let mut request = prepared.clone();
        connector::authorize(&mut request, &session.auth, &session.credentials)?;
        self.http.send(request, remaining(deadline)?).await
    }

    /// Gets a usable access token into the session: one another task of this worker
    /// obtained for the connection meanwhile, or a new one from the token endpoint.
    async fn renew(
        &self,
        task: &NodeTask,
        session: &mut Session,
        deadline: Instant,
        renewal: Renewal,
    ) -> Result<(), NodeError> {
        let (Auth::Oauth2(spec), Some(connection_id)) = (&session.auth, session.connection_id)
        else {
            return Ok(());
        };
        let spec = spec.clone();
        // One renewal per connection at a time on this worker: a provider that rotates
        // refresh tokens accepts each one once, so concurrent refreshes would fail.
        let slot = self.tokens.slot(connection_id);
        let mut cached = slot.lock().await;
        let held = session.access_token();
        if let Some(fresh) = cached.as_ref().filter(|c| c.is_fresh(Utc::now()))
            && Some(fresh.tokens.access_token.expose_secret()) != held.as_ref().map(|s| s.as_str())
        {
            session.adopt(&fresh.tokens);
            return Ok(());
        }
        let span = tracing::info_span!(
            "oauth_token",
            otel.kind = "client",
            weft.connection_id = %connection_id,
            grant = ?spec.grant,
        );
        let tokens = self
            .obtain(task, session, &spec, deadline, renewal)
            .instrument(span)
            .await?;
        let Some(tokens) = tokens else {
            return Ok(());
        };
        tracing::info!(connection_id = %connection_id, "obtained a new OAuth access token");
        session.adopt(&tokens);
        *cached = Some(Cached {
            tokens,
            obtained_at: Instant::now(),
        });
        Ok(())
    }

    /// Asks the token endpoint; `None` when there is nothing to ask with and the
    /// current token should just be tried.
    async fn obtain(
        &self,
        task: &NodeTask,
        session: &mut Session,
        spec: &OAuth2,
        deadline: Instant,
        renewal: Renewal,
    ) -> Result<Option<TokenSet>, NodeError> {
        // Without a connection (client credentials from the manifest alone) every such
        // call shares the one slot of the nil id.
        let connection_id = session.connection_id.unwrap_or_else(ConnectionId::nil);
        let client = self.http.client();
        let client_id = session.field("client_id")?;
        let client_secret = session.field("client_secret")?;
        let (what, asked) = match spec.grant {
            Grant::ClientCredentials => (
                "obtaining an OAuth access token",
                tokio::time::timeout(
                    remaining(deadline)?,
                    token_endpoint::client_credentials(client, spec, &client_id, &client_secret),
                )
                .await,
            ),
            Grant::AuthorizationCode => {
                let refresh_token = session
                    .credentials
                    .get("refresh_token")
                    .map(|t| Zeroizing::new(t.expose_secret().to_owned()))
                    .filter(|t| !t.is_empty());
                let Some(refresh_token) = refresh_token else {
                    return match (renewal, session.access_token()) {
                        (_, None) => Err(permanent(format!(
                            "connection {connection_id} is not authorized yet: complete the OAuth flow (GET /api/v1/oauth/{}/start)",
                            task.connector
                        ))),
                        // Expiring soon but not yet expired: it may still work.
                        (Renewal::Needed, Some(_)) => Ok(None),
                        (Renewal::Rejected, Some(_)) => {
                            let message = "the provider rejected the access token and the connection has no refresh token: authorize the connection again".to_owned();
                            session.error = Some(message.clone());
                            Err(permanent(message))
                        }
                    };
                };
                (
                    "refreshing the OAuth access token",
                    tokio::time::timeout(
                        remaining(deadline)?,
                        token_endpoint::refresh(
                            client,
                            spec,
                            &client_id,
                            &client_secret,
                            &refresh_token,
                        ),
                    )
                    .await,
                )
            }
        };
        match asked {
            Err(_) => Err(NodeError::new(
                ErrorClass::Timeout,
                format!("{what} did not finish within the node's timeout"),
            )),
            Ok(Ok(tokens)) => Ok(Some(tokens)),
            Ok(Err(e)) if e.is_transient() => Err(NodeError::new(
                ErrorClass::Retryable,
                format!("{what} failed: {e}"),
            )),
            Ok(Err(e @ (OAuthError::Refused(_) | OAuthError::InvalidResponse(_)))) => {
                let message = format!("{what} failed: {e}");
                session.error = Some(message.clone());
                Err(permanent(message))
            }
            Ok(Err(e)) => Err(permanent(format!("{what} failed: {e}"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Renewal {
    /// No token yet, or it expires within [`REFRESH_MARGIN`].
    Needed,
    /// The upstream answered 401 to the token.
    Rejected,
}

fn remaining(deadline: Instant) -> Result<Duration, NodeError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(NodeError::new(
            ErrorClass::Timeout,
            "the node's timeout passed before the request could be sent",
        ));
    }
    Ok(left)
}

fn redact_error(error: &mut NodeError, secrets: &[String]) {
    if let Some(clean) = connector::redact_text(&error.message, secrets) {
        error.message = clean;
    }
    if let Some(body) = &error.body
        && let Some(clean) = connector::redact_text(body, secrets)
    {
        error.body = Some(clean);
    }
}

/// One attempt's view of its connection: the opened credentials, and what changed.
struct Session {
    connection_id: Option<ConnectionId>,
    auth: Auth,
    credentials: Credentials,
    /// Every secret value the attempt held, old tokens included.
    secrets: Zeroizing<Vec<String>>,
    /// New tokens were obtained: the credentials are sealed into the result.
    renewed: bool,
    /// The connection no longer works.
    error: Option<String>,
}

impl Session {
    fn open(task: &NodeTask, call: Option<&ActionCall>, keys: &KeyRing) -> Result<Self, NodeError> {
        let Some(call) = call else {
            return Ok(Self {
                connection_id: None,
                auth: Auth::None,
                credentials: Credentials::default(),
                secrets: Zeroizing::new(Vec::new()),
                renewed: false,
                error: None,
            });
        };
        let connection = call.connection.as_ref();
        if connection.is_none() && call.auth != Auth::None {
            return Err(permanent(format!(
                "`{}.{}` needs a connection ({} auth) and the node has none",
                task.connector,
                task.action,
                call.auth.kind()
            )));
        }
        let credentials = match connection.and_then(|c| Some((c.id, c.credentials.as_deref()?))) {
            None => Credentials::default(),
            Some((id, sealed)) => Credentials::open(keys, sealed, task.workspace_id, id)
                .map_err(|e| match e {
                    CredentialsError::Crypto(e) => permanent(format!(
                        "credentials of connection {id} do not decrypt with the key ring: {e}"
                    )),
                    CredentialsError::Malformed => permanent(format!(
                        "credentials of connection {id} are not a JSON object of text fields: save them again"
                    )),
                })?,
        };
        Ok(Self {
            connection_id: connection.map(|c| c.id),
            auth: call.auth.clone(),
            secrets: Zeroizing::new(credentials.secrets()),
            credentials,
            renewed: false,
            error: None,
        })
    }

    fn access_token(&self) -> Option<Zeroizing<String>> {
        self.credentials
            .get("access_token")
            .map(|t| Zeroizing::new(t.expose_secret().to_owned()))
            .filter(|t| !t.is_empty())
    }

    /// An OAuth2 connection without a token, or with one about to expire.
    fn token_needed(&self) -> bool {
        if !matches!(self.auth, Auth::Oauth2(_)) {
            return false;
        }
        let expiring = self.credentials.expires_at().is_some_and(|at| {
            (at - Utc::now())
                .to_std()
                .map_or(true, |left| left < REFRESH_MARGIN)
        });
        self.access_token().is_none() || expiring
    }

    fn field(&self, name: &str) -> Result<Zeroizing<String>, NodeError> {
        self.credentials
            .get(name)
            .map(|v| Zeroizing::new(v.expose_secret().to_owned()))
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                permanent(format!(
                    "the connection's credentials have no `{name}`: update the connection"
                ))
            })
    }

    fn adopt(&mut self, tokens: &TokenSet) {
        self.credentials.set_tokens(tokens);
        self.renewed = true;
        for secret in self.credentials.secrets() {
            if !self.secrets.contains(&secret) {
                self.secrets.push(secret);
            }
        }
        self.secrets
            .sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    }

    fn update(&self, keys: &KeyRing, workspace_id: WorkspaceId) -> Option<ConnectionUpdate> {
        let id = self.connection_id?;
        if !self.renewed && self.error.is_none() {
            return None;
        }
        Some(ConnectionUpdate {
            id,
            credentials: self
                .renewed
                .then(|| self.credentials.seal(keys, workspace_id, id)),
            error: self.error.as_ref().map(|message| {
                connector::redact_text(message, &self.secrets).unwrap_or_else(|| message.clone())
            }),
        })
    }
}

struct Cached {
    tokens: TokenSet,
    obtained_at: Instant,
}

impl Cached {
    fn is_fresh(&self, now: DateTime<Utc>) -> bool {
        let unexpired = self
            .tokens
            .expires_at
            .is_none_or(|at| (at - now).to_std().is_ok_and(|left| left >= REFRESH_MARGIN));
        unexpired && self.obtained_at.elapsed() < TOKEN_CACHE_AGE
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// The tokens this worker obtained, per connection, until the scheduler hands out tasks
/// that carry them.
#[derive(Default)]
struct TokenCache {
    slots: Mutex<HashMap<ConnectionId, Slot>>,
}

impl TokenCache {
    fn slot(&self, connection_id: ConnectionId) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.len() >= TOKEN_CACHE_SIZE {
            slots.retain(|_, slot| Arc::strong_count(slot) > 1);
        }
        slots.entry(connection_id).or_default().clone()
    }
}
