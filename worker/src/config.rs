//! The worker's configuration (architecture §8).

use std::net::SocketAddr;

use weft_runtime::config::{BrokerArgs, MasterKeysArgs, ProcessArgs};
use weft_runtime::egress::{EgressProxy, EgressProxyParser, EgressRule};

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
    /// The http(s) forward proxy requests on behalf of users leave through, as
    /// `http(s)://[user:password@]host:port`; targets are still checked by the egress
    /// rules (names resolved first) before the proxy is asked.
    #[arg(
        long,
        env = "WEFT_EGRESS_PROXY",
        value_name = "WEFT_EGRESS_PROXY",
        hide_env_values = true,
        value_parser = EgressProxyParser
    )]
    pub egress_proxy: Option<EgressProxy>,
    /// Largest upstream response body read, in bytes.
    #[arg(long, env = "WEFT_MAX_RESPONSE_BYTES", value_name = "WEFT_MAX_RESPONSE_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_response_bytes: usize,
}

// Flags rather than the environment in these tests: flags win over `WEFT_*` variables
// that may be set where the tests run.
#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    const KEYS: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

    #[test]
    fn a_malformed_egress_proxy_is_named_in_one_line_without_its_password() {
        let error = Config::try_parse_from([
            "weft-worker",
            "--master-keys",
            KEYS,
            "--egress-proxy",
            "socks5://ops:pr0xy-pa55@proxy.corp:1080",
        ])
        .expect_err("not an http proxy");
        let message = error.render().to_string();
        assert_eq!(
            message.trim_end(),
            "error: invalid WEFT_EGRESS_PROXY: scheme `socks5` is not http or https: write it as http(s)://[user:password@]host:port"
        );
        let config = Config::try_parse_from([
            "weft-worker",
            "--master-keys",
            KEYS,
            "--egress-proxy",
            "http://ops:pr0xy-pa55@proxy.corp:3128",
        ])
        .expect("an http proxy");
        assert!(config.egress_proxy.is_some());
        assert!(!format!("{config:?}").contains("pr0xy-pa55"));
    }
}
