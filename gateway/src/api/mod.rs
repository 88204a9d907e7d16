//! The HTTP API (architecture §7): the routes, and the OpenAPI document generated from them.
//!
//! Every handler carries `#[utoipa::path]`, and routes are registered through
//! `utoipa_axum::routes!`, so a route cannot exist without being documented.

mod account;
mod admin;
mod api_keys;
mod audit_events;
mod connections;
mod connectors;
mod hooks;
mod invitations;
mod members;
mod oauth;
mod runs;
mod scenarios;
mod session;
mod sso;
pub(crate) mod workspaces;

pub use runs::{ItemView, NodeRunView, RunAccepted, RunDetail, RunSummary};

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::any;
use axum::{Extension, Router, middleware};
use utoipa::openapi::schema::ObjectBuilder;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{OpenApi as OpenApiDocument, Ref};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use weft_domain::scenario::MAX_RESPOND_TIMEOUT;

use crate::access;
use crate::error::ApiError;
use crate::layers;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Weft API",
        description = "Connectors, connections, scenarios, runs and webhooks of a Weft workspace. Authenticate with `Authorization: Bearer <api key>`."
    ),
    // Registered with `any` below rather than through `routes!`, which takes a fixed
    // list of methods.
    paths(hooks::receive),
    modifiers(&SecuritySchemes, &WebhookMethods),
    tags(
        (name = "admin", description = "Workspaces; needs the admin token"),
        (name = "people", description = "Signing in and out, sessions, accepting invitations"),
        (name = "workspaces", description = "A workspace's members, invitations, API keys and audit log"),
        (name = "connectors", description = "The connector catalog: built-ins and the workspace's own manifests; running one action directly"),
        (name = "connections", description = "Accounts of a connector: credentials go in, never come out"),
        (name = "oauth", description = "The OAuth2 authorization-code flow of a connection"),
        (name = "scenarios", description = "Scenario definitions, versions and activation"),
        (name = "runs", description = "Starting and inspecting runs"),
        (name = "webhooks", description = "Webhook triggers; the token in the path is the credential"),
        (name = "meta", description = "This document"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut OpenApiDocument) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme("api_key", bearer("A workspace API key (`weft_…`)"));
        components.add_security_scheme("admin_token", bearer("The gateway's WEFT_ADMIN_TOKEN"));
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "__Host-weft_session",
                "A signed-in person's session (`weft_session` on a loopback HTTP address). Requests that change state also send `X-Weft-CSRF`; workspace endpoints name the workspace in `X-Weft-Workspace`.",
            ))),
        );
        // Every endpoint an API key may call, a signed-in person may call too.
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let Some(security) = &mut operation.security else {
                    continue;
                };
                let by_key = serde_json::to_value(&*security)
                    .is_ok_and(|value| value.to_string().contains("\"api_key\""));
                if by_key {
                    security.push(SecurityRequirement::new("session", Vec::<String>::new()));
                }
            }
        }
    }
}

/// `/hooks/{token}` is one handler for every method, documented once: each method gets an
/// operation id of its own (generators need them unique; POST keeps the plain name), and
/// the body, which may be anything, a named schema.
struct WebhookMethods;

impl Modify for WebhookMethods {
    fn modify(&self, openapi: &mut OpenApiDocument) {
        const PAYLOAD: &str = "WebhookPayload";
        let components = openapi.components.get_or_insert_with(Default::default);
        components.schemas.insert(
            PAYLOAD.to_owned(),
            ObjectBuilder::new()
                .description(Some("Any body, up to the webhook body limit; captured by its content type (JSON, form fields, text)"))
                .into(),
        );
        let Some(hooks) = openapi.paths.paths.get_mut("/hooks/{token}") else {
            return;
        };
        let methods = [
            (&mut hooks.post, ""),
            (&mut hooks.put, "Put"),
            (&mut hooks.patch, "Patch"),
            (&mut hooks.get, "Get"),
            (&mut hooks.delete, "Delete"),
        ];
        for (operation, suffix) in methods {
            let Some(operation) = operation else { continue };
            if let Some(id) = &mut operation.operation_id {
                id.push_str(suffix);
            }
            let bodies = operation.request_body.iter_mut();
            for content in bodies.flat_map(|body| body.content.values_mut()) {
                content.schema = Some(Ref::from_schema_name(PAYLOAD).into());
            }
        }
    }
}

/// The documented API routes, without state, each bounded by `request_timeout` but for
/// the two that wait for a worker under the action's own timeout (and answer 504
/// themselves when it passes).
fn routes(request_timeout: Duration) -> OpenApiRouter<AppState> {
    let bounded = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(admin::create_workspace))
        .routes(routes!(session::login, session::current, session::logout))
        .routes(routes!(session::list_mine, session::revoke_all))
        .routes(routes!(session::revoke))
        .routes(routes!(workspaces::list_mine, workspaces::create))
        .routes(routes!(
            workspaces::get,
            workspaces::rename,
            workspaces::delete
        ))
        .routes(routes!(members::list))
        .routes(routes!(members::change_role, members::remove))
        .routes(routes!(members::issue_password_reset))
        .routes(routes!(members::set_disabled))
        .routes(routes!(account::sign_up))
        .routes(routes!(sso::methods))
        .routes(routes!(sso::start))
        .routes(routes!(sso::callback))
        .routes(routes!(account::reset_password))
        .routes(routes!(invitations::create, invitations::list))
        .routes(routes!(invitations::revoke))
        .routes(routes!(invitations::accept))
        .routes(routes!(api_keys::list, api_keys::create))
        .routes(routes!(api_keys::revoke))
        .routes(routes!(api_keys::rotate))
        .routes(routes!(audit_events::list))
        .routes(routes!(
            connectors::listing::list,
            connectors::registration::create
        ))
        .routes(routes!(
            connectors::listing::get,
            connectors::registration::update,
            connectors::registration::delete
        ))
        .routes(routes!(
            connections::handlers::list,
            connections::handlers::create
        ))
        .routes(routes!(
            connections::handlers::get,
            connections::handlers::update,
            connections::handlers::delete
        ))
        .routes(routes!(oauth::start))
        .routes(routes!(oauth::callback))
        .routes(routes!(scenarios::create, scenarios::list))
        .routes(routes!(
            scenarios::get,
            scenarios::update,
            scenarios::delete
        ))
        .routes(routes!(scenarios::activate))
        .routes(routes!(scenarios::pause))
        .routes(routes!(scenarios::versions))
        .routes(routes!(runs::start))
        .routes(routes!(runs::list))
        .routes(routes!(runs::get))
        .routes(routes!(runs::cancel))
        .routes(routes!(runs::replay))
        .routes(routes!(openapi_json))
        .layer(middleware::from_fn_with_state(
            request_timeout,
            layers::request_timeout,
        ));
    let waiting_for_a_worker = OpenApiRouter::new()
        .routes(routes!(connectors::execution::execute))
        .routes(routes!(connections::handlers::test));
    bounded.merge(waiting_for_a_worker)
}

