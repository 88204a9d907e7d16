//! What a run was started with: the `trigger` scope of templates (architecture §5) — `body`,
//! `headers`, `query`, `method` — captured from a webhook request or a manual payload.
//!
//! The capture is stored in the run record and shown by the API, so credentials the
//! sender put in headers are redacted here, before anything is written.

use axum::http::{HeaderMap, Method};
use serde::Serialize;
use serde_json::{Map, Value};
use weft_domain::limits::{MAX_JSON_DEPTH, TooDeep, json_text_depth, text_without_nul};

use crate::extract::{holds_nul, is_json, media_type};

pub const REDACTED: &str = "[redacted]";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trigger {
    pub body: Value,
    pub headers: Map<String, Value>,
    pub query: Map<String, Value>,
    pub method: String,
}

impl Trigger {
    /// A manual run: the payload is the body; there is no HTTP request to capture.
    pub fn manual(payload: Value) -> Self {
        Self {
            body: payload,
            headers: Map::new(),
            query: Map::new(),
            method: Method::POST.to_string(),
        }
    }

    /// A webhook delivery. The body is decoded by its content type: JSON, form fields
    /// (an object), empty (null), anything else as text. Fails only when a body declared
    /// as JSON does not parse. `signature_header` names a scenario's own signature header
    /// (a generic HMAC scheme), redacted like the well-known ones.
    pub fn webhook(
        method: &Method,
        headers: &HeaderMap,
        query: Option<&str>,
        body: &[u8],
        signature_header: Option<&str>,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            body: decode_body(media_type(headers).as_deref(), body)?,
            headers: capture_headers(headers, signature_header),
            query: decode_form(query.unwrap_or_default().as_bytes()),
            method: method.to_string(),
        })
    }
}

fn decode_body(media_type: Option<&str>, body: &[u8]) -> Result<Value, serde_json::Error> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    match media_type {
        Some(media) if is_json(media) => {
            // Past the limit the body is refused as if it did not parse, naming the limit.
            let depth = json_text_depth(body);
            if depth > MAX_JSON_DEPTH {
                return Err(serde::de::Error::custom(TooDeep { depth }));
            }
            if holds_nul(body) {
                return Err(serde::de::Error::custom(
                    "it holds the character U+0000 (`\\u0000`), which cannot be stored",
                ));
            }
            serde_json::from_slice(body)
        }
        Some("application/x-www-form-urlencoded") => Ok(Value::Object(decode_form(body))),
        _ => Ok(Value::String(text_without_nul(
            String::from_utf8_lossy(body).into_owned(),
        ))),
    }
}

/// `a=1&b=x%20y` → `{"a": "1", "b": "x y"}`. A repeated name keeps its last value.
fn decode_form(encoded: &[u8]) -> Map<String, Value> {
    form_urlencoded::parse(encoded)
        .map(|(name, value)| {
            (
                text_without_nul(name.into_owned()),
                Value::String(text_without_nul(value.into_owned())),
            )
        })
        .collect()
}

