//! Every way a request can fail, and the HTTP status and JSON body each one becomes
//! (architecture §7): `{"error": {"code", "message", "details"}}`.
//!
//! Handlers return `Result<_, ApiError>`; the mapping to a status lives here only, so a
//! newcomer can read the whole error contract of the API in one place.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::error::SqlState;
use utoipa::ToSchema;
use weft_domain::access::Role;
use weft_runtime::db::DbError;

use crate::identity::passwords::PasswordError;
use crate::identity::users::CreateError;

type Source = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or fails validation; `code` says which check failed.
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        details: Value,
    },
    #[error(
        "sign in (a session cookie) or send a valid API key: `Authorization: Bearer <api key>`"
    )]
    Unauthorized,
    /// A login with an unknown email, a wrong password or a disabled account: which one
    /// is not said.
    #[error("the email or the password is wrong")]
    InvalidCredentials,
    /// The caller's role in the workspace does not hold the permission the endpoint needs.
    #[error("your role in this workspace ({role}) does not allow this: it needs {needed} or above")]
    Forbidden { role: Role, needed: Role },
    /// Something this instance or workspace does not allow anyone in the caller's place.
    #[error("{0}")]
    NotPermitted(&'static str),
    /// A state-changing request authenticated by a session cookie without proof that the
    /// web app sent it.
    #[error("{0}")]
    CrossSiteRequest(&'static str),
    /// Too many failed logins for the account or from the client's address.
    #[error("too many failed logins; try again in {retry_after_seconds} s")]
    TooManyAttempts { retry_after_seconds: u64 },
    #[error("the admin API requires `Authorization: Bearer <WEFT_ADMIN_TOKEN>`")]
    NotAdmin,
    #[error("admin API disabled: WEFT_ADMIN_TOKEN is not set")]
    AdminDisabled,
    /// A webhook's signature is missing, malformed, stale or wrong. Which one is not
    /// said: that would help a forger.
    #[error("the webhook signature is missing or invalid")]
    InvalidSignature,
    /// Also the answer for another workspace's object, so ids of other workspaces cannot
    /// be probed.
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// The object is in a state that does not allow the request (a finished run cannot be
    /// cancelled); `code` says which.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("the body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the body must be JSON: send `Content-Type: application/json`")]
    UnsupportedMediaType,
    /// A webhook whose scenario accepts only some methods (`trigger.methods`).
    #[error("this webhook accepts only {allowed}")]
    WebhookMethod { allowed: String },
    /// A webhook whose scenario accepts only some media types (`trigger.content_types`).
    #[error("this webhook accepts only bodies of type {accepted}")]
    WebhookMediaType { accepted: String },
    /// Well-formed JSON that does not fit the expected shape.
    #[error("{0}")]
    Unprocessable(String),
    #[error("the message broker is unavailable; nothing was started, try again later")]
    BrokerUnavailable,
    /// A third party the gateway called for the request (an OAuth token endpoint) failed.
    #[error("{message}")]
    BadGateway { code: &'static str, message: String },
    /// The work the request waits for (an action executed directly) did not finish in time.
    #[error("{0}")]
    Timeout(String),
    #[error("the database is unavailable; try again later")]
    DatabaseUnavailable(#[source] Source),
    /// A bug or an unexpected database error: logged, never shown to the client.
    #[error("internal error")]
    Internal(#[source] Source),
    /// A handler panicked: a bug. Its text is only in the log, found by the request id.
    #[error("internal error; quote request id {request_id} when reporting it")]
    Panicked { request_id: String },
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
            details: Value::Null,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized
            | Self::NotAdmin
            | Self::InvalidSignature
            | Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::AdminDisabled
            | Self::Forbidden { .. }
            | Self::NotPermitted(_)
            | Self::CrossSiteRequest(_) => StatusCode::FORBIDDEN,
            Self::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed | Self::WebhookMethod { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType | Self::WebhookMediaType { .. } => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BrokerUnavailable | Self::DatabaseUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) | Self::Panicked { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. }
            | Self::Conflict { code, .. }
            | Self::BadGateway { code, .. } => code,
            Self::Unauthorized | Self::NotAdmin => "unauthorized",
            Self::AdminDisabled | Self::Forbidden { .. } | Self::NotPermitted(_) => "forbidden",
            Self::InvalidCredentials => "invalid_credentials",
            Self::CrossSiteRequest(_) => "cross_site_request",
            Self::TooManyAttempts { .. } => "too_many_attempts",
            Self::InvalidSignature => "invalid_signature",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed | Self::WebhookMethod { .. } => "method_not_allowed",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType | Self::WebhookMediaType { .. } => "unsupported_media_type",
            Self::Unprocessable(_) => "invalid_body",
            Self::BrokerUnavailable => "broker_unavailable",
            Self::DatabaseUnavailable(_) => "database_unavailable",
            Self::Timeout(_) => "timeout",
            Self::Internal(_) | Self::Panicked { .. } => "internal",
        }
    }

    fn body(&self) -> ErrorBody {
        let details = match self {
            Self::BadRequest { details, .. } => details.clone(),
            Self::Panicked { request_id } => serde_json::json!({ "request_id": request_id }),
            Self::Forbidden { role, needed } => {
                serde_json::json!({ "role": role, "needed": needed })
            }
            Self::TooManyAttempts {
                retry_after_seconds,
            } => serde_json::json!({ "retry_after_seconds": retry_after_seconds }),
            _ => Value::Null,
        };
        ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
                details,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(source) => tracing::error!(error = %source, "request failed"),
            Self::DatabaseUnavailable(source) => {
                tracing::warn!(error = %source, "database unavailable")
            }
            _ => {}
        }
        let mut response = (self.status(), Json(self.body())).into_response();
        if let Self::TooManyAttempts {
            retry_after_seconds,
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
        }
        response
    }
}

/// A pool that cannot hand out a connection means the database is down or overloaded.
impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::DatabaseUnavailable(Box::new(e))
    }
}

