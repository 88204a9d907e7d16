//! Who is calling (architecture §11): a workspace API key, a person's session cookie, or
//! the admin token. What the caller may then do is decided by [`crate::access`].

use axum::http::{HeaderMap, Method, header};
use deadpool_postgres::GenericClient;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use weft_domain::access::Role;
use weft_domain::ids::{ApiKeyId, WorkspaceId};

use crate::error::ApiError;
use crate::identity::sessions;
use crate::identity::tokens;

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether the caller presented the admin token.
pub fn admin(headers: &HeaderMap, expected: Option<&str>) -> Result<(), ApiError> {
    let expected = expected.ok_or(ApiError::AdminDisabled)?;
    let given = bearer(headers).ok_or(ApiError::NotAdmin)?;
    if same_secret(given, expected) {
        Ok(())
    } else {
        Err(ApiError::NotAdmin)
    }
}

/// Compares in constant time. Comparing digests also hides the expected length.
fn same_secret(given: &str, expected: &str) -> bool {
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    given.as_slice().ct_eq(expected.as_slice()).into()
}

/// A usable API key: not revoked, not expired, and its creator (if a person made it)
/// still an enabled member. Its role is the lesser of its own and its creator's current
/// one, so demoting a person demotes their keys.
#[derive(Debug, Clone, Copy)]
pub struct KeyHolder {
    pub key: ApiKeyId,
    pub workspace: WorkspaceId,
    pub role: Role,
}

/// How often `last_used_at` is written.
const LAST_USED_EVERY_SECONDS: f64 = 60.0;

pub async fn api_key(db: &impl GenericClient, token: &str) -> Result<Option<KeyHolder>, ApiError> {
    let statement = db
        .prepare_cached(
            "SELECT k.id, k.workspace_id, k.role, m.role AS creator_role, \
                    k.created_by IS NOT NULL AS by_person, \
                    coalesce(extract(epoch FROM now() - k.last_used_at)::float8, 1e9) AS unused_seconds \
             FROM api_keys k \
             LEFT JOIN users u ON u.id = k.created_by AND u.disabled_at IS NULL \
             LEFT JOIN memberships m ON m.user_id = u.id AND m.workspace_id = k.workspace_id \
             WHERE k.token_sha256 = $1 AND k.revoked_at IS NULL \
               AND (k.expires_at IS NULL OR k.expires_at > now())",
        )
        .await?;
    let Some(row) = db.query_opt(&statement, &[&tokens::digest(token)]).await? else {
        return Ok(None);
    };
    let role = stored_role(row.try_get("role")?)?;
    let creator_role: Option<String> = row.try_get("creator_role")?;
    let role = match (row.try_get::<_, bool>("by_person")?, creator_role) {
        (false, _) => role,
        (true, Some(creator)) => role.min(stored_role(creator)?),
        (true, None) => return Ok(None),
    };
    let holder = KeyHolder {
        key: row.try_get("id")?,
        workspace: row.try_get("workspace_id")?,
        role,
    };
    if row.try_get::<_, f64>("unused_seconds")? > LAST_USED_EVERY_SECONDS {
        db.execute(
            "UPDATE api_keys SET last_used_at = now() WHERE id = $1",
            &[&holder.key],
        )
        .await?;
    }
    Ok(Some(holder))
}

/// A role read back from the database, where a CHECK keeps it one of the five.
pub fn stored_role(name: String) -> Result<Role, ApiError> {
    name.parse().map_err(|e| ApiError::Internal(Box::new(e)))
}

/// Whether a cookie-authenticated request may change state: it must come from the web
/// app's own origin (`Origin`, or `Referer` when a browser sends no `Origin`) and carry
/// the session's CSRF token in `X-Weft-CSRF`. Safe methods need neither.
pub fn same_site(
    method: &Method,
    headers: &HeaderMap,
    public_origin: &str,
    session_token: Option<&str>,
) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let from_here = match (text("origin"), text("referer")) {
        (Some(origin), _) => origin == public_origin,
        (None, Some(referer)) => referer
            .strip_prefix(public_origin)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        (None, None) => false,
    };
    if !from_here {
        return Err(ApiError::CrossSiteRequest(
            "a request signed in by cookie must come from this site: its Origin is not WEFT_PUBLIC_URL",
        ));
    }
    let Some(session_token) = session_token else {
        return Ok(());
    };
    let expected = sessions::csrf_token(session_token);
    let given = text("x-weft-csrf").unwrap_or_default();
    if same_secret(given, &expected) {
        Ok(())
    } else {
        Err(ApiError::CrossSiteRequest(
            "a request signed in by cookie must send the session's CSRF token in X-Weft-CSRF",
        ))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

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

    #[test]
    fn cookie_requests_that_change_state_need_this_origin_and_the_csrf_token() {
        let origin = "https://weft.example.com";
        let token = "weft_s_token";
        let headers = |pairs: &[(&'static str, String)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, HeaderValue::try_from(value.as_str()).expect("ascii"));
            }
            headers
        };
        let csrf = sessions::csrf_token(token);
        let good = headers(&[("origin", origin.into()), ("x-weft-csrf", csrf.clone())]);
        assert!(same_site(&Method::POST, &good, origin, Some(token)).is_ok());
        assert!(same_site(&Method::GET, &HeaderMap::new(), origin, Some(token)).is_ok());

        let other_site = headers(&[
            ("origin", "https://evil.example".into()),
            ("x-weft-csrf", csrf.clone()),
        ]);
        assert!(same_site(&Method::POST, &other_site, origin, Some(token)).is_err());
        let lookalike = headers(&[
            ("referer", format!("{origin}.evil.example/")),
            ("x-weft-csrf", csrf.clone()),
        ]);
        assert!(same_site(&Method::DELETE, &lookalike, origin, Some(token)).is_err());
        let by_referer = headers(&[
            ("referer", format!("{origin}/scenarios")),
            ("x-weft-csrf", csrf),
        ]);
        assert!(same_site(&Method::PATCH, &by_referer, origin, Some(token)).is_ok());
        let no_token = headers(&[("origin", origin.into())]);
        assert!(same_site(&Method::POST, &no_token, origin, Some(token)).is_err());
        assert!(
            same_site(&Method::POST, &no_token, origin, None).is_ok(),
            "a login has no session yet"
        );
        assert!(same_site(&Method::POST, &HeaderMap::new(), origin, None).is_err());
    }
}
