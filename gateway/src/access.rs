//! What a caller may do (architecture §11): every route's rule in one table, checked by
//! one middleware before any handler runs.
//!
//! The middleware authenticates the caller as its route's rule asks (see [`crate::auth`]),
//! decides, and hands the handler what it learned: [`Workspace`] (the workspace, the
//! caller's role in it and who they are), [`Person`] (a signed-in person outside any
//! workspace) or [`Admin`]. A handler cannot take one its rule did not produce, and a
//! route without a rule answers 500 to everyone (the access test finds it first).

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use deadpool_postgres::GenericClient;
use weft_domain::access::{Permission, Role};
use weft_domain::ids::{SessionId, UserId, WorkspaceId};

use crate::audit::{self, Actor, Client, Event};
use crate::auth::{self, stored_role};
use crate::error::ApiError;
use crate::identity::sessions;
use crate::state::AppState;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone: the document, logging in, signing up (when open), the OAuth callback (its
    /// `state` is the credential), accepting an invitation and resetting a password (their
    /// tokens are).
    Public,
    /// The instance operator's `WEFT_ADMIN_TOKEN`.
    Admin,
    /// A signed-in person (session cookie), outside any workspace.
    Person,
    /// A caller acting in one workspace (API key, or session and `X-Weft-Workspace`) whose
    /// role holds the permission.
    Workspace(Permission),
}

use Permission::{Edit, ManageAccess, Operate, Own, Read, ReadAudit};

/// Every route of the API and what it needs. Paths are the router's (and the OpenAPI
/// document's) templates.
const RULES: &[(Method, &str, Rule)] = &[
    (Method::GET, "/api/v1/openapi.json", Rule::Public),
    (Method::POST, "/api/v1/admin/workspaces", Rule::Admin),
    // A person and their sessions.
    (Method::POST, "/api/v1/session", Rule::Public),
    (Method::GET, "/api/v1/session", Rule::Person),
    (Method::DELETE, "/api/v1/session", Rule::Person),
    (Method::GET, "/api/v1/me/sessions", Rule::Person),
    (Method::DELETE, "/api/v1/me/sessions", Rule::Person),
    (Method::DELETE, "/api/v1/me/sessions/{id}", Rule::Person),
    (Method::POST, "/api/v1/signup", Rule::Public),
    (Method::GET, "/api/v1/sign-in-methods", Rule::Public),
    (Method::GET, "/api/v1/sso/start", Rule::Public),
    (Method::GET, "/api/v1/sso/callback", Rule::Public),
    (Method::POST, "/api/v1/password-reset", Rule::Public),
    (Method::GET, "/api/v1/workspaces", Rule::Person),
    (Method::POST, "/api/v1/workspaces", Rule::Person),
    // The workspace itself, its people and keys.
    (Method::GET, "/api/v1/workspace", Rule::Workspace(Read)),
    (
        Method::PATCH,
        "/api/v1/workspace",
        Rule::Workspace(ManageAccess),
    ),
    (Method::DELETE, "/api/v1/workspace", Rule::Workspace(Own)),
    (Method::GET, "/api/v1/members", Rule::Workspace(Read)),
    (
        Method::PATCH,
        "/api/v1/members/{user_id}",
        Rule::Workspace(ManageAccess),
    ),
    (
        Method::DELETE,
        "/api/v1/members/{user_id}",
        Rule::Workspace(ManageAccess),
    ),
    (
        Method::POST,
        "/api/v1/members/{user_id}/password-reset",
        Rule::Workspace(Own),
    ),
    (
        Method::PUT,
        "/api/v1/members/{user_id}/disabled",
        Rule::Workspace(Own),
    ),
    (
        Method::GET,
        "/api/v1/invitations",
        Rule::Workspace(ManageAccess),
    ),
    (
        Method::POST,
        "/api/v1/invitations",
        Rule::Workspace(ManageAccess),
    ),
    (
        Method::DELETE,
        "/api/v1/invitations/{id}",
        Rule::Workspace(ManageAccess),
    ),
    (Method::POST, "/api/v1/invitations/accept", Rule::Public),
    (
        Method::GET,
        "/api/v1/api-keys",
        Rule::Workspace(ManageAccess),
    ),
    (
        Method::POST,
        "/api/v1/api-keys",
        Rule::Workspace(ManageAccess),
    ),
    (
        Method::DELETE,
        "/api/v1/api-keys/{id}",
        Rule::Workspace(ManageAccess),
    ),
    (
        Method::POST,
        "/api/v1/api-keys/{id}/rotate",
        Rule::Workspace(ManageAccess),
    ),
    (
        Method::GET,
        "/api/v1/audit-events",
        Rule::Workspace(ReadAudit),
    ),
    // Connectors and connections.
    (Method::GET, "/api/v1/connectors", Rule::Workspace(Read)),
    (Method::POST, "/api/v1/connectors", Rule::Workspace(Edit)),
    (
        Method::GET,
        "/api/v1/connectors/{key}",
        Rule::Workspace(Read),
    ),
    (
        Method::PUT,
        "/api/v1/connectors/{key}",
        Rule::Workspace(Edit),
    ),
    (
        Method::DELETE,
        "/api/v1/connectors/{key}",
        Rule::Workspace(Edit),
    ),
    (
        Method::POST,
        "/api/v1/connectors/{key}/actions/{action}/execute",
        Rule::Workspace(Edit),
    ),
    (Method::GET, "/api/v1/connections", Rule::Workspace(Read)),
    (Method::POST, "/api/v1/connections", Rule::Workspace(Edit)),
    (
        Method::GET,
        "/api/v1/connections/{id}",
        Rule::Workspace(Read),
    ),
    (
        Method::PATCH,
        "/api/v1/connections/{id}",
        Rule::Workspace(Edit),
    ),
    (
        Method::DELETE,
        "/api/v1/connections/{id}",
        Rule::Workspace(Edit),
    ),
    (
        Method::POST,
        "/api/v1/connections/{id}/test",
        Rule::Workspace(Edit),
    ),
    (
        Method::GET,
        "/api/v1/oauth/{connector}/start",
        Rule::Workspace(Edit),
    ),
    (Method::GET, "/api/v1/oauth/callback", Rule::Public),
    // Scenarios and runs.
    (Method::GET, "/api/v1/scenarios", Rule::Workspace(Read)),
    (Method::POST, "/api/v1/scenarios", Rule::Workspace(Edit)),
    (Method::GET, "/api/v1/scenarios/{id}", Rule::Workspace(Read)),
    (Method::PUT, "/api/v1/scenarios/{id}", Rule::Workspace(Edit)),
    (
        Method::DELETE,
        "/api/v1/scenarios/{id}",
        Rule::Workspace(Edit),
    ),
    (
        Method::POST,
        "/api/v1/scenarios/{id}/activate",
        Rule::Workspace(Edit),
    ),
    (
        Method::POST,
        "/api/v1/scenarios/{id}/pause",
        Rule::Workspace(Edit),
    ),
    (
        Method::GET,
        "/api/v1/scenarios/{id}/versions",
        Rule::Workspace(Read),
    ),
    (
        Method::POST,
        "/api/v1/scenarios/{id}/runs",
        Rule::Workspace(Operate),
    ),
    (Method::GET, "/api/v1/runs", Rule::Workspace(Read)),
    (Method::GET, "/api/v1/runs/{id}", Rule::Workspace(Read)),
    (
        Method::POST,
        "/api/v1/runs/{id}/cancel",
        Rule::Workspace(Operate),
    ),
    (
        Method::POST,
        "/api/v1/runs/{id}/replay",
        Rule::Workspace(Operate),
    ),
];

