//! The audit log (architecture §11): who changed what, written in the transaction of the
//! change it records, so neither can exist without the other.
//!
//! A summary names the fields that changed and their non-secret values; a secret, token or
//! credential never goes in (the callers pass only fields they chose).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use deadpool_postgres::GenericClient;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;
use weft_domain::ids::{ApiKeyId, AuditEventId, UserId, WorkspaceId};

/// Who did it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    User(UserId),
    ApiKey(ApiKeyId),
    /// An instance operator with `WEFT_ADMIN_TOKEN`.
    AdminToken,
}

impl Actor {
    pub fn kind(self) -> ActorKind {
        match self {
            Self::User(_) => ActorKind::User,
            Self::ApiKey(_) => ActorKind::ApiKey,
            Self::AdminToken => ActorKind::AdminToken,
        }
    }

    /// An actor stored as its kind and id (see [`Actor::kind`], [`Actor::id`]).
    pub fn stored(kind: Option<&str>, id: Option<Uuid>) -> Option<Self> {
        match (ActorKind::named(kind?)?, id) {
            (ActorKind::User, Some(id)) => Some(Self::User(UserId::from_uuid(id))),
            (ActorKind::ApiKey, Some(id)) => Some(Self::ApiKey(ApiKeyId::from_uuid(id))),
            (ActorKind::AdminToken, None) => Some(Self::AdminToken),
            _ => None,
        }
    }

    pub fn id(self) -> Option<Uuid> {
        match self {
            Self::User(id) => Some(id.as_uuid()),
            Self::ApiKey(id) => Some(id.as_uuid()),
            Self::AdminToken => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    User,
    ApiKey,
    AdminToken,
    /// Weft itself (retention, a scheduler's decision).
    System,
}

impl ActorKind {
    const ALL: [Self; 4] = [Self::User, Self::ApiKey, Self::AdminToken, Self::System];

    /// The kind stored as `name` (see [`ActorKind::as_str`]).
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::ApiKey => "api_key",
            Self::AdminToken => "admin_token",
            Self::System => "system",
        }
    }
}

/// Who made or changed something, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct ActorView {
    pub kind: ActorKind,
    /// The user's or the API key's id; null for the admin token and the system.
    pub id: Option<Uuid>,
}

impl ActorView {
    /// The actor stored in the columns `<column>_kind` and `<column>_id`, if any.
    pub fn read(
        row: &tokio_postgres::Row,
        column: &str,
    ) -> Result<Option<Self>, tokio_postgres::Error> {
        let kind: Option<String> = row.try_get(format!("{column}_kind").as_str())?;
        let id: Option<Uuid> = row.try_get(format!("{column}_id").as_str())?;
        Ok(kind.and_then(|kind| Self::of(&kind, id)))
    }

    pub fn of(kind: &str, id: Option<Uuid>) -> Option<Self> {
        Some(Self {
            kind: ActorKind::named(kind)?,
            id,
        })
    }
}

/// Where a request came from, as far as the gateway can tell.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub address: Option<String>,
    pub user_agent: Option<String>,
}

/// Longest user agent kept, in characters: the header is the client's to fill.
const MAX_USER_AGENT_CHARS: usize = 300;

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts))
    }
}

impl Client {
    pub fn of(parts: &Parts) -> Self {
        let address = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip().to_string());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(|agent| agent.chars().take(MAX_USER_AGENT_CHARS).collect());
        Self {
            address,
            user_agent,
        }
    }
}

