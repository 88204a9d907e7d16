//! The gateway's configuration (DESIGN §8): `WEFT_*` environment variables, also accepted
//! as flags.

use std::ffi::OsStr;
use std::net::SocketAddr;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use weft_shared::config::{BrokerArgs, DatabaseArgs, ProcessArgs};
use weft_shared::crypto::KeyRing;

// Value names are the variables' names, so clap's one-line errors name the variable.
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
    #[arg(long, env = "WEFT_MASTER_KEYS", value_name = "WEFT_MASTER_KEYS", hide_env_values = true, value_parser = KeyRingParser)]
    pub master_keys: KeyRing,
    /// Bearer token of the admin API; the admin API is off when unset.
    #[arg(
        long,
        env = "WEFT_ADMIN_TOKEN",
        value_name = "WEFT_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// Address of the REST API and the webhook endpoints.
    #[arg(
        long,
        env = "WEFT_HTTP_ADDR",
        value_name = "WEFT_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub http_addr: SocketAddr,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "WEFT_METRICS_ADDR",
        value_name = "WEFT_METRICS_ADDR",
        default_value = "0.0.0.0:9101"
    )]
    pub metrics_addr: SocketAddr,
    /// Largest webhook body accepted, in bytes.
    #[arg(
        long,
        env = "WEFT_WEBHOOK_MAX_BODY",
        value_name = "WEFT_WEBHOOK_MAX_BODY",
        default_value_t = 1048576
    )]
    pub webhook_max_body: usize,
    /// Largest JSON body accepted by the REST API, in bytes.
    #[arg(
        long,
        env = "WEFT_API_MAX_BODY",
        value_name = "WEFT_API_MAX_BODY",
        default_value_t = 1048576
    )]
    pub api_max_body: usize,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Apply pending database migrations and exit (e.g. as a Kubernetes init job).
    Migrate,
    /// Re-encrypt every stored secret under the newest key of WEFT_MASTER_KEYS, print how
    /// many were re-encrypted, and exit. Safe to run again.
    RotateKeys {
        /// Rows re-encrypted per transaction.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        batch_size: i64,
    },
}

/// Parses the key ring without echoing the value in the error, as clap's usual
/// "invalid value '…'" would: a key with a typo is still a secret.
#[derive(Debug, Clone, Copy)]
struct KeyRingParser;

impl TypedValueParser for KeyRingParser {
    type Value = KeyRing;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<KeyRing, clap::Error> {
        let invalid = |reason: String| {
            clap::Error::raw(
                ErrorKind::InvalidValue,
                format!("invalid WEFT_MASTER_KEYS: {reason}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| invalid("not UTF-8".to_owned()))?;
        text.parse()
            .map_err(|e: weft_shared::crypto::CryptoError| invalid(e.to_string()))
    }
}

// Flags rather than the environment in these tests: flags win over `WEFT_*` variables
// that may be set where the tests run.
#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn a_bad_key_ring_is_named_but_not_echoed() {
        let secret = "k1:c2VjcmV0LWJ1dC10b28tc2hvcnQ=";
        let error = Config::try_parse_from(["weft-gateway", "--master-keys", secret])
            .expect_err("too short");
        let message = error.render().to_string();
        assert!(message.contains("WEFT_MASTER_KEYS"), "{message}");
        assert!(!message.contains("c2VjcmV0"), "{message}");
    }

    #[test]
    fn migrate_is_a_subcommand() {
        let key = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
        let config = Config::try_parse_from(["weft-gateway", "--master-keys", key, "migrate"])
            .expect("valid");
        assert!(matches!(config.command, Some(Command::Migrate)));
    }

    #[test]
    fn rotate_keys_is_a_subcommand_with_a_batch_size() {
        let key = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
        let config = Config::try_parse_from(["weft-gateway", "--master-keys", key, "rotate-keys"])
            .expect("valid");
        assert!(matches!(
            config.command,
            Some(Command::RotateKeys { batch_size: 500 })
        ));
        let config = Config::try_parse_from([
            "weft-gateway",
            "--master-keys",
            key,
            "rotate-keys",
            "--batch-size",
            "20",
        ])
        .expect("valid");
        assert!(matches!(
            config.command,
            Some(Command::RotateKeys { batch_size: 20 })
        ));
        assert!(
            Config::try_parse_from([
                "weft-gateway",
                "--master-keys",
                key,
                "rotate-keys",
                "--batch-size",
                "0"
            ])
            .is_err()
        );
    }
}
