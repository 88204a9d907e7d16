//! What the gateway clears away on its own: audit events past their retention, and the
//! sessions, login counts, links and sign-in flows that have run out.
//!
//! Every replica sweeps (an hour apart each); the deletes are idempotent and batched, so
//! two replicas at once only share the work.

use std::time::Duration;

use deadpool_postgres::{GenericClient, Pool};
use tokio_util::sync::CancellationToken;

/// Rows one delete removes at most: a big backlog goes in short transactions.
const BATCH: i64 = 5_000;
/// How often a gateway sweeps.
const EVERY: Duration = Duration::from_secs(3600);

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub audit_events: u64,
    pub sessions: u64,
    pub other: u64,
}

/// Deletes what has run out: audit events older than `retention`, sessions past their
/// absolute expiry or unused for `idle`, and expired links, flows and login counts.
pub async fn sweep(
    pool: &Pool,
    retention: Duration,
    idle: Duration,
) -> Result<Swept, deadpool_postgres::PoolError> {
    let db = pool.get().await?;
    let mut swept = Swept::default();
    let retention = retention.as_secs_f64();
    swept.audit_events = batched(
        &db,
        "DELETE FROM audit_events WHERE id IN (SELECT id FROM audit_events \
         WHERE occurred_at < now() - make_interval(secs => $1) LIMIT $2)",
        retention,
    )
    .await?;
    swept.sessions = batched(
        &db,
        "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
         WHERE expires_at < now() OR last_seen_at < now() - make_interval(secs => $1) LIMIT $2)",
        idle.as_secs_f64(),
    )
    .await?;
    for statement in [
        // A day past its block, an address's count starts again.
        "DELETE FROM login_failures WHERE blocked_until < now() - interval '1 day'",
        // Open invitations stay listed a month after they expire, to see who never came.
        "DELETE FROM invitations WHERE accepted_at IS NULL AND expires_at < now() - interval '30 days'",
        "DELETE FROM password_resets WHERE expires_at < now()",
        "DELETE FROM sso_states WHERE expires_at < now()",
    ] {
        swept.other += db.execute(statement, &[]).await.map_err(pool_error)?;
    }
    Ok(swept)
}

async fn batched(
    db: &impl GenericClient,
    statement: &str,
    seconds: f64,
) -> Result<u64, deadpool_postgres::PoolError> {
    let mut total = 0;
    loop {
        let deleted = db
            .execute(statement, &[&seconds, &BATCH])
            .await
            .map_err(pool_error)?;
        total += deleted;
        if deleted < u64::try_from(BATCH).unwrap_or(u64::MAX) {
            return Ok(total);
        }
    }
}

fn pool_error(e: tokio_postgres::Error) -> deadpool_postgres::PoolError {
    deadpool_postgres::PoolError::Backend(e)
}

/// Sweeps every hour until `stop`; a failed sweep is logged and tried at the next.
pub async fn run(pool: Pool, retention: Duration, idle: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match sweep(&pool, retention, idle).await {
            Ok(swept) => tracing::debug!(?swept, "housekeeping swept"),
            Err(e) => tracing::warn!(error = %e, "housekeeping failed; trying again in an hour"),
        }
    }
}