/// The whole HTTP application: API, webhooks, JSON fallbacks, and the layers around
/// every request (request id, span, metrics, panics, compression).
pub fn router(state: AppState) -> Router {
    let (api, document) = routes(state.request_timeout).split_for_parts();
    let document = Document(Bytes::from(
        document
            .to_json()
            .expect("the OpenAPI document is plain data and serializes"),
    ));
    let api = api
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            access::authorize,
        ))
        .layer(Extension(document))
        .layer(DefaultBodyLimit::max(state.api_max_body));
    // A webhook may wait for its run up to its `respond_timeout`, and must not be cut
    // while it does: its run is already started, and a 504 would make its sender retry.
    let hooks = layers::with_timeout(
        Router::new().route("/hooks/{token}", any(hooks::receive)),
        state.request_timeout + MAX_RESPOND_TIMEOUT,
    )
    .layer(DefaultBodyLimit::max(state.webhook_max_body));
    let app = api
        .merge(hooks)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    // Last, so they wrap every route and the fallbacks, and see the matched route.
    layers::around_every_request(app, state.metrics.clone()).with_state(state)
}

/// This OpenAPI document.
#[utoipa::path(
    get,
    operation_id = "getOpenApiDocument",
    path = "/api/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json"))
)]
async fn openapi_json(Extension(Document(document)): Extension<Document>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document)
}

/// The OpenAPI document, rendered once at start.
#[derive(Clone)]
struct Document(Bytes);

async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> serde_json::Value {
        serde_json::to_value(routes(Duration::from_secs(30)).into_openapi())
            .expect("the document serializes")
    }

    #[test]
    fn the_document_covers_every_endpoint() {
        let document = document();
        assert!(
            document["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "{}",
            document["openapi"]
        );
        let expected = [
            ("/api/v1/admin/workspaces", "post"),
            ("/api/v1/connectors", "get"),
            ("/api/v1/connectors", "post"),
            ("/api/v1/connectors/{key}", "get"),
            ("/api/v1/connectors/{key}", "put"),
            ("/api/v1/connectors/{key}", "delete"),
            ("/api/v1/connectors/{key}/actions/{action}/execute", "post"),
            ("/api/v1/connections", "get"),
            ("/api/v1/connections", "post"),
            ("/api/v1/connections/{id}", "get"),
            ("/api/v1/connections/{id}", "patch"),
            ("/api/v1/connections/{id}", "delete"),
            ("/api/v1/connections/{id}/test", "post"),
            ("/api/v1/oauth/{connector}/start", "get"),
            ("/api/v1/oauth/callback", "get"),
            ("/api/v1/scenarios", "post"),
            ("/api/v1/scenarios", "get"),
            ("/api/v1/scenarios/{id}", "get"),
            ("/api/v1/scenarios/{id}", "put"),
            ("/api/v1/scenarios/{id}", "delete"),
            ("/api/v1/scenarios/{id}/activate", "post"),
            ("/api/v1/scenarios/{id}/pause", "post"),
            ("/api/v1/scenarios/{id}/versions", "get"),
            ("/api/v1/scenarios/{id}/runs", "post"),
            ("/api/v1/runs", "get"),
            ("/api/v1/runs/{id}", "get"),
            ("/api/v1/runs/{id}/cancel", "post"),
            ("/api/v1/runs/{id}/replay", "post"),
            ("/hooks/{token}", "post"),
            ("/api/v1/openapi.json", "get"),
        ];
        for (path, method) in expected {
            assert!(
                document["paths"][path][method].is_object(),
                "{method} {path} is not documented"
            );
        }
    }

    #[test]
    fn the_document_names_its_security_schemes_and_error_shape() {
        let document = document();
        let schemes = &document["components"]["securitySchemes"];
        assert_eq!(schemes["api_key"]["scheme"], "bearer");
        assert_eq!(schemes["admin_token"]["scheme"], "bearer");
        assert!(document["components"]["schemas"]["ErrorBody"].is_object());
        let get_run = &document["paths"]["/api/v1/runs/{id}"]["get"];
        assert_eq!(get_run["security"][0]["api_key"], serde_json::json!([]));
        assert!(get_run["responses"]["404"].is_object());
        let callback = &document["paths"]["/api/v1/oauth/callback"]["get"];
        assert!(
            callback.get("security").is_none(),
            "the callback has no API key: its state is the credential"
        );
    }
}
