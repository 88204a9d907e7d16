//! Browser sessions: server-side rows, a cookie that carries only a random token, and the
//! CSRF token derived from it.
//!
//! A session ends at its absolute expiry, after its idle timeout without a request, at
//! logout, when its person logs out everywhere, or when its person is disabled.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use cookie::{Cookie, SameSite};
use deadpool_postgres::GenericClient;
use sha2::{Digest, Sha256};
use weft_domain::ids::{SessionId, UserId};

use super::tokens::{self, Kind};
use crate::audit::Client;

/// How sessions are kept, from the gateway's configuration.
#[derive(Debug, Clone)]
pub struct SessionPolicy {
    /// A session unused this long ends (`WEFT_SESSION_IDLE_TIMEOUT`).
    pub idle: Duration,
    /// A session ends this long after login however it is used (`WEFT_SESSION_LIFETIME`).
    pub lifetime: Duration,
    /// `false` only when `WEFT_PUBLIC_URL` is plain HTTP on a loopback address: browsers
    /// drop `Secure` cookies set over HTTP anywhere else.
    pub secure: bool,
}

impl SessionPolicy {
    /// `__Host-` binds the cookie to this exact origin (no `Domain`, path `/`, `Secure`);
    /// browsers refuse that prefix without `Secure`, so the loopback cookie goes without.
    pub fn cookie_name(&self) -> &'static str {
        if self.secure {
            "__Host-weft_session"
        } else {
            "weft_session"
        }
    }

    /// The `Set-Cookie` value that starts a session.
    pub fn set_cookie(&self, token: &str) -> HeaderValue {
        let max_age = i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX);
        self.cookie(token, cookie::time::Duration::seconds(max_age))
    }

    /// The `Set-Cookie` value that ends one.
    pub fn clear_cookie(&self) -> HeaderValue {
        self.cookie("", cookie::time::Duration::ZERO)
    }

    fn cookie(&self, value: &str, max_age: cookie::time::Duration) -> HeaderValue {
        let cookie = Cookie::build((self.cookie_name(), value))
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .path("/")
            .max_age(max_age)
            .build();
        HeaderValue::try_from(cookie.to_string())
            .expect("a cookie of a base64url token is a valid header value")
    }

    /// The session token a request carries, if any.
    pub fn token<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        let name = self.cookie_name();
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, value)| *key == name && !value.is_empty())
            .map(|(_, value)| value)
    }
}

/// The token the web app sends in `X-Weft-CSRF` with each state-changing request. It is
/// derived from the session token, which scripts cannot read (the cookie is HttpOnly),
/// so a page on another site cannot know it.
pub fn csrf_token(session_token: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(b"weft csrf\0");
    digest.update(session_token.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.finalize())
}

/// A session just begun: the token goes into the cookie, and is not kept.
pub struct Started {
    pub id: SessionId,
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

pub async fn start(
    db: &impl GenericClient,
    user: UserId,
    policy: &SessionPolicy,
    client: &Client,
) -> Result<Started, tokio_postgres::Error> {
    let id = SessionId::generate();
    let token = tokens::generate(Kind::Session);
    let lifetime = chrono::Duration::from_std(policy.lifetime).unwrap_or(chrono::Duration::MAX);
    let expires_at = Utc::now() + lifetime;
    db.execute(
        "INSERT INTO sessions (id, user_id, token_sha256, expires_at, client_address, user_agent) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &id,
            &user,
            &tokens::digest(&token),
            &expires_at,
            &client.address,
            &client.user_agent,
        ],
    )
    .await?;
    Ok(Started {
        id,
        token,
        expires_at,
    })
}

/// A live session of an enabled person.
#[derive(Debug, Clone)]
pub struct Live {
    pub id: SessionId,
    pub user: UserId,
}

/// How often `last_seen_at` is written: every request would be a write per request.
const TOUCH_EVERY_SECONDS: f64 = 60.0;

/// The live session of `token`, its idle clock restarted.
pub async fn find(
    db: &impl GenericClient,
    token: &str,
    policy: &SessionPolicy,
) -> Result<Option<Live>, tokio_postgres::Error> {
    let idle_seconds = policy.idle.as_secs_f64();
    let row = db
        .query_opt(
            "SELECT s.id, s.user_id, \
                    extract(epoch FROM now() - s.last_seen_at)::float8 AS unseen_seconds \
             FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_sha256 = $1 AND s.expires_at > now() \
               AND s.last_seen_at > now() - make_interval(secs => $2) \
               AND u.disabled_at IS NULL",
            &[&tokens::digest(token), &idle_seconds],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let live = Live {
        id: row.try_get("id")?,
        user: row.try_get("user_id")?,
    };
    let unseen: f64 = row.try_get("unseen_seconds")?;
    if unseen > TOUCH_EVERY_SECONDS {
        db.execute(
            "UPDATE sessions SET last_seen_at = now() WHERE id = $1",
            &[&live.id],
        )
        .await?;
    }
    Ok(Some(live))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(secure: bool) -> SessionPolicy {
        SessionPolicy {
            idle: Duration::from_secs(3600),
            lifetime: Duration::from_secs(86400),
            secure,
        }
    }

    #[test]
    fn the_cookie_is_host_only_http_only_and_lax() {
        let cookie = policy(true).set_cookie("weft_s_abc");
        let cookie = cookie.to_str().expect("ascii");
        assert!(
            cookie.starts_with("__Host-weft_session=weft_s_abc"),
            "{cookie}"
        );
        for attribute in [
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=86400",
        ] {
            assert!(cookie.contains(attribute), "{attribute} in {cookie}");
        }
        assert!(!cookie.contains("Domain"), "{cookie}");
        let loopback = policy(false).set_cookie("weft_s_abc");
        let loopback = loopback.to_str().expect("ascii");
        assert!(loopback.starts_with("weft_session="), "{loopback}");
        assert!(!loopback.contains("Secure"), "{loopback}");
        assert!(
            policy(true)
                .clear_cookie()
                .to_str()
                .expect("ascii")
                .contains("Max-Age=0")
        );
    }

    #[test]
    fn the_token_is_read_from_the_cookie_of_its_name_only() {
        let policy = policy(true);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static(
                "theme=dark; weft_session=loopback; __Host-weft_session=weft_s_x",
            ),
        );
        assert_eq!(policy.token(&headers), Some("weft_s_x"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("__Host-weft_session="),
        );
        assert_eq!(policy.token(&headers), None);
    }

    #[test]
    fn the_csrf_token_is_bound_to_its_session() {
        assert_eq!(csrf_token("a"), csrf_token("a"));
        assert_ne!(csrf_token("a"), csrf_token("b"));
        assert_eq!(csrf_token("a").len(), 43, "a SHA-256 in unpadded base64url");
        assert!(!csrf_token("weft_s_a").contains("weft_s_a"));
    }
}
