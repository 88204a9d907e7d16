//! The gateway process: built from its [`Config`], then served on listeners the caller
//! binds, until a shutdown future the caller provides resolves (so tests can run it on
//! port 0 and stop it at will).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::middleware::from_fn;
use deadpool_postgres::Pool;
use prometheus::Registry;
use reqwest::Url;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use weft_domain::manifest::InputSchemas;
use weft_runtime::db::{self, DbError};
use weft_runtime::egress::{EgressPolicy, GuardedClient};
use weft_runtime::queue::{Broker, Publisher, Topology};
use weft_runtime::telemetry::{self, Readiness};

use crate::api;
use crate::config::{Config, Signup};
use crate::extract;
use crate::housekeeping;
use crate::identity::sessions::SessionPolicy;
use crate::identity::sso::{Provisioning, Sso, SsoSettings};
use crate::mail::{MailError, Mailer};
use crate::metrics::Metrics;
use crate::replies::Replies;
use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Mail(#[from] MailError),
    #[error("preparing the database (WEFT_DATABASE_URL)")]
    Database(#[from] DbError),
    #[error("serving the API")]
    Api(#[source] std::io::Error),
    #[error("serving /healthz, /readyz and /metrics")]
    Ops(#[source] std::io::Error),
    #[error("building the HTTP client for OAuth token endpoints")]
    Http(#[source] reqwest::Error),
}

pub struct Gateway {
    state: AppState,
    audit_retention: Duration,
    registry: Registry,
    shutdown_timeout: Duration,
    broker: Broker,
}

impl Gateway {
    /// Builds the DB pool (migrating under the advisory lock when
    /// `database.auto_migrate`), the AMQP publisher, metrics.
    pub async fn new(config: Config) -> Result<Gateway, StartError> {
        let pool = db::pool(
            &config.database.database_url,
            config.database.database_ca_file.as_ref(),
            config.database.database_pool_size,
        )?;
        if config.database.auto_migrate {
            db::migrate(&pool).await?;
        }
        let sessions = Arc::new(session_policy(&config));
        let sso = sso_settings(&config)
            .map(|settings| Sso::new(settings).map(Arc::new))
            .transpose()
            .map_err(StartError::Http)?;
        let public_origin = Arc::from(origin_of(&config.public_url));
        let mailer = match &config.smtp.smtp_url {
            Some(url) => {
                let from = config.smtp_from.clone().unwrap_or_else(|| {
                    let host = Url::parse(&config.public_url)
                        .ok()
                        .and_then(|url| url.host_str().map(str::to_owned))
                        .unwrap_or_else(|| "localhost".to_owned());
                    format!("Weft <weft@{host}>")
                });
                Some(Arc::new(Mailer::new(url, &from)?))
            }
            None => None,
        };
        let topology = Topology::new(config.broker.namespace.as_str());
        let replies = Replies::new(&topology);
        let publisher = Publisher::new(config.broker.broker(), "weft-gateway", topology);
        // Connecting now declares the topology and spares the first webhook the wait. A
        // broker that is down is not fatal: /readyz reports it and publishing retries.
        if !publisher.is_connected().await {
            tracing::warn!(
                "message broker unreachable at start; runs will be refused with 503 until it is back"
            );
        }
        let registry = telemetry::registry("gateway");
        let oauth_http = GuardedClient::new(
            EgressPolicy::new(config.egress_allow).through(config.egress_proxy),
            concat!("weft-gateway/", env!("CARGO_PKG_VERSION")),
        )
        .map_err(StartError::Http)?;
        let state = AppState {
            pool,
            publisher,
            metrics: Metrics::new(&registry),
            keys: Arc::new(config.keys.master_keys),
            admin_token: config
                .admin
                .admin_token
                .map(|token| Arc::from(token.expose_secret())),
            api_max_body: config.api_max_body,
            webhook_max_body: config.webhook_max_body,
            replies,
            input_schemas: Arc::new(InputSchemas::new()),
            public_origin,
            sessions,
            signup_open: config.signup == Signup::Open,
            users_create_workspaces: config.users_create_workspaces,
            invitation_lifetime: config.invitation_lifetime,
            sso,
            mailer,
            public_url: Arc::from(config.public_url),
            oauth_http,
            request_timeout: config.http_request_timeout,
            max_run_timeout: config.max_run_timeout,
        };
        Ok(Gateway {
            state,
            audit_retention: config.audit_retention,
            registry,
            shutdown_timeout: config.process.shutdown_timeout,
            broker: config.broker.broker(),
        })
    }

    /// Serves the REST API on `api` and /healthz,/readyz,/metrics on `ops`, and consumes
    /// the reply queue, until `shutdown` resolves; then closes the publisher.
    ///
    /// In-flight requests get the configured shutdown timeout to finish (a webhook waiting
    /// for its broker confirm must be answered, or its sender will retry needlessly).
    pub async fn serve(
        self,
        api: TcpListener,
        ops: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let Gateway {
            state,
            audit_retention,
            registry,
            shutdown_timeout,
            broker,
        } = self;
        if let Ok(listening) = api.local_addr()
            && loopback_only(&state.public_url, listening)
        {
            tracing::warn!(
                public_url = %state.public_url,
                %listening,
                "WEFT_PUBLIC_URL is a loopback address but the gateway listens on other interfaces: the webhook URLs and OAuth redirect URIs it hands out reach only this machine; set WEFT_PUBLIC_URL to the address senders and browsers use"
            );
        }
        let stop = CancellationToken::new();
        // Stopped only after the servers: requests draining at shutdown may be waiting for
        // a reply.
        let replies_stop = CancellationToken::new();
        let replies =
            tokio::spawn(Arc::clone(&state.replies).consume(broker, replies_stop.clone()));
        let housekeeping = tokio::spawn(housekeeping::run(
            state.pool.clone(),
            audit_retention,
            state.sessions.idle,
            replies_stop.clone(),
        ));
        let readiness = readiness(state.pool.clone(), Arc::clone(&state.publisher));
        let publisher = Arc::clone(&state.publisher);

        let api_server = async {
            let app = api::router(state).layer(from_fn(extract::limit_head));
            axum::serve(api, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .await
                .map_err(StartError::Api)
        };
        let ops_server = async {
            telemetry::serve_ops(ops, registry, readiness, stop.clone().cancelled_owned())
                .await
                .map_err(StartError::Ops)
        };
        let servers = async { tokio::try_join!(api_server, ops_server).map(|_| ()) };
        let mut servers = std::pin::pin!(servers);

        let result = tokio::select! {
            result = &mut servers => result,
            () = shutdown => {
                tracing::info!("shutting down: finishing in-flight requests");
                stop.cancel();
                match tokio::time::timeout(shutdown_timeout, &mut servers).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!(timeout = ?shutdown_timeout, "requests still in flight at the shutdown timeout were dropped");
                        Ok(())
                    }
                }
            }
        };
        replies_stop.cancel();
        if let Err(e) = replies.await {
            tracing::warn!(error = %e, "the reply consumer ended abnormally");
        }
        if let Err(e) = housekeeping.await {
            tracing::warn!(error = %e, "housekeeping ended abnormally");
        }
        publisher.close().await;
        result
    }
}

/// Whether `public_url` reaches only this machine while the gateway listens on others'
/// behalf too: a deployment that kept the local default.
fn loopback_only(public_url: &str, listening: SocketAddr) -> bool {
    is_loopback(public_url) && !listening.ip().is_loopback()
}

/// Whether `public_url`'s host is this machine.
fn is_loopback(public_url: &str) -> bool {
    let Some(host) = Url::parse(public_url)
        .ok()
        .and_then(|url| url.host_str().map(str::to_ascii_lowercase))
    else {
        return false;
    };
    // An IPv6 host comes in brackets.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host == "localhost" || host.ends_with(".localhost"),
    }
}

/// Session cookies go without `Secure` only where browsers would drop them otherwise and
/// nothing leaves the machine: plain HTTP to a loopback address.
fn session_policy(config: &Config) -> SessionPolicy {
    let plain_loopback =
        config.public_url.starts_with("http://") && is_loopback(&config.public_url);
    SessionPolicy {
        idle: config.session_idle_timeout,
        lifetime: config.session_lifetime,
        secure: !plain_loopback,
    }
}

/// The single sign-on settings, when an issuer is configured.
fn sso_settings(config: &Config) -> Option<SsoSettings> {
    let issuer = config.oidc_issuer.as_ref()?;
    let provisioning = config
        .oidc_provision_workspace
        .map(|workspace| Provisioning {
            domains: config
                .oidc_provision_domains
                .iter()
                .map(|domain| domain.trim().to_lowercase())
                .filter(|domain| !domain.is_empty())
                .collect(),
            workspace,
            role: config.oidc_provision_role,
        });
    Some(SsoSettings {
        issuer: issuer.clone(),
        client_id: config.oidc_client_id.clone().unwrap_or_default(),
        client_secret: config.oidc_secret.oidc_client_secret.clone(),
        redirect_uri: format!("{}/api/v1/sso/callback", config.public_url),
        provisioning,
        only: config.sso_only,
    })
}

/// `scheme://host[:port]` of the public URL, as browsers write it in `Origin`.
fn origin_of(public_url: &str) -> String {
    Url::parse(public_url).map_or_else(
        |_| public_url.to_owned(),
        |url| url.origin().ascii_serialization(),
    )
}

fn readiness(pool: Pool, publisher: Arc<Publisher>) -> Readiness {
    Arc::new(move || {
        let pool = pool.clone();
        let publisher = Arc::clone(&publisher);
        Box::pin(async move {
            let (database, broker) =
                tokio::join!(db::is_reachable(&pool), publisher.is_connected());
            vec![("database", database), ("broker", broker)]
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_public_url_is_flagged_only_when_listening_beyond_loopback() {
        let everywhere: SocketAddr = "0.0.0.0:8080".parse().expect("an address");
        let everywhere_v6: SocketAddr = "[::]:8080".parse().expect("an address");
        let local: SocketAddr = "127.0.0.1:8080".parse().expect("an address");
        for url in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://localhost:8080",
            "http://LocalHost",
            "http://weft.localhost",
            "http://[::1]:8080",
        ] {
            assert!(loopback_only(url, everywhere), "{url}");
            assert!(loopback_only(url, everywhere_v6), "{url}");
            assert!(
                !loopback_only(url, local),
                "{url} on loopback is consistent"
            );
        }
        for url in [
            "https://weft.example.com",
            "http://10.0.0.5:8080",
            "http://[2001:db8::1]",
            "http://localhost.example.com",
        ] {
            assert!(!loopback_only(url, everywhere), "{url}");
        }
    }
}
