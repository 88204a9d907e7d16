//! Retry policy, exponential backoff with jitter, and the delay tiers that carry a
//! delayed task (architecture §4: one queue per tier, queue-level TTL, no head-of-line blocking).

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `failed_attempt + 1`: `initial * 2^(failed_attempt-1)`,
    /// capped at `max`, scaled by `jitter` in `[0.5, 1.0]` ("equal jitter", so retries of
    /// many runs spread out but never collapse to zero), and never shorter than what the
    /// upstream asked for in `Retry-After`.
    pub fn backoff(
        &self,
        failed_attempt: u32,
        jitter: f64,
        retry_after: Option<Duration>,
    ) -> Duration {
        let exponent = failed_attempt.saturating_sub(1).min(30);
        let base = self.initial.saturating_mul(1u32 << exponent).min(self.max);
        let jittered = base.mul_f64(jitter.clamp(0.5, 1.0));
        retry_after.map_or(jittered, |asked| jittered.max(asked))
    }
}

/// The delay tiers, shortest first. Each is a queue whose messages expire into the task
/// exchange after exactly this long.
pub const TIERS: [(&str, Duration); 6] = [
    ("200ms", Duration::from_millis(200)),
    ("1s", Duration::from_secs(1)),
    ("5s", Duration::from_secs(5)),
    ("30s", Duration::from_secs(30)),
    ("2m", Duration::from_secs(120)),
    ("10m", Duration::from_secs(600)),
];

/// The tier to wait in for a remaining delay: the longest tier not longer than it, so a
/// task never waits much past its time; the receiver hops again while time remains.
/// `None` when the delay is over.
pub fn tier_for(remaining: Duration) -> Option<&'static str> {
    if remaining.is_zero() {
        return None;
    }
    let tier = TIERS
        .iter()
        .rev()
        .find(|(_, length)| *length <= remaining)
        .unwrap_or(&TIERS[0]);
    Some(tier.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_honours_retry_after() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(5),
        };
        assert_eq!(policy.backoff(1, 1.0, None), Duration::from_secs(1));
        assert_eq!(policy.backoff(2, 1.0, None), Duration::from_secs(2));
        assert_eq!(policy.backoff(3, 1.0, None), Duration::from_secs(4));
        assert_eq!(policy.backoff(4, 1.0, None), Duration::from_secs(5));
        assert_eq!(policy.backoff(3, 0.5, None), Duration::from_secs(2));
        assert_eq!(policy.backoff(40, 0.0, None), Duration::from_millis(2500));
        assert_eq!(
            policy.backoff(1, 1.0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn tiers_never_overshoot_except_below_the_shortest() {
        assert_eq!(tier_for(Duration::ZERO), None);
        assert_eq!(tier_for(Duration::from_millis(50)), Some("200ms"));
        assert_eq!(tier_for(Duration::from_millis(1300)), Some("1s"));
        assert_eq!(tier_for(Duration::from_secs(7)), Some("5s"));
        assert_eq!(tier_for(Duration::from_secs(3600)), Some("10m"));
    }
}