/// The rule of a route, if it has one.
pub fn rule(method: &Method, path: &str) -> Option<Rule> {
    RULES
        .iter()
        .find(|(m, p, _)| m == method && *p == path)
        .map(|(_, _, rule)| *rule)
}

/// The header a signed-in person names the workspace they act in with.
pub const WORKSPACE_HEADER: &str = "x-weft-workspace";

/// Decides each API request by its route's rule; see the module documentation.
pub async fn authorize(
    State(state): State<AppState>,
    matched: MatchedPath,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let rule = rule(&parts.method, matched.as_str()).ok_or_else(|| {
        ApiError::Internal(
            format!("no access rule for {} {}", parts.method, matched.as_str()).into(),
        )
    })?;
    let client = Client::of(&parts);
    match rule {
        Rule::Public => {}
        Rule::Admin => {
            auth::admin(&parts.headers, state.admin_token.as_deref())?;
            parts.extensions.insert(Admin { client });
        }
        Rule::Person => {
            let person = person(&state, &parts.method, &parts.headers, client).await?;
            parts.extensions.insert(person);
        }
        Rule::Workspace(permission) => {
            let workspace = workspace(&state, &parts.method, &parts.headers, client).await?;
            if !workspace.role.allows(permission) {
                return Err(ApiError::Forbidden {
                    role: workspace.role,
                    needed: permission.least_role(),
                });
            }
            parts.extensions.insert(workspace);
        }
    }
    Ok(next.run(Request::from_parts(parts, body)).await)
}

