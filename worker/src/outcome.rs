//! Classification of an upstream answer (architecture §6): success; retryable (network error,
//! timeout, 5xx, 408); rate limited (429: wait per `Retry-After`, not a failed attempt);
//! permanent (other 4xx).

use std::time::Duration;

use chrono::{DateTime, Utc};
use weft_domain::messages::{ErrorClass, NodeError, truncate_body};

/// Longest `Retry-After` honoured; a longer wait is capped so a run is not parked for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `None` when the status is a success; otherwise the node's error.
pub fn classify(
    status: u16,
    retry_after: Option<&str>,
    body: &str,
    now: DateTime<Utc>,
) -> Option<NodeError> {
    let class = match status {
        200..=399 => return None,
        429 => ErrorClass::RateLimited,
        408 | 500..=599 => ErrorClass::Retryable,
        _ => ErrorClass::Permanent,
    };
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    Some(NodeError {
        class,
        message: format!("upstream answered {status} {reason}")
            .trim_end()
            .to_owned(),
        status: Some(status),
        body: (!body.is_empty()).then(|| truncate_body(body)),
        retry_after_ms: retry_after
            .filter(|_| class.is_retryable())
            .and_then(|value| parse_retry_after(value, now))
            .map(|wait| u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
    })
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = DateTime::parse_from_rfc2822(value)
                .ok()?
                .with_timezone(&Utc);
            (at - now).to_std().unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_classes() {
        let now = Utc::now();
        assert_eq!(classify(200, None, "", now), None);
        assert_eq!(classify(302, None, "", now), None);
        let err = classify(503, None, "down", now).expect("503 fails");
        assert_eq!(
            (err.class, err.status, err.body.as_deref()),
            (ErrorClass::Retryable, Some(503), Some("down"))
        );
        assert_eq!(
            classify(429, Some("1"), "", now).map(|e| (e.class, e.retry_after_ms)),
            Some((ErrorClass::RateLimited, Some(1000)))
        );
        assert_eq!(
            classify(503, Some("2"), "", now).map(|e| (e.class, e.retry_after_ms)),
            Some((ErrorClass::Retryable, Some(2000)))
        );
        assert_eq!(
            classify(400, Some("5"), "bad", now).map(|e| (e.class, e.retry_after_ms)),
            Some((ErrorClass::Permanent, None))
        );
        assert_eq!(
            classify(404, None, "", now).map(|e| e.message),
            Some("upstream answered 404 Not Found".to_owned())
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .expect("date")
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