/// One thing that happened, as the log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Action {
    #[serde(rename = "workspace.created")]
    WorkspaceCreated,
    #[serde(rename = "workspace.renamed")]
    WorkspaceRenamed,
    #[serde(rename = "workspace.deleted")]
    WorkspaceDeleted,
    #[serde(rename = "user.created")]
    UserCreated,
    #[serde(rename = "user.password_reset")]
    PasswordReset,
    #[serde(rename = "user.disabled")]
    UserDisabled,
    #[serde(rename = "user.enabled")]
    UserEnabled,
    #[serde(rename = "member.password_reset_issued")]
    PasswordResetIssued,
    #[serde(rename = "session.login")]
    SessionLogin,
    #[serde(rename = "session.login_failed")]
    SessionLoginFailed,
    #[serde(rename = "session.logout")]
    SessionLogout,
    #[serde(rename = "session.revoked")]
    SessionRevoked,
    #[serde(rename = "member.added")]
    MemberAdded,
    #[serde(rename = "member.role_changed")]
    MemberRoleChanged,
    #[serde(rename = "member.removed")]
    MemberRemoved,
    #[serde(rename = "invitation.created")]
    InvitationCreated,
    #[serde(rename = "invitation.revoked")]
    InvitationRevoked,
    #[serde(rename = "api_key.created")]
    ApiKeyCreated,
    #[serde(rename = "api_key.rotated")]
    ApiKeyRotated,
    #[serde(rename = "api_key.revoked")]
    ApiKeyRevoked,
    #[serde(rename = "connector.created")]
    ConnectorCreated,
    #[serde(rename = "connector.updated")]
    ConnectorUpdated,
    #[serde(rename = "connector.deleted")]
    ConnectorDeleted,
    #[serde(rename = "connector.action_executed")]
    ConnectorActionExecuted,
    #[serde(rename = "connection.created")]
    ConnectionCreated,
    #[serde(rename = "connection.updated")]
    ConnectionUpdated,
    #[serde(rename = "connection.deleted")]
    ConnectionDeleted,
    #[serde(rename = "connection.tested")]
    ConnectionTested,
    #[serde(rename = "connection.authorization_started")]
    ConnectionAuthorizationStarted,
    #[serde(rename = "connection.authorized")]
    ConnectionAuthorized,
    #[serde(rename = "connection.authorization_failed")]
    ConnectionAuthorizationFailed,
    #[serde(rename = "scenario.created")]
    ScenarioCreated,
    #[serde(rename = "scenario.updated")]
    ScenarioUpdated,
    #[serde(rename = "scenario.deleted")]
    ScenarioDeleted,
    #[serde(rename = "scenario.activated")]
    ScenarioActivated,
    #[serde(rename = "scenario.paused")]
    ScenarioPaused,
    #[serde(rename = "run.started")]
    RunStarted,
    #[serde(rename = "run.cancelled")]
    RunCancelled,
    #[serde(rename = "run.replayed")]
    RunReplayed,
}

impl Action {
    pub fn as_str(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|name| name.as_str().map(str::to_owned))
            .expect("an action serializes to its name")
    }
}

/// The event a change records.
#[derive(Debug)]
pub struct Event {
    pub action: Action,
    /// What kind of object changed: `scenario`, `connection`, `member`, …
    pub target_kind: &'static str,
    pub target_id: Option<String>,
    /// Changed field names and non-secret values.
    pub summary: Value,
}

impl Event {
    pub fn new(action: Action, target_kind: &'static str, target_id: impl ToString) -> Self {
        Self {
            action,
            target_kind,
            target_id: Some(target_id.to_string()),
            summary: Value::Object(serde_json::Map::new()),
        }
    }

    pub fn with_summary(mut self, summary: Value) -> Self {
        self.summary = summary;
        self
    }
}

/// Appends `event`; call it with the transaction that makes the change.
pub async fn record(
    db: &impl GenericClient,
    workspace: Option<WorkspaceId>,
    actor: Option<Actor>,
    client: &Client,
    event: Event,
) -> Result<AuditEventId, tokio_postgres::Error> {
    let id = AuditEventId::generate();
    let kind = actor.map_or(ActorKind::System, Actor::kind);
    db.execute(
        "INSERT INTO audit_events (id, workspace_id, actor_kind, actor_id, client_address, \
         user_agent, action, target_kind, target_id, summary) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &id,
            &workspace,
            &kind.as_str(),
            &actor.and_then(Actor::id),
            &client.address,
            &client.user_agent,
            &event.action.as_str(),
            &event.target_kind,
            &event.target_id,
            &event.summary,
        ],
    )
    .await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_read_back_as_they_were_stored() {
        let user = Actor::User(UserId::generate());
        let key = Actor::ApiKey(ApiKeyId::generate());
        for actor in [user, key, Actor::AdminToken] {
            assert_eq!(
                Actor::stored(Some(actor.kind().as_str()), actor.id()),
                Some(actor)
            );
        }
        assert_eq!(Actor::stored(None, None), None);
        assert_eq!(Actor::stored(Some("user"), None), None);
    }

    #[test]
    fn actions_are_named_object_dot_verb() {
        assert_eq!(Action::ScenarioUpdated.as_str(), "scenario.updated");
        assert_eq!(Action::SessionLoginFailed.as_str(), "session.login_failed");
        assert_eq!(
            Action::ConnectorActionExecuted.as_str(),
            "connector.action_executed"
        );
    }
}