/// Header names are lower-case (HTTP/2 style); a repeated header's values are joined
/// with `, ` as HTTP allows; credentials and signatures are redacted.
fn capture_headers(headers: &HeaderMap, signature_header: Option<&str>) -> Map<String, Value> {
    let mut captured = Map::new();
    for name in headers.keys() {
        let named_secret = signature_header.is_some_and(|h| name.as_str().eq_ignore_ascii_case(h));
        let value = if is_secret(name.as_str()) || named_secret {
            REDACTED.to_owned()
        } else {
            headers
                .get_all(name)
                .iter()
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        captured.insert(name.as_str().to_owned(), Value::String(value));
    }
    captured
}

/// Headers that carry credentials or proofs of them.
fn is_secret(name: &str) -> bool {
    matches!(name, "authorization" | "proxy-authorization" | "cookie") || name.contains("signature")
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use axum::http::header::{AUTHORIZATION, COOKIE};
    use serde_json::json;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn credentials_and_signatures_are_redacted() {
        let mut map = headers(&[
            ("x-hub-signature-256", "sha256=abc"),
            ("stripe-signature", "t=1,v1=abc"),
            ("proxy-authorization", "Basic xyz"),
            ("x-request-id", "r1"),
            ("accept", "text/html"),
            ("accept", "application/json"),
        ]);
        map.insert(AUTHORIZATION, HeaderValue::from_static("Bearer secret"));
        map.insert(COOKIE, HeaderValue::from_static("session=secret"));
        map.insert("x-shop-hmac", HeaderValue::from_static("c2lnbmVk"));
        let captured = capture_headers(&map, Some("X-Shop-Hmac"));
        for name in [
            "x-shop-hmac",
            "authorization",
            "cookie",
            "proxy-authorization",
            "x-hub-signature-256",
            "stripe-signature",
        ] {
            assert_eq!(captured[name], REDACTED, "{name}");
        }
        assert_eq!(captured["x-request-id"], "r1");
        assert_eq!(captured["accept"], "text/html, application/json");
        assert!(!Value::Object(captured).to_string().contains("secret"));
    }

    #[test]
    fn bodies_are_decoded_by_content_type() {
        let json_body = Trigger::webhook(
            &Method::POST,
            &headers(&[("content-type", "application/json; charset=utf-8")]),
            None,
            br#"{"phone": "+33 6"}"#,
            None,
        )
        .expect("valid JSON");
        assert_eq!(json_body.body, json!({"phone": "+33 6"}));

        let form = Trigger::webhook(
            &Method::POST,
            &headers(&[("content-type", "application/x-www-form-urlencoded")]),
            None,
            b"name=Ada+Lovelace&tag=a&tag=b&email=ada%40example.com",
            None,
        )
        .expect("form");
        assert_eq!(
            form.body,
            json!({"name": "Ada Lovelace", "tag": "b", "email": "ada@example.com"})
        );

        let text = Trigger::webhook(
            &Method::PUT,
            &headers(&[("content-type", "text/plain")]),
            None,
            b"hi \xff",
            None,
        )
        .expect("text");
        assert_eq!(text.body, json!("hi \u{fffd}"));
        assert_eq!(text.method, "PUT");

        let untyped = Trigger::webhook(&Method::POST, &HeaderMap::new(), None, b"{\"a\":1}", None)
            .expect("untyped");
        assert_eq!(
            untyped.body,
            json!("{\"a\":1}"),
            "without a JSON content type the body stays text"
        );

        let empty = Trigger::webhook(
            &Method::GET,
            &headers(&[("content-type", "application/json")]),
            None,
            b"",
            None,
        )
        .expect("empty");
        assert_eq!(empty.body, Value::Null);

        let broken = Trigger::webhook(
            &Method::POST,
            &headers(&[("content-type", "application/json")]),
            None,
            b"{",
            None,
        );
        assert!(broken.is_err());
    }

    #[test]
    fn the_query_string_becomes_an_object_of_strings() {
        let trigger = Trigger::webhook(
            &Method::GET,
            &HeaderMap::new(),
            Some("a=1&b=x%20y&flag"),
            b"",
            None,
        )
        .expect("query");
        assert_eq!(
            Value::Object(trigger.query),
            json!({"a": "1", "b": "x y", "flag": ""})
        );
        let none =
            Trigger::webhook(&Method::GET, &HeaderMap::new(), None, b"", None).expect("no query");
        assert!(none.query.is_empty());
    }

    #[test]
    fn manual_runs_carry_their_payload_as_the_body() {
        let trigger = Trigger::manual(json!({"x": 1}));
        assert_eq!(
            serde_json::to_value(&trigger).expect("serializes"),
            json!({"body": {"x": 1}, "headers": {}, "query": {}, "method": "POST"})
        );
    }
}
