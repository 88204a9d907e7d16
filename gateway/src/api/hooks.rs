//! Webhook endpoints: `ANY /hooks/{token}` starts a run of the token's scenario, if it is
//! active. No API key: the unguessable token is the credential, and, when the scenario
//! requires it, the signature of the body.
//!
//! The order matters: the signature is verified over the raw body bytes before anything
//! else looks at the body, and a repeated delivery is recognised before anything starts.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;
use tokio_postgres::types::Json as Jsonb;
use utoipa::ToSchema;
use weft_domain::ids::RunId;

use weft_domain::scenario::{TriggerKind, WebhookOptions};
use weft_domain::signature::Scheme;

use super::runs::RunAccepted;
use crate::enqueue::{Enqueued, PendingRun, Target, enqueue, enqueue_delivery};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, body_rejection};
use crate::metrics::WebhookOutcome;
use crate::replies::{Pending, Reply};
use crate::secrets::webhook_signature_aad;
use crate::state::AppState;
use crate::trigger::Trigger;

/// Longest delivery key kept. An `Idempotency-Key` longer than this is refused; a
/// provider's delivery id longer than this is not one, and is not used.
const MAX_DELIVERY_KEY: usize = 255;

/// The answer to a delivery that repeats an earlier one.
#[derive(Debug, Serialize, ToSchema)]
pub struct DuplicateDelivery {
    /// The run the first delivery started.
    pub run_id: RunId,
    /// Always `true`.
    pub duplicate: bool,
}

/// Deliver a webhook: records a run of the token's scenario and enqueues it.
///
/// Accepted with any method. If the scenario requires signed webhooks, the signature is
/// verified over the raw body first. A delivery repeating one of the last 24 hours (same
/// `Idempotency-Key`, or the same delivery id of the signature scheme: `X-GitHub-Delivery`,
/// the Stripe event `id`, the Slack `event_id`) starts nothing and is answered 200 with the
/// first delivery's run. A scenario whose trigger has `respond: on_completion` holds the
/// request until its run ends and answers with its `respond` node (`status`, `headers`,
/// `body`) or its last node's output (a failed run answers 500); past
/// `respond_timeout` (default 30 s) it answers 202 with the run id. The body is captured by its content type: JSON, form fields (an
/// object), empty (null), anything else as text. `Authorization`, `Cookie`,
/// `Proxy-Authorization` and signature headers are redacted in the stored trigger.
#[utoipa::path(
    method(post, put, patch, get, delete),
    operation_id = "deliverWebhook",
    path = "/hooks/{token}",
    tag = "webhooks",
    params(
        ("token" = String, Path, description = "The scenario's webhook token"),
        ("Idempotency-Key" = Option<String>, Header, description = "Identifies the delivery across retries: a repeat within 24 hours starts nothing (1 to 255 characters)"),
    ),
    request_body(content = Object, description = "Any body, up to the webhook body limit"),
    responses(
        (status = 202, description = "Recorded and enqueued", body = RunAccepted),
        (status = 200, description = "A repeated delivery: nothing started; the first delivery's run", body = DuplicateDelivery),
        (status = 400, description = "Body declared as JSON does not parse, or a malformed `Idempotency-Key`", body = ErrorBody),
        (status = 401, description = "The scenario requires a signature, and it is missing or invalid", body = ErrorBody),
        (status = 404, description = "Unknown token, or the scenario is not active", body = ErrorBody),
        (status = 405, description = "The scenario accepts only other methods (`trigger.methods`)", body = ErrorBody),
        (status = 413, description = "Body over the webhook body limit, or the scenario's `trigger.max_body_bytes`", body = ErrorBody),
        (status = 415, description = "The scenario accepts only other media types (`trigger.content_types`)", body = ErrorBody),
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
) -> Result<Response, ApiError> {
    let delivery = Delivery {
        method,
        uri,
        headers,
        body,
    };
    let result = accept(&state, &token, delivery).await;
    state
        .metrics
        .webhook_received(outcome(result.as_ref().map(|(enqueued, _)| *enqueued)));
    let (enqueued, waiting) = result?;
    if let (Enqueued::Started(run_id), Some((pending, within))) = (enqueued, waiting) {
        // Answered with the run's result, or, past the wait, with the 202 as usual.
        if let Some(Reply::Finished(finished)) = pending.wait(within).await {
            return Ok(answer(&finished.response));
        }
        return Ok((StatusCode::ACCEPTED, Json(RunAccepted { run_id })).into_response());
    }
    Ok(match enqueued {
        Enqueued::Started(run_id) => {
            (StatusCode::ACCEPTED, Json(RunAccepted { run_id })).into_response()
        }
        Enqueued::Duplicate(run_id) => (
            StatusCode::OK,
            Json(DuplicateDelivery {
                run_id,
                duplicate: true,
            }),
        )
            .into_response(),
    })
}

/// The request, as received.
struct Delivery {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
}

/// An active scenario's webhook.
struct Hook {
    target: Target,
    /// The scheme and the encrypted secret, if deliveries must be signed.
    signature: Option<(Scheme, String)>,
    options: WebhookOptions,
}

