//! One database per test, copied from a migrated template database: fast and isolated.

use std::str::FromStr;

use tokio_postgres::NoTls;
use uuid::Uuid;

const TEMPLATE: &str = "weft_test_template";
/// Serializes template (re)creation and copying across test processes.
const TEMPLATE_LOCK: i64 = 0x7765_6674_7465_7374;

fn admin_url() -> String {
    std::env::var("WEFT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The URL of another database on the same server.
fn url_of(database: &str) -> String {
    let base = admin_url();
    match base.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{database}"),
        None => base,
    }
}

async fn connect_to(url: &str) -> tokio_postgres::Client {
    let config = tokio_postgres::Config::from_str(url).expect("test database URL parses");
    let (client, connection) = config
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url}: {e}"));
    tokio::spawn(connection);
    client
}

pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    /// A fresh database with the current schema.
    pub async fn create() -> Self {
        let admin = connect_to(&admin_url()).await;
        admin
            .execute("SELECT pg_advisory_lock($1)", &[&TEMPLATE_LOCK])
            .await
            .expect("template lock");
        migrate_template(&admin).await;
        let name = format!("weft_test_{}", Uuid::new_v4().simple());
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
            .await
            .expect("test database is created from the template");
        admin
            .execute("SELECT pg_advisory_unlock($1)", &[&TEMPLATE_LOCK])
            .await
            .expect("template unlock");
        Self {
            url: url_of(&name),
            name,
        }
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        connect_to(&self.url).await
    }
}

/// Brings the template up to date; a template made from other migrations is rebuilt.
async fn migrate_template(admin: &tokio_postgres::Client) {
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&TEMPLATE])
        .await
        .expect("catalog query")
        .is_some();
    if !exists {
        admin
            .batch_execute(&format!("CREATE DATABASE {TEMPLATE}"))
            .await
            .expect("template database is created");
    }
    let migrated = {
        let mut client = connect_to(&url_of(TEMPLATE)).await;
        weft_runtime::db::migrate_client(&mut client).await
    };
    if let Err(e) = migrated {
        eprintln!("rebuilding the test template database: {e}");
        // Two statements: several in one query run as one transaction, which DROP
        // DATABASE refuses.
        admin
            .batch_execute(&format!("DROP DATABASE {TEMPLATE} WITH (FORCE)"))
            .await
            .expect("the outdated template database is dropped");
        admin
            .batch_execute(&format!("CREATE DATABASE {TEMPLATE}"))
            .await
            .expect("template database is rebuilt");
        let mut client = connect_to(&url_of(TEMPLATE)).await;
        weft_runtime::db::migrate_client(&mut client)
            .await
            .expect("migrations apply to a fresh template");
    }
    // The template's connection must be gone before it can be copied.
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&TEMPLATE],
        )
        .await
        .expect("template connections end");
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime builds");
            runtime.block_on(async move {
                let admin = connect_to(&admin_url()).await;
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        });
        let _ = cleanup.join();
    }
}
