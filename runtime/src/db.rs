//! PostgreSQL: the connection pool and the migrations, applied under an advisory lock so
//! replicas starting together are safe.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};

use crate::tls::{self, CaFile, DatabaseUrl, TlsError};

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// Arbitrary, fixed: the advisory lock every migrating process takes.
const MIGRATION_LOCK: i64 = 0x7765_6674_0000_0001;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database pool could not be built: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    #[error("database TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("no database connection: {0}{advice}", advice = tls::certificate_advice(.0, "WEFT_DATABASE_CA_FILE"))]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
    /// A stored value this build cannot read (written by a newer build, or by hand).
    #[error("stored value of {column} is not valid: {problem}")]
    Stored {
        column: &'static str,
        problem: String,
    },
}

/// Builds the pool (connections open on first use), with TLS as the URL's `sslmode`
/// says and `ca` trusted besides the system's roots. Every wait is bounded.
pub fn pool(url: &DatabaseUrl, ca: Option<&CaFile>, size: usize) -> Result<Pool, DbError> {
    let manager = Manager::from_config(
        url.config().clone(),
        url.connector(ca)?,
        // A connection the server closed is seen as closed by its own client (its
        // connection task ended) and replaced; a test query at every checkout would cost a
        // round trip per message handled. A connection that breaks later fails its query,
        // and the message is retried or the request answered 503, as for any outage.
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let timeouts = Timeouts {
        wait: Some(Duration::from_secs(5)),
        create: Some(Duration::from_secs(5)),
        recycle: Some(Duration::from_secs(5)),
    };
    Ok(Pool::builder(manager)
        .max_size(size)
        .timeouts(timeouts)
        .runtime(Runtime::Tokio1)
        .build()?)
}

/// Applies pending migrations while holding the migration advisory lock.
pub async fn migrate(pool: &Pool) -> Result<(), DbError> {
    let mut client = pool.get().await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = embedded::migrations::runner()
        .set_abort_divergent(true)
        .run_async(&mut **client)
        .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    result?;
    Ok(())
}

/// Applies pending migrations on one client; the caller holds whatever lock it needs.
pub async fn migrate_client(client: &mut tokio_postgres::Client) -> Result<(), DbError> {
    embedded::migrations::runner()
        .set_abort_divergent(true)
        .run_async(client)
        .await?;
    Ok(())
}

/// Whether the database answers within a second.
pub async fn is_reachable(pool: &Pool) -> bool {
    let probe = async {
        let client = pool.get().await.ok()?;
        client.simple_query("SELECT 1").await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Some(_))
    )
}
