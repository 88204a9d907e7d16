//! TLS to PostgreSQL and RabbitMQ against real servers: a private PostgreSQL cluster that
//! takes TLS connections only and a private RabbitMQ node with only a TLS listener, both
//! with a certificate for `localhost` signed by a throwaway CA. `deploy/local/tls.sh`
//! starts them, exports where they are and runs these tests:
//!
//! - `WEFT_TLS_PG_PORT`, `WEFT_TLS_AMQP_PORT`: the servers' ports on 127.0.0.1;
//! - `WEFT_TLS_CA_FILE`: the CA that signed both certificates;
//! - `WEFT_TLS_OTHER_CA_FILE`: a CA that signed neither.

use std::path::PathBuf;

use lapin::BasicProperties;
use lapin::options::BasicGetOptions;
use weft_runtime::db::{self, DbError};
use weft_runtime::queue::{self, Broker, Publisher, Topology};
use weft_runtime::tls::{CaFile, DatabaseUrl};

fn setting(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by deploy/local/tls.sh"))
}

fn ca() -> CaFile {
    CaFile::read(&PathBuf::from(setting("WEFT_TLS_CA_FILE"))).expect("the test CA reads")
}

fn other_ca() -> CaFile {
    CaFile::read(&PathBuf::from(setting("WEFT_TLS_OTHER_CA_FILE"))).expect("the other CA reads")
}

fn database(host: &str, sslmode: &str) -> DatabaseUrl {
    let port = setting("WEFT_TLS_PG_PORT");
    format!("postgres://postgres@{host}:{port}/postgres?sslmode={sslmode}")
        .parse()
        .expect("the URL parses")
}

/// Whether a connection with these settings is encrypted, as the server sees it.
async fn encrypted(url: &DatabaseUrl, ca: Option<&CaFile>) -> Result<bool, DbError> {
    let pool = db::pool(url, ca, 1)?;
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// The refusal and its causes, as a binary's start-up error shows them (tokio-postgres's
/// message leaves the server's words to its source).
async fn refusal(url: &DatabaseUrl, ca: Option<&CaFile>) -> String {
    let error = encrypted(url, ca)
        .await
        .expect_err("the connection is refused");
    let mut shown = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(error) = cause {
        shown.push_str(&format!(" / {error}"));
        cause = error.source();
    }
    shown
}

#[tokio::test]
#[ignore = "needs the private TLS servers of deploy/local/tls.sh"]
async fn verify_full_with_the_servers_ca_connects_encrypted() {
    let url = database("localhost", "verify-full");
    assert!(encrypted(&url, Some(&ca())).await.expect("connects"));
    let pool = db::pool(&url, Some(&ca()), 1).expect("pool");
    let rows = pool
        .get()
        .await
        .expect("connects")
        .simple_query("SELECT 1")
        .await
        .expect("SELECT 1");
    assert!(!rows.is_empty(), "SELECT 1 answers");
}

#[tokio::test]
#[ignore = "needs the private TLS servers of deploy/local/tls.sh"]
async fn verify_full_refuses_a_certificate_no_trusted_ca_signed() {
    let error = refusal(&database("localhost", "verify-full"), Some(&other_ca())).await;
    assert!(
        error.contains(
            "(the server's certificate is not trusted: no system CA nor any in WEFT_DATABASE_CA_FILE signed it)"
        ) && error.contains("invalid peer certificate: UnknownIssuer"),
        "{error}"
    );
    let error = refusal(&database("localhost", "verify-ca"), None).await;
    assert!(
        error.contains("the server's certificate is not trusted"),
        "the system's roots alone do not trust it either: {error}"
    );
}

#[tokio::test]
#[ignore = "needs the private TLS servers of deploy/local/tls.sh"]
async fn verify_ca_accepts_another_host_name_and_verify_full_does_not() {
    // The certificate is issued for `localhost` only, not for its address.
    assert!(
        encrypted(&database("127.0.0.1", "verify-ca"), Some(&ca()))
            .await
            .expect("verify-ca checks the chain only")
    );
    let error = refusal(&database("127.0.0.1", "verify-full"), Some(&ca())).await;
    assert!(
        error.contains("not issued for the host in the URL"),
        "{error}"
    );
}

#[tokio::test]
#[ignore = "needs the private TLS servers of deploy/local/tls.sh"]
async fn require_and_prefer_encrypt_without_a_ca() {
    for sslmode in ["require", "prefer"] {
        assert!(
            encrypted(&database("127.0.0.1", sslmode), None)
                .await
                .unwrap_or_else(|e| panic!("{sslmode} connects: {e}")),
            "{sslmode}"
        );
    }
}

#[tokio::test]
#[ignore = "needs the private TLS servers of deploy/local/tls.sh"]
async fn disable_is_refused_by_a_server_that_takes_tls_only() {
    let error = refusal(&database("127.0.0.1", "disable"), Some(&ca())).await;
    assert!(
        error.contains("no pg_hba.conf entry") && error.contains("no encryption"),
        "{error}"
    );
}

fn broker(ca: CaFile) -> Broker {
    let port = setting("WEFT_TLS_AMQP_PORT");
    Broker::new(
        &format!("amqps://guest:guest@localhost:{port}/%2f"),
        Some(ca),
    )
}

#[tokio::test]
#[ignore = "needs the private TLS servers of deploy/local/tls.sh"]
async fn amqps_with_the_brokers_ca_declares_and_publishes() {
    let broker = broker(ca());
    let topology = Topology::new(format!("weft_tls_{}", uuid::Uuid::new_v4().simple()));
    let publisher = Publisher::new(broker.clone(), "weft tls test", topology.clone());
    publisher
        .publish_raw(
            &topology.dead(),
            &topology.dead(),
            b"{}",
            BasicProperties::default(),
        )
        .await
        .expect("declared the topology and published with a confirm over amqps");
    publisher.close().await;

    let connection = queue::connect(&broker, "weft tls test reader")
        .await
        .expect("connects");
    let channel = connection.create_channel().await.expect("channel");
    let message = channel
        .basic_get(
            topology.dead().as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .expect("basic.get");
    assert_eq!(message.map(|m| m.delivery.data), Some(b"{}".to_vec()));
    topology.delete(&channel).await.expect("topology deleted");
    connection.close(200, "done".into()).await.expect("closed");
}

#[tokio::test]
#[ignore = "needs the private TLS servers of deploy/local/tls.sh"]
async fn amqps_refuses_a_certificate_no_trusted_ca_signed() {
    let error = queue::connect(&broker(other_ca()), "weft tls test")
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        error.ends_with(
            "(the server's certificate is not trusted: no system CA nor any in WEFT_AMQP_CA_FILE signed it)"
        ),
        "{error}"
    );
    assert!(!error.contains("guest:guest"), "no password: {error}");
}
