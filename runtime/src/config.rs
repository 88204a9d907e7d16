//! Start-up configuration shared by every binary (architecture §8): environment variables with
//! a `WEFT_` prefix, also accepted as flags. A missing or malformed setting stops the
//! process with one line naming it.

use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

/// Parses the process configuration; on a bad setting prints one line and exits with 2.
pub fn parse<T: Parser>() -> T {
    match T::try_parse() {
        Ok(config) => config,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            eprintln!("{}", one_line(&e.render().to_string()));
            std::process::exit(2);
        }
    }
}

/// Folds clap's multi-line message into one line without the usage hints.
fn one_line(rendered: &str) -> String {
    rendered
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with("Usage:")
                && !line.starts_with("For more information")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// How to reach the broker, and which namespace of queues to use.
#[derive(clap::Args, Debug, Clone)]
pub struct BrokerArgs {
    /// AMQP URL of RabbitMQ.
    #[arg(long, env = "WEFT_AMQP_URL", value_name = "WEFT_AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f", value_parser = parse_amqp_url)]
    pub amqp_url: String,
    /// Prefix of every exchange and queue name, so several fleets can share a broker.
    #[arg(long, env = "WEFT_NAMESPACE", value_name = "WEFT_NAMESPACE", default_value = "weft", value_parser = parse_namespace)]
    pub namespace: String,
}

/// How to reach PostgreSQL.
#[derive(clap::Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// PostgreSQL URL.
    #[arg(long, env = "WEFT_DATABASE_URL", value_name = "WEFT_DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/weft", value_parser = parse_database_url)]
    pub database_url: tokio_postgres::Config,
    /// Connections in the pool.
    #[arg(
        long,
        env = "WEFT_DATABASE_POOL_SIZE",
        value_name = "WEFT_DATABASE_POOL_SIZE",
        default_value_t = 16
    )]
    pub database_pool_size: usize,
    /// Apply pending migrations at start (under an advisory lock).
    #[arg(long, env = "WEFT_AUTO_MIGRATE", value_name = "WEFT_AUTO_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_migrate: bool,
}

/// Logging and shutdown, common to every binary.
#[derive(clap::Args, Debug, Clone)]
pub struct ProcessArgs {
    /// Log format: `json` lines, or `pretty` for people.
    #[arg(long, env = "WEFT_LOG_FORMAT", value_name = "WEFT_LOG_FORMAT", default_value = "json", value_parser = ["json", "pretty"])]
    pub log_format: String,
    /// How long in-flight work may take to finish after SIGTERM.
    #[arg(long, env = "WEFT_SHUTDOWN_TIMEOUT", value_name = "WEFT_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like `30s`: {e}"))
}

fn parse_amqp_url(text: &str) -> Result<String, String> {
    lapin::uri::AMQPUri::from_str(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("not an AMQP URL like amqp://user:pass@host:5672/%2f: {e}"))
}

fn parse_database_url(text: &str) -> Result<tokio_postgres::Config, String> {
    tokio_postgres::Config::from_str(text)
        .map_err(|e| format!("not a PostgreSQL URL like postgres://user@host:5432/db: {e}"))
}

fn parse_namespace(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(text.to_owned())
    } else {
        Err("must be 1 to 64 letters, digits, `-`, `_` or `.`".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser, Debug)]
    struct Probe {
        #[command(flatten)]
        broker: BrokerArgs,
        #[arg(long, env = "WEFT_PROBE_REQUIRED", value_name = "WEFT_PROBE_REQUIRED")]
        required: String,
    }

    #[test]
    fn errors_fold_into_one_line_naming_the_setting() {
        let err = Probe::try_parse_from(["probe", "--required", "x", "--namespace", "has space"])
            .expect_err("bad namespace");
        let line = one_line(&err.render().to_string());
        assert!(!line.contains('\n'));
        assert!(line.contains("--namespace"), "{line}");

        let err = Probe::try_parse_from(["probe"]).expect_err("missing");
        let line = one_line(&err.render().to_string());
        assert!(
            line.contains("WEFT_PROBE_REQUIRED") || line.contains("--required"),
            "{line}"
        );
    }

    #[test]
    fn urls_are_checked_at_start() {
        assert!(parse_amqp_url("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
        assert!(parse_amqp_url("http://nope").is_err());
        assert!(parse_database_url("postgres://postgres@127.0.0.1/weft").is_ok());
        assert!(parse_database_url("postgres://host:notaport/db").is_err());
    }
}