/// The signed-in person of a session cookie; a state-changing request must also pass the
/// same-site check.
async fn person(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    client: Client,
) -> Result<Person, ApiError> {
    let token = state
        .sessions
        .token(headers)
        .ok_or(ApiError::Unauthorized)?;
    let db = state.pool.get().await?;
    let live = sessions::find(&db, token, &state.sessions)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    auth::same_site(method, headers, &state.public_origin, Some(token))?;
    Ok(Person {
        user: live.user,
        session: live.id,
        csrf_token: sessions::csrf_token(token),
        client,
    })
}

/// The workspace a caller acts in and their role there: an API key's own, or a signed-in
/// person's membership of the workspace named in `X-Weft-Workspace`. A workspace the
/// person is not a member of is not found, like any other workspace's object.
async fn workspace(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    client: Client,
) -> Result<Workspace, ApiError> {
    if let Some(token) = auth::bearer(headers) {
        let db = state.pool.get().await?;
        let holder = auth::api_key(&db, token)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        return Ok(Workspace {
            id: holder.workspace,
            role: holder.role,
            actor: Actor::ApiKey(holder.key),
            client,
        });
    }
    let person = person(state, method, headers, client).await?;
    let id: WorkspaceId = headers
        .get(WORKSPACE_HEADER)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "workspace_required",
                "name the workspace to act in: `X-Weft-Workspace: <workspace id>`",
            )
        })?
        .parse()
        .map_err(|_| {
            ApiError::bad_request(
                "workspace_required",
                "`X-Weft-Workspace` must be a workspace id (UUID)",
            )
        })?;
    let db = state.pool.get().await?;
    let role = membership(&db, id, person.user)
        .await?
        .ok_or(ApiError::NotFound("workspace"))?;
    Ok(Workspace {
        id,
        role,
        actor: Actor::User(person.user),
        client: person.client,
    })
}

/// A person's role in a workspace, if they are a member.
pub async fn membership(
    db: &impl GenericClient,
    workspace: WorkspaceId,
    user: UserId,
) -> Result<Option<Role>, ApiError> {
    let row = db
        .query_opt(
            "SELECT role FROM memberships WHERE workspace_id = $1 AND user_id = $2",
            &[&workspace, &user],
        )
        .await?;
    row.map(|row| stored_role(row.try_get("role")?)).transpose()
}

/// The workspace the caller acts in, their role there, and who they are. Every query of a
/// handler taking this filters by its id.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub role: Role,
    pub actor: Actor,
    pub client: Client,
}

impl Workspace {
    /// Records `event` in this workspace's audit log, as this caller; call it with the
    /// transaction that makes the change.
    pub async fn audit(
        &self,
        db: &impl GenericClient,
        event: Event,
    ) -> Result<(), tokio_postgres::Error> {
        audit::record(db, Some(self.id), Some(self.actor), &self.client, event).await?;
        Ok(())
    }
}

/// A signed-in person, and the session they came with.
#[derive(Debug, Clone)]
pub struct Person {
    pub user: UserId,
    pub session: SessionId,
    /// What the web app must send in `X-Weft-CSRF`.
    pub csrf_token: String,
    pub client: Client,
}

/// Proof that the caller presented the admin token.
#[derive(Debug, Clone)]
pub struct Admin {
    pub client: Client,
}

/// Hands a handler what the middleware decided; a handler asking for one its route's
/// rule does not produce is a bug, answered 500.
fn decided<T: Clone + Send + Sync + 'static>(parts: &Parts) -> Result<T, ApiError> {
    parts.extensions.get::<T>().cloned().ok_or_else(|| {
        ApiError::Internal(
            format!(
                "{} {} asks for {} but its access rule does not provide it",
                parts.method,
                parts.uri.path(),
                std::any::type_name::<T>()
            )
            .into(),
        )
    })
}

macro_rules! decided_extractor {
    ($($name:ident),*) => {$(
        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
                decided(parts)
            }
        }
    )*};
}

decided_extractor!(Workspace, Person, Admin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_route_has_two_rules() {
        for (index, (method, path, _)) in RULES.iter().enumerate() {
            let later = RULES[index + 1..]
                .iter()
                .any(|(m, p, _)| m == method && p == path);
            assert!(!later, "{method} {path} is listed twice");
        }
    }

    #[test]
    fn rules_are_found_by_method_and_template() {
        assert_eq!(
            rule(&Method::DELETE, "/api/v1/scenarios/{id}"),
            Some(Rule::Workspace(Edit))
        );
        assert_eq!(rule(&Method::PATCH, "/api/v1/scenarios/{id}"), None);
        assert_eq!(
            rule(&Method::GET, "/api/v1/audit-events"),
            Some(Rule::Workspace(ReadAudit))
        );
    }
}
