//! Webhook endpoints: `ANY /hooks/{token}` starts a run of the token's scenario, if it is
//! active. No API key: the unguessable token is the credential.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use uuid::Uuid;
use weft_shared::scenario::TriggerKind;

use super::runs::RunAccepted;
use crate::enqueue::{Target, enqueue};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, body_rejection};
use crate::metrics::WebhookOutcome;
use crate::state::AppState;
use crate::trigger::Trigger;

/// Deliver a webhook: records a run of the token's scenario and enqueues it.
///
/// Accepted with any method. The body is captured by its content type: JSON, form fields
/// (an object), empty (null), anything else as text. `Authorization`, `Cookie`,
/// `Proxy-Authorization` and signature headers are redacted in the stored trigger.
#[utoipa::path(
    method(post, put, patch, get, delete),
    path = "/hooks/{token}",
    tag = "webhooks",
    params(("token" = String, Path, description = "The scenario's webhook token")),
    request_body(content = Object, description = "Any body, up to the webhook body limit"),
    responses(
        (status = 202, description = "Recorded and enqueued", body = RunAccepted),
        (status = 400, description = "Body declared as JSON does not parse", body = ErrorBody),
        (status = 404, description = "Unknown token, or the scenario is not active", body = ErrorBody),
        (status = 413, description = "Body over the webhook body limit", body = ErrorBody),
        (status = 503, description = "Database or broker unavailable: nothing was started, retry later", body = ErrorBody),
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    ApiPath(token): ApiPath<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<RunAccepted>), ApiError> {
    let delivery = Delivery {
        method,
        uri,
        headers,
        body,
    };
    let result = accept(&state, &token, delivery).await;
    state.metrics.webhook_received(outcome(&result));
    let run_id = result?;
    Ok((StatusCode::ACCEPTED, Json(RunAccepted { run_id })))
}

/// The request, as received.
struct Delivery {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
}

async fn accept(state: &AppState, token: &str, delivery: Delivery) -> Result<Uuid, ApiError> {
    let body = delivery
        .body
        .map_err(|rejection| body_rejection(&rejection, state.webhook_max_body))?;
    let target = find_target(state, token).await?;
    let trigger = Trigger::webhook(
        &delivery.method,
        &delivery.headers,
        delivery.uri.query(),
        &body,
    )
    .map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body is declared as JSON but does not parse: {e}"),
        )
    })?;
    enqueue(state, target, TriggerKind::Webhook, &trigger).await
}

/// The active scenario behind a token. Unknown, paused, draft and deleted all answer 404:
/// the sender cannot tell them apart, and should not.
async fn find_target(state: &AppState, token: &str) -> Result<Target, ApiError> {
    let client = state.pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT t.workspace_id, t.scenario_id
             FROM webhook_tokens t JOIN scenarios s ON s.id = t.scenario_id
             WHERE t.token = $1 AND s.status = 'active' AND s.deleted_at IS NULL",
        )
        .await?;
    let row = client
        .query_opt(&statement, &[&token])
        .await?
        .ok_or(ApiError::NotFound("webhook"))?;
    Ok(Target {
        workspace_id: row.try_get("workspace_id")?,
        scenario_id: row.try_get("scenario_id")?,
    })
}

fn outcome(result: &Result<Uuid, ApiError>) -> WebhookOutcome {
    match result {
        Ok(_) => WebhookOutcome::Accepted,
        Err(ApiError::NotFound(_)) => WebhookOutcome::NotFound,
        Err(ApiError::PayloadTooLarge { .. }) => WebhookOutcome::TooLarge,
        Err(ApiError::BadRequest { .. }) => WebhookOutcome::Invalid,
        Err(_) => WebhookOutcome::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_counted_by_what_the_sender_should_do() {
        assert_eq!(outcome(&Ok(Uuid::now_v7())), WebhookOutcome::Accepted);
        assert_eq!(
            outcome(&Err(ApiError::NotFound("webhook"))),
            WebhookOutcome::NotFound
        );
        assert_eq!(
            outcome(&Err(ApiError::PayloadTooLarge { limit: 1 })),
            WebhookOutcome::TooLarge
        );
        assert_eq!(
            outcome(&Err(ApiError::bad_request("invalid_json", "x"))),
            WebhookOutcome::Invalid
        );
        assert_eq!(
            outcome(&Err(ApiError::BrokerUnavailable)),
            WebhookOutcome::Unavailable
        );
    }
}