/// A request waiting for its run's end, and how long it may wait.
type Waiting = (Pending, Duration);

async fn accept(
    state: &AppState,
    token: &str,
    delivery: Delivery,
) -> Result<(Enqueued, Option<Waiting>), ApiError> {
    let body = delivery
        .body
        .map_err(|rejection| body_rejection(&rejection, state.webhook_max_body))?;
    let hook = find_hook(state, token).await?;
    check_options(&hook.options, &delivery.method, &delivery.headers, &body)?;
    if let Some((scheme, ciphertext)) = &hook.signature {
        verify(
            state,
            hook.target,
            scheme,
            ciphertext,
            &delivery.headers,
            &body,
        )?;
    }
    let signature_header = match hook.signature.as_ref() {
        Some((Scheme::HmacSha256(generic), _)) => Some(generic.header.as_str()),
        _ => None,
    };
    let trigger = Trigger::webhook(
        &delivery.method,
        &delivery.headers,
        delivery.uri.query(),
        &body,
        signature_header,
    )
    .map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body is declared as JSON but does not parse: {e}"),
        )
    })?;
    let scheme = hook.signature.as_ref().map(|(scheme, _)| scheme);
    let key = delivery_key(&delivery.headers, scheme, &trigger.body)?;
    let mut run = PendingRun::new();
    // Registered before the run is announced, so a fast run's end is not missed. A
    // gateway whose reply queue is down answers 202 at once rather than wait in vain.
    let waiting = match hook.options.respond_on_completion {
        Some(within) if state.replies.until_ready().await => {
            run.reply_to = Some(state.replies.queue());
            Some((state.replies.expect(run.id), within))
        }
        _ => None,
    };
    let enqueued = match key {
        Some(key) => enqueue_delivery(state, hook.target, &trigger, &key, run).await?,
        None => Enqueued::Started(
            enqueue(state, hook.target, TriggerKind::Webhook, &trigger, run).await?,
        ),
    };
    Ok((enqueued, waiting))
}

/// The scenario's own limits on what its webhook accepts, beyond the gateway's.
fn check_options(
    options: &WebhookOptions,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    if !options.methods.is_empty() && !options.methods.iter().any(|m| m == method.as_str()) {
        return Err(ApiError::WebhookMethod {
            allowed: options.methods.join(", "),
        });
    }
    if !options.content_types.is_empty() {
        let media_type = headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .map(|value| value.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if !options.content_types.contains(&media_type) {
            return Err(ApiError::WebhookMediaType {
                accepted: options.content_types.join(", "),
            });
        }
    }
    if let Some(limit) = options.max_body_bytes
        && body.len() > limit
    {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    Ok(())
}

/// The answer of a webhook that responds on completion, from the run's `{status,
/// headers, body}`: a text body is sent as text, anything else as JSON.
fn answer(response: &Value) -> Response {
    let status = response["status"]
        .as_u64()
        .and_then(|status| u16::try_from(status).ok())
        .and_then(|status| StatusCode::from_u16(status).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut answer = match &response["body"] {
        Value::String(text) => (status, text.clone()).into_response(),
        Value::Null => status.into_response(),
        body => (status, Json(body.clone())).into_response(),
    };
    if let Value::Object(headers) = &response["headers"] {
        for (name, value) in headers {
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&text),
            ) {
                answer.headers_mut().insert(name, value);
            }
        }
    }
    answer
}

/// The active scenario behind a token. Unknown, paused, draft and deleted all answer 404:
/// the sender cannot tell them apart, and should not.
async fn find_hook(state: &AppState, token: &str) -> Result<Hook, ApiError> {
    let client = state.pool.get().await?;
    let statement = client
        .prepare_cached(
            "SELECT t.workspace_id, t.scenario_id, w.scheme, w.ciphertext, v.definition -> 'trigger' AS trigger
             FROM webhook_tokens t JOIN scenarios s ON s.id = t.scenario_id
             JOIN scenario_versions v ON v.scenario_id = s.id AND v.version = s.current_version
             LEFT JOIN webhook_signatures w ON w.scenario_id = t.scenario_id
             WHERE t.token = $1 AND s.status = 'active' AND s.deleted_at IS NULL",
        )
        .await?;
    let row = client
        .query_opt(&statement, &[&token])
        .await?
        .ok_or(ApiError::NotFound("webhook"))?;
    let scheme: Option<Jsonb<Scheme>> = row.try_get("scheme")?;
    let ciphertext: Option<String> = row.try_get("ciphertext")?;
    Ok(Hook {
        target: Target {
            workspace_id: row.try_get("workspace_id")?,
            scenario_id: row.try_get("scenario_id")?,
        },
        signature: scheme.zip(ciphertext).map(|(Jsonb(scheme), c)| (scheme, c)),
        options: WebhookOptions::of_trigger(&row.try_get::<_, Value>("trigger")?),
    })
}

/// Verifies the raw body's signature. Why a signature is refused is logged, never told.
fn verify(
    state: &AppState,
    target: Target,
    scheme: &Scheme,
    ciphertext: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let aad = webhook_signature_aad(target.workspace_id, target.scenario_id);
    // A secret that does not decrypt is our failure (a key removed from the ring too
    // early), not the sender's: 500, and nothing is accepted unverified.
    let secret = state
        .keys
        .decrypt(ciphertext, &aad)
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    let now = chrono::Utc::now().timestamp();
    scheme.verify(&secret, headers, body, now).map_err(|reason| {
        tracing::info!(scenario_id = %target.scenario_id, scheme = scheme.name(), %reason, "webhook signature refused");
        ApiError::InvalidSignature
    })
}

/// What identifies this delivery across the sender's retries: its `Idempotency-Key`,
/// else the scheme's delivery id. Prefixed with its source, so that keys from different
/// sources cannot collide.
fn delivery_key(
    headers: &HeaderMap,
    scheme: Option<&Scheme>,
    body: &Value,
) -> Result<Option<String>, ApiError> {
    if let Some(value) = headers.get("idempotency-key") {
        let key = value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|key| !key.is_empty() && key.len() <= MAX_DELIVERY_KEY)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_idempotency_key",
                    format!(
                        "`Idempotency-Key` must be 1 to {MAX_DELIVERY_KEY} visible ASCII characters"
                    ),
                )
            })?;
        return Ok(Some(format!("idempotency-key:{key}")));
    }
    Ok(scheme.and_then(|scheme| {
        let id = scheme.delivery_id(headers, body)?;
        (id.len() <= MAX_DELIVERY_KEY).then(|| format!("{}:{id}", scheme.name()))
    }))
}

