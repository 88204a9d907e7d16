//! Back-off of repeated failed logins, per account and per client address, shared by
//! every gateway replica through PostgreSQL.
//!
//! The first few failures cost nothing; after that each one doubles the wait before the
//! next attempt, up to a cap. A success clears the account's count (not the address's: a
//! guesser's one right password must not reset its budget for other accounts).

use std::time::Duration;

use deadpool_postgres::GenericClient;

/// Failures allowed before any wait.
const FREE_FAILURES: i32 = 5;
/// The longest wait.
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);

/// The wait after `failures` consecutive failures.
pub fn wait_after(failures: i32) -> Duration {
    let over = failures - FREE_FAILURES;
    if over < 0 {
        return Duration::ZERO;
    }
    let seconds = 1u64
        .checked_shl(u32::try_from(over).unwrap_or(u32::MAX))
        .unwrap_or(u64::MAX);
    Duration::from_secs(seconds).min(MAX_WAIT)
}

/// The subjects a login attempt counts against.
pub fn subjects(email: &str, address: Option<&str>) -> Vec<String> {
    let mut subjects = vec![format!("email:{email}")];
    subjects.extend(address.map(|address| format!("address:{address}")));
    subjects
}

/// How long the caller must still wait, if any of `subjects` is blocked.
pub async fn blocked_for(
    db: &impl GenericClient,
    subjects: &[String],
) -> Result<Option<Duration>, tokio_postgres::Error> {
    let row = db
        .query_one(
            "SELECT ceil(extract(epoch FROM max(blocked_until) - now()))::float8 AS seconds \
             FROM login_failures WHERE subject = ANY($1) AND blocked_until > now()",
            &[&subjects],
        )
        .await?;
    let seconds: Option<f64> = row.try_get("seconds")?;
    Ok(seconds.map(|seconds| Duration::from_secs_f64(seconds.max(1.0))))
}

/// Counts a failure against each subject.
pub async fn failed(
    db: &impl GenericClient,
    subjects: &[String],
) -> Result<(), tokio_postgres::Error> {
    let statement = db
        .prepare(
            "INSERT INTO login_failures AS f (subject, failures, blocked_until) \
             VALUES ($1, 1, now()) \
             ON CONFLICT (subject) DO UPDATE SET failures = f.failures + 1, updated_at = now() \
             RETURNING failures",
        )
        .await?;
    for subject in subjects {
        let failures: i32 = db.query_one(&statement, &[subject]).await?.try_get(0)?;
        let wait = wait_after(failures).as_secs_f64();
        db.execute(
            "UPDATE login_failures SET blocked_until = now() + make_interval(secs => $2) \
             WHERE subject = $1",
            &[subject, &wait],
        )
        .await?;
    }
    Ok(())
}

/// Clears the account's count after a successful login.
pub async fn succeeded(db: &impl GenericClient, email: &str) -> Result<(), tokio_postgres::Error> {
    db.execute(
        "DELETE FROM login_failures WHERE subject = $1",
        &[&format!("email:{email}")],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_after_the_free_failures_up_to_a_cap() {
        assert_eq!(wait_after(1), Duration::ZERO);
        assert_eq!(wait_after(4), Duration::ZERO);
        assert_eq!(wait_after(5), Duration::from_secs(1));
        assert_eq!(wait_after(6), Duration::from_secs(2));
        assert_eq!(wait_after(9), Duration::from_secs(16));
        assert_eq!(wait_after(40), MAX_WAIT);
        assert_eq!(wait_after(i32::MAX), MAX_WAIT);
    }

    #[test]
    fn attempts_count_against_the_account_and_the_address() {
        assert_eq!(
            subjects("ada@example.com", Some("10.0.0.7")),
            ["email:ada@example.com", "address:10.0.0.7"]
        );
        assert_eq!(subjects("ada@example.com", None), ["email:ada@example.com"]);
    }
}
