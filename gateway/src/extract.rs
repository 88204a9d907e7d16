//! Request extractors whose rejections are JSON errors. axum's own extractors answer
//! malformed input in plain text; these wrap them so every error of the API has the same
//! shape (see [`crate::error`]). Also the limits on what a request may be: its head's
//! size ([`limit_head`]), its body's size (the body limits of the config) and its JSON's
//! nesting depth ([`check_depth`]).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::error::Category;
use weft_domain::limits::{MAX_JSON_DEPTH, TooDeep, json_text_depth};

use crate::error::{ApiError, ErrorBody, ErrorDetail};
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
pub struct OptionalJson<T = Value>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (is_json, bytes) = buffer(request, state).await?;
        if bytes.is_empty() {
            return parse(b"{}").map(Self);
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

/// Malformed JSON is a 400, and so is JSON nested deeper than [`MAX_JSON_DEPTH`];
/// well-formed JSON of the wrong shape is a 422.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    check_depth(bytes)?;
    if holds_nul(bytes) {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the body holds the character U+0000 (`\\u0000`), which cannot be stored; remove it",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        Category::Data => {
            ApiError::Unprocessable(format!("the body does not have the expected shape: {e}"))
        }
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
        }
    })
}

/// Largest request head accepted: the request line and every header, in bytes. Real
/// clients and webhook senders send a few kilobytes; the HTTP server's own buffer (about
/// 400 KB, and at most 100 headers) is the outer bound, answered 431 without a body.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// Answers 431, with the JSON error every route uses, a request whose head is over
/// [`MAX_HEAD_BYTES`].
pub async fn limit_head(request: Request, next: Next) -> Response {
    let size = head_size(&request);
    if size <= MAX_HEAD_BYTES {
        return next.run(request).await;
    }
    let body = ErrorBody {
        error: ErrorDetail {
            code: "headers_too_large".to_owned(),
            message: format!(
                "the request line and headers are {size} bytes, over the limit of {MAX_HEAD_BYTES}"
            ),
            details: Value::Null,
        },
    };
    (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, Json(body)).into_response()
}

/// The size of a request's head as sent over HTTP/1.1: `METHOD URI HTTP/1.1\r\n`, then
/// `name: value\r\n` per header.
fn head_size(request: &Request) -> usize {
    let line = request.method().as_str().len()
        + request
            .uri()
            .path_and_query()
            .map_or(1, |target| target.as_str().len())
        + 12;
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + line
}

/// Refuses JSON text nested deeper than [`MAX_JSON_DEPTH`], naming the limit: the
/// parser's own refusal, past 128 levels, would name only its recursion.
pub fn check_depth(bytes: &[u8]) -> Result<(), ApiError> {
    let depth = json_text_depth(bytes);
    if depth > MAX_JSON_DEPTH {
        return Err(ApiError::bad_request(
            "json_too_deep",
            format!("the body is {}", TooDeep { depth }),
        ));
    }
    Ok(())
}

/// Whether JSON text holds U+0000 in a string or a key. PostgreSQL's `jsonb` refuses it
/// (the insert fails), and JSON text can carry it only escaped, as `\u0000`.
pub fn holds_nul(text: &[u8]) -> bool {
    let (mut in_string, mut escaped) = (false, false);
    for (i, &byte) in text.iter().enumerate() {
        if escaped {
            escaped = false;
            if byte == b'u' && text.get(i + 1..i + 5) == Some(b"0000".as_slice()) {
                return true;
            }
            continue;
        }
        match byte {
            b'\\' if in_string => escaped = true,
            b'"' => in_string = !in_string,
            _ => {}
        }
    }
    false
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

const NUL_IN_URI: &str =
    "the URI holds the character U+0000 (`%00`), which no identifier or filter contains";

/// Whether percent-encoded text decodes to U+0000 somewhere: the only way a URI carries
/// it. PostgreSQL refuses it in text parameters, so it must not reach a query.
fn holds_encoded_nul(text: &str) -> bool {
    text.contains("%00")
}

/// Path parameters; a malformed one (an id that is not a UUID) is a 400.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if holds_encoded_nul(parts.uri.path()) {
            return Err(ApiError::bad_request("invalid_path", NUL_IN_URI));
        }
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
        if parts.uri.query().is_some_and(holds_encoded_nul) {
            return Err(ApiError::bad_request("invalid_query", NUL_IN_URI));
        }
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Self(value))
            .map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))
    }
}

/// `{}`: the default of a request body's object fields (config, input) left out.
pub(crate) fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
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

    #[test]
    fn a_nul_character_anywhere_in_json_text_is_400() {
        for text in [
            r#"{"a": "x\u0000y"}"#,
            r#"{"k\u0000": 1}"#,
            r#"["\\", "\u0000"]"#,
            r#"{"a": "\u00001"}"#,
        ] {
            let error = parse::<Value>(text.as_bytes()).expect_err(text);
            assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{text}");
            assert!(error.to_string().contains("U+0000"), "{error}");
        }
        // An escaped backslash before `u0000` is text, not a NUL.
        for text in [r#"{"a": "\\u0000"}"#, r#"{"a": "u0000"}"#] {
            assert!(parse::<Value>(text.as_bytes()).is_ok(), "{text}");
        }
    }

    #[test]
    fn json_nested_past_the_limit_is_400_naming_it() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(parse::<Value>(nested(MAX_JSON_DEPTH).as_bytes()).is_ok());
        for depth in [MAX_JSON_DEPTH + 1, 1_000] {
            let error = parse::<Value>(nested(depth).as_bytes()).expect_err("too deep");
            assert_eq!(error.status(), StatusCode::BAD_REQUEST);
            assert_eq!(error.code(), "json_too_deep");
            assert_eq!(
                error.to_string(),
                format!(
                    "the body is nested {depth} levels deep, over the limit of 64 levels of arrays and objects"
                )
            );
        }
    }
}
