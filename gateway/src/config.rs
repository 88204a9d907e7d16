//! The gateway's configuration (DESIGN §8): `WEFT_*` environment variables, also accepted
//! as flags.

use std::net::SocketAddr;

use weft_shared::config::{BrokerArgs, DatabaseArgs, ProcessArgs};
use weft_shared::crypto::KeyRing;

#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "weft-gateway",
    version,
    about = "Weft gateway: REST API, webhooks and triggers"
)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub process: ProcessArgs,
    /// Master keys for credentials: `key_id:base64(32 bytes)`, comma-separated, newest first.
    #[arg(long, env = "WEFT_MASTER_KEYS", hide_env_values = true)]
    pub master_keys: KeyRing,
    /// Bearer token of the admin API; the admin API is off when unset.
    #[arg(long, env = "WEFT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Address of the REST API and the webhook endpoints.
    #[arg(long, env = "WEFT_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "WEFT_METRICS_ADDR", default_value = "0.0.0.0:9101")]
    pub metrics_addr: SocketAddr,
    /// Largest webhook body accepted, in bytes.
    #[arg(long, env = "WEFT_WEBHOOK_MAX_BODY", default_value_t = 1048576)]
    pub webhook_max_body: usize,
    /// Largest JSON body accepted by the REST API, in bytes.
    #[arg(long, env = "WEFT_API_MAX_BODY", default_value_t = 1048576)]
    pub api_max_body: usize,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Apply pending database migrations and exit (e.g. as a Kubernetes init job).
    Migrate,
}