fn outcome(result: Result<Enqueued, &ApiError>) -> WebhookOutcome {
    match result {
        Ok(Enqueued::Started(_)) => WebhookOutcome::Accepted,
        Ok(Enqueued::Duplicate(_)) => WebhookOutcome::Duplicate,
        Err(ApiError::InvalidSignature) => WebhookOutcome::BadSignature,
        Err(ApiError::NotFound(_)) => WebhookOutcome::NotFound,
        Err(ApiError::PayloadTooLarge { .. }) => WebhookOutcome::TooLarge,
        Err(ApiError::BadRequest { .. }) => WebhookOutcome::Invalid,
        Err(_) => WebhookOutcome::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    #[test]
    fn errors_are_counted_by_what_the_sender_should_do() {
        let run = RunId::generate();
        assert_eq!(
            outcome(Ok(Enqueued::Started(run))),
            WebhookOutcome::Accepted
        );
        assert_eq!(
            outcome(Ok(Enqueued::Duplicate(run))),
            WebhookOutcome::Duplicate
        );
        assert_eq!(
            outcome(Err(&ApiError::InvalidSignature)),
            WebhookOutcome::BadSignature
        );
        assert_eq!(
            outcome(Err(&ApiError::NotFound("webhook"))),
            WebhookOutcome::NotFound
        );
        assert_eq!(
            outcome(Err(&ApiError::PayloadTooLarge { limit: 1 })),
            WebhookOutcome::TooLarge
        );
        assert_eq!(
            outcome(Err(&ApiError::bad_request("invalid_json", "x"))),
            WebhookOutcome::Invalid
        );
        assert_eq!(
            outcome(Err(&ApiError::BrokerUnavailable)),
            WebhookOutcome::Unavailable
        );
    }

    #[test]
    fn the_idempotency_key_comes_first_then_the_scheme_delivery_id() {
        let mut headers = HeaderMap::new();
        headers.insert("x-github-delivery", HeaderValue::from_static("d-1"));
        let body = json!({"id": "evt_1", "event_id": "Ev1"});
        let key = |headers: &HeaderMap, scheme: Option<&Scheme>| {
            delivery_key(headers, scheme, &body).expect("valid")
        };
        assert_eq!(
            key(&headers, Some(&Scheme::Github)).as_deref(),
            Some("github:d-1")
        );
        assert_eq!(
            key(&headers, Some(&Scheme::Stripe)).as_deref(),
            Some("stripe:evt_1")
        );
        assert_eq!(
            key(&headers, Some(&Scheme::Slack)).as_deref(),
            Some("slack:Ev1")
        );
        assert_eq!(
            key(&headers, None),
            None,
            "without a scheme, provider ids are not trusted"
        );
        headers.insert("idempotency-key", HeaderValue::from_static(" k-1 "));
        assert_eq!(
            key(&headers, Some(&Scheme::Github)).as_deref(),
            Some("idempotency-key:k-1")
        );
        assert_eq!(key(&headers, None).as_deref(), Some("idempotency-key:k-1"));

        let long = HeaderValue::from_str(&"k".repeat(MAX_DELIVERY_KEY + 1)).expect("valid");
        for bad in [HeaderValue::from_static(""), long] {
            headers.insert("idempotency-key", bad);
            let error = delivery_key(&headers, None, &body).expect_err("refused");
            assert_eq!(error.code(), "invalid_idempotency_key");
        }
        let long_id = json!({"id": "e".repeat(MAX_DELIVERY_KEY + 1)});
        assert_eq!(
            delivery_key(&HeaderMap::new(), Some(&Scheme::Stripe), &long_id).expect("valid"),
            None
        );
    }
}
