//! Fleet-wide rate limits (architecture §6): a limit of `requests` per `per` spaces calls
//! `per / requests` apart. The next free slot of each limited key lives in one PostgreSQL
//! row that every scheduler and gateway reserves from, so the limit holds across all of
//! them and all workers together; a task is not executed before its slot.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use weft_domain::ids::{ConnectionId, WorkspaceId};
use weft_domain::manifest::{Manifest, RateLimit};

/// The spacing between two calls under `limit`; `None` for a limit that allows nothing
/// to be said (no requests, or a period that does not parse — refused at registration).
pub fn slot_interval(limit: &RateLimit) -> Option<Duration> {
    let per = humantime::parse_duration(&limit.per).ok()?;
    (limit.requests > 0).then(|| per / limit.requests)
}

/// The limited key of calls through a connection: providers limit per account.
pub fn connection_key(connection_id: ConnectionId) -> String {
    format!("connection:{connection_id}")
}

/// The limited key of a connector's calls made without a connection, per workspace.
pub fn connector_key(workspace_id: WorkspaceId, connector: &str) -> String {
    format!("connector:{workspace_id}:{connector}")
}

/// The limited key and slot spacing of a call of `manifest`'s connector, if it is
/// limited. Through a connection (`(id, its own limit)`), the connection's limit or else
/// the connector's applies per connection; without one, the connector's, per workspace.
pub fn limit_of(
    workspace_id: WorkspaceId,
    manifest: &Manifest,
    connection: Option<(ConnectionId, Option<&RateLimit>)>,
) -> Option<(String, Duration)> {
    match connection {
        Some((id, own)) => own
            .or(manifest.rate_limit.as_ref())
            .and_then(slot_interval)
            .map(|interval| (connection_key(id), interval)),
        None => manifest
            .rate_limit
            .as_ref()
            .and_then(slot_interval)
            .map(|interval| (connector_key(workspace_id, &manifest.key), interval)),
    }
}

/// Reserves the next call slot of `key` and returns when it is. Reserving takes the row
/// lock until the transaction ends; callers reserving several keys in one transaction
/// take them in key order, so two transactions never wait on each other.
pub async fn reserve_slot(
    client: &impl GenericClient,
    key: &str,
    interval: Duration,
) -> Result<DateTime<Utc>, tokio_postgres::Error> {
    let statement = client
        .prepare_cached(
            "INSERT INTO rate_limit_slots AS s (key, next_at) VALUES ($1, now() + $2 * interval '1 microsecond') \
             ON CONFLICT (key) DO UPDATE SET next_at = greatest(s.next_at, now()) + $2 * interval '1 microsecond' \
             RETURNING next_at - $2 * interval '1 microsecond'",
        )
        .await?;
    // Microseconds as a float: PostgreSQL multiplies an interval by a double precision.
    let micros = interval.as_micros() as f64;
    let row = client.query_one(&statement, &[&key, &micros]).await?;
    row.try_get(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_spaced_by_the_period_over_the_requests() {
        let limit = |requests, per: &str| RateLimit {
            requests,
            per: per.to_owned(),
        };
        assert_eq!(
            slot_interval(&limit(5, "1s")),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            slot_interval(&limit(100, "1m")),
            Some(Duration::from_millis(600))
        );
        assert_eq!(slot_interval(&limit(0, "1s")), None);
        assert_eq!(slot_interval(&limit(1, "soon")), None);
    }

    #[test]
    fn connections_and_connectors_have_distinct_keys() {
        let uuid = uuid::Uuid::now_v7();
        assert_ne!(
            connection_key(ConnectionId::from_uuid(uuid)),
            connector_key(WorkspaceId::from_uuid(uuid), "acme")
        );
    }

    #[test]
    fn a_connection_limit_overrides_the_connector_limit_per_connection() {
        let limit = |requests| RateLimit {
            requests,
            per: "1s".to_owned(),
        };
        let mut manifest: Manifest = serde_json::from_value(serde_json::json!({
            "key": "acme", "name": "Acme", "version": "1", "base_url": "https://acme.test",
            "actions": []
        }))
        .expect("manifest");
        let (workspace, connection) = (WorkspaceId::generate(), ConnectionId::generate());
        assert_eq!(limit_of(workspace, &manifest, None), None);
        assert_eq!(
            limit_of(workspace, &manifest, Some((connection, None))),
            None
        );
        manifest.rate_limit = Some(limit(10));
        assert_eq!(
            limit_of(workspace, &manifest, None),
            Some((connector_key(workspace, "acme"), Duration::from_millis(100)))
        );
        assert_eq!(
            limit_of(workspace, &manifest, Some((connection, None))),
            Some((connection_key(connection), Duration::from_millis(100)))
        );
        let own = limit(2);
        assert_eq!(
            limit_of(workspace, &manifest, Some((connection, Some(&own)))),
            Some((connection_key(connection), Duration::from_millis(500)))
        );
    }
}
