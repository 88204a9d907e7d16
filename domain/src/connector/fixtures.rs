//! Requests and credentials the connector's tests are written with.

use serde_json::Value;

use super::{Credentials, PreparedRequest};

pub(super) fn header<'a>(request: &'a PreparedRequest, name: &str) -> Option<&'a str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

pub(super) fn credentials(fields: Value) -> Credentials {
    Credentials::parse(fields.to_string().as_bytes()).expect("credentials")
}
