//! Request extractors whose rejections are JSON errors. axum's own extractors answer
//! malformed input in plain text; these wrap them so every error of the API has the same
//! shape (see [`crate::error`]).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::error::Category;

use crate::error::ApiError;
use crate::state::AppState;

/// A JSON request body: needs `Content-Type: application/json`; limited to the API body
/// limit.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (is_json, bytes) = buffer(request, state).await?;
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        parse(&bytes).map(Self)
    }
}

/// A JSON payload that may be left out: an empty body reads as `{}`.
pub struct OptionalJson(pub Value);

impl FromRequest<AppState> for OptionalJson {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (is_json, bytes) = buffer(request, state).await?;
        if bytes.is_empty() {
            return Ok(Self(Value::Object(serde_json::Map::new())));
        }
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        parse(&bytes).map(Self)
    }
}

async fn buffer(request: Request, state: &AppState) -> Result<(bool, Bytes), ApiError> {
    let is_json = media_type(request.headers()).is_some_and(|media| is_json(&media));
    let bytes = Bytes::from_request(request, state)
        .await
        .map_err(|rejection| body_rejection(&rejection, state.api_max_body))?;
    Ok((is_json, bytes))
}

/// Malformed JSON is a 400; well-formed JSON of the wrong shape a 422.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        Category::Data => {
            ApiError::Unprocessable(format!("the body does not have the expected shape: {e}"))
        }
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
        }
    })
}

/// A body that could not be read: over the limit (413), or cut off by the client.
pub fn body_rejection(rejection: &BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::bad_request("invalid_body", rejection.body_text())
    }
}

/// The media type of the body, lower-cased and without parameters (`; charset=…`).
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or_default().trim();
    Some(essence.to_ascii_lowercase())
}

/// `application/json`, and the `+json` family (`application/vnd.api+json`, …).
pub fn is_json(media_type: &str) -> bool {
    media_type == "application/json"
        || (media_type.starts_with("application/") && media_type.ends_with("+json"))
}

/// Path parameters; a malformed one (an id that is not a UUID) is a 400.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Self(value))
            .map_err(|rejection| ApiError::bad_request("invalid_path", rejection.body_text()))
    }
}

/// Query-string parameters.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Self(value))
            .map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn json_media_types_are_recognised_with_parameters_and_suffixes() {
        let mut headers = HeaderMap::new();
        assert_eq!(media_type(&headers), None);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert_eq!(media_type(&headers).as_deref(), Some("application/json"));
        assert!(is_json("application/json"));
        assert!(is_json("application/vnd.api+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }

    #[test]
    fn malformed_json_is_400_and_misshapen_json_is_422() {
        let error = parse::<Value>(b"{nope").expect_err("syntax error");
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error.code(), "invalid_json");

        #[derive(Debug, serde::Deserialize)]
        struct Named {
            #[expect(dead_code, reason = "only its presence is checked")]
            name: String,
        }
        let error = parse::<Named>(br#"{"name": 5}"#).expect_err("data error");
        assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