/// A lost connection is an outage (503, worth retrying); any other database error is a
/// bug on our side (500), whose SQL details stay in the log.
impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        let outage = e.is_closed()
            || e.code().is_some_and(|code| {
                code.code().starts_with("08")
                    || [
                        SqlState::ADMIN_SHUTDOWN,
                        SqlState::CRASH_SHUTDOWN,
                        SqlState::CANNOT_CONNECT_NOW,
                    ]
                    .contains(code)
            });
        if outage {
            Self::DatabaseUnavailable(Box::new(e))
        } else {
            Self::Internal(Box::new(e))
        }
    }
}

/// The shared adapters' database errors, mapped like the driver's own.
impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Query(e) => e.into(),
            DbError::Pool(e) => e.into(),
            other => Self::Internal(Box::new(other)),
        }
    }
}

/// Creating a person whose email is taken is the caller's conflict; the rest is ours.
impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::EmailTaken => Self::Conflict {
                code: "email_taken",
                message: "this email has an account already: sign in, or reset its password".into(),
            },
            CreateError::Db(e) => e.into(),
        }
    }
}

/// A password of the wrong length is the caller's to fix; a hash that fails is a bug.
impl From<PasswordError> for ApiError {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::Length => Self::bad_request("invalid_request", e.to_string()),
            PasswordError::Hash(_) => Self::Internal(Box::new(e)),
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_scenario`, `not_found`, `broker_unavailable`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Structured details (e.g. `{"problems": [...]}` for an invalid scenario), or null.
    #[schema(value_type = Object, nullable)]
    pub details: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rendered(error: ApiError) -> (StatusCode, Value) {
        let status = error.status();
        let body = serde_json::to_value(error.body()).expect("error bodies serialize");
        (status, body)
    }

    #[test]
    fn errors_map_to_their_status_and_a_json_body() {
        let (status, body) = rendered(ApiError::NotFound("scenario"));
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            body,
            json!({"error": {"code": "not_found", "message": "scenario not found", "details": null}})
        );

        let (status, body) = rendered(ApiError::PayloadTooLarge { limit: 1024 });
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["error"]["code"], "payload_too_large");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("1024 bytes"))
        );

        assert_eq!(ApiError::Unauthorized.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(ApiError::AdminDisabled.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            ApiError::UnsupportedMediaType.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            ApiError::BrokerUnavailable.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(ApiError::BrokerUnavailable.code(), "broker_unavailable");
        let (status, body) = rendered(ApiError::Timeout("no answer within 35s".into()));
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body["error"]["code"], "timeout");
        assert_eq!(body["error"]["message"], "no answer within 35s");
        let error = ApiError::BadGateway {
            code: "oauth_provider_unavailable",
            message: "the token endpoint answered 503".into(),
        };
        assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(error.code(), "oauth_provider_unavailable");

        let (status, body) = rendered(ApiError::Conflict {
            code: "run_finished",
            message: "the run is already completed".into(),
        });
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"]["code"], "run_finished");
        assert_eq!(body["error"]["message"], "the run is already completed");
    }

    #[test]
    fn validation_errors_carry_their_details() {
        let error = ApiError::BadRequest {
            code: "invalid_scenario",
            message: "field `name`: must not be empty".into(),
            details: json!({"problems": [{"field": "name", "message": "must not be empty"}]}),
        };
        let (status, body) = rendered(error);
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "invalid_scenario");
        assert_eq!(body["error"]["details"]["problems"][0]["field"], "name");
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let error = ApiError::Internal("relation \"runs\" does not exist".into());
        let (status, body) = rendered(error);
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["message"], "internal error");
        let error = ApiError::DatabaseUnavailable("connection refused".into());
        let (status, body) = rendered(error);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "database_unavailable");
        assert!(!body.to_string().contains("refused"));
    }
}
