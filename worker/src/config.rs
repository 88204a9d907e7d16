//! The worker's configuration (DESIGN §8).

use std::net::SocketAddr;

use weft_shared::config::{BrokerArgs, MasterKeysArgs, ProcessArgs};
use weft_shared::egress::EgressRule;

#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "weft-worker",
    version,
    about = "Weft worker: executes node tasks against external APIs"
)]
pub struct Config {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub process: ProcessArgs,
    /// Master keys that decrypt connection credentials.
    #[command(flatten)]
    pub keys: MasterKeysArgs,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "WEFT_METRICS_ADDR",
        value_name = "WEFT_METRICS_ADDR",
        default_value = "0.0.0.0:9103"
    )]
    pub metrics_addr: SocketAddr,
    /// Tasks in flight in this process.
    #[arg(long, env = "WEFT_WORKER_CONCURRENCY", value_name = "WEFT_WORKER_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=10000))]
    pub concurrency: u16,
    /// Networks (CIDR) or host names that actions may call although they are private,
    /// comma-separated (e.g. `127.0.0.0/8` for local runs).
    #[arg(
        long,
        env = "WEFT_EGRESS_ALLOW",
        value_name = "WEFT_EGRESS_ALLOW",
        value_delimiter = ','
    )]
    pub egress_allow: Vec<EgressRule>,
    /// Largest upstream response body read, in bytes.
    #[arg(long, env = "WEFT_MAX_RESPONSE_BYTES", value_name = "WEFT_MAX_RESPONSE_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_response_bytes: usize,
}
