//! Who is calling: an API key names one workspace; the admin token guards the admin API.
//!
//! API keys are random 256-bit tokens, so a plain SHA-256 of the key is a safe thing to
//! store (slow password hashes are for low-entropy secrets). The key itself is shown once,
//! when the workspace is created.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use weft_domain::ids::WorkspaceId;

use crate::error::ApiError;
use crate::state::AppState;

const KEY_PREFIX: &str = "weft_";

/// A freshly generated API key: `weft_` + base64url of 32 random bytes. The prefix makes
/// leaked keys easy to recognise for secret scanners.
pub fn generate_api_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// What is stored for a key, and what a presented key is looked up by.
pub fn hash_api_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The workspace of the caller's API key. Every query of a handler taking this filters
/// by its id.
#[derive(Debug, Clone, Copy)]
pub struct Workspace {
    pub id: WorkspaceId,
}

impl FromRequestParts<AppState> for Workspace {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = bearer(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let client = state.pool.get().await?;
        let statement = client
            .prepare_cached("SELECT workspace_id FROM api_keys WHERE token_sha256 = $1")
            .await?;
        let row = client
            .query_opt(&statement, &[&hash_api_key(key)])
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok(Self {
            id: row.try_get("workspace_id")?,
        })
    }
}

/// Proof that the caller presented the admin token.
#[derive(Debug)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let expected = state
            .admin_token
            .as_deref()
            .ok_or(ApiError::AdminDisabled)?;
        let given = bearer(&parts.headers).ok_or(ApiError::NotAdmin)?;
        if same_secret(given, expected) {
            Ok(Self)
        } else {
            Err(ApiError::NotAdmin)
        }
    }
}

/// Compares in constant time. Comparing digests also hides the expected length.
fn same_secret(given: &str, expected: &str) -> bool {
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    given.as_slice().ct_eq(expected.as_slice()).into()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn api_keys_are_prefixed_random_and_hashed_with_sha256() {
        let key = generate_api_key();
        assert!(key.starts_with("weft_"));
        assert_eq!(key.len(), 5 + 43, "32 bytes in unpadded base64url");
        assert_ne!(key, generate_api_key());
        assert_eq!(hash_api_key(&key).len(), 32);
        assert_eq!(
            hex::encode(hash_api_key("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer weft_abc"),
        );
        assert_eq!(bearer(&headers), Some("weft_abc"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  weft_abc "),
        );
        assert_eq!(bearer(&headers), Some("weft_abc"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwYXNz"),
        );
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(same_secret("s3cret", "s3cret"));
        assert!(!same_secret("s3cret", "s3cret2"));
        assert!(!same_secret("", "s3cret"));
    }
}
