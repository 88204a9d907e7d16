//! Start-up configuration shared by every binary (architecture §8): environment variables with
//! a `WEFT_` prefix, also accepted as flags. A missing or malformed setting stops the
//! process with one line naming it.

mod secret;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use secrecy::{ExposeSecret, SecretString};

pub use secret::SecretError;
pub(crate) use secret::masked;
use secret::{Given, parse_admin_token, parse_amqp_url, parse_database_url, parse_master_keys};

use weft_domain::crypto::KeyRing;

use crate::queue::Broker;
use crate::tls::{CaFile, DatabaseUrl, TlsError};

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

/// Stops the process for a setting refused after [`parse`] (the OpenTelemetry ones, read
/// when logs and traces start): one line, exit code 2, like a refusal by [`parse`].
pub fn refuse(error: &dyn std::error::Error) -> ! {
    eprintln!("{}", one_line(&format!("error: {error}")));
    std::process::exit(2);
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

/// A setting refused after clap read it.
#[derive(Debug, thiserror::Error)]
enum SettingError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("{variable}: {source}")]
    CaFile {
        variable: &'static str,
        source: TlsError,
    },
}

/// The CA file a `*_CA_FILE` setting names, read and checked.
fn read_ca_file(
    variable: &'static str,
    path: Option<PathBuf>,
) -> Result<Option<CaFile>, SettingError> {
    path.map(|path| CaFile::read(&path).map_err(|source| SettingError::CaFile { variable, source }))
        .transpose()
}

/// Implements clap's `Args` for `$resolved` as the settings `$given` (what clap reads),
/// turned into the values the program uses by `$resolve`, which reads the `_FILE`
/// variants and parses secrets without echoing them (see [`secret`]).
macro_rules! resolved_args {
    ($resolved:ty, $given:ty, $resolve:path) => {
        impl clap::FromArgMatches for $resolved {
            fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
                let given = <$given as clap::FromArgMatches>::from_arg_matches(matches)?;
                $resolve(given).map_err(|e| {
                    clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{e}\n"))
                })
            }

            fn update_from_arg_matches(
                &mut self,
                matches: &clap::ArgMatches,
            ) -> Result<(), clap::Error> {
                *self = Self::from_arg_matches(matches)?;
                Ok(())
            }
        }

        impl clap::Args for $resolved {
            fn group_id() -> Option<clap::Id> {
                <$given as clap::Args>::group_id()
            }

            fn augment_args(cmd: clap::Command) -> clap::Command {
                <$given as clap::Args>::augment_args(cmd)
            }

            fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
                <$given as clap::Args>::augment_args_for_update(cmd)
            }
        }
    };
}

/// How to reach the broker, and which namespace of queues to use.
#[derive(Debug, Clone)]
pub struct BrokerArgs {
    /// AMQP URL of RabbitMQ; it holds the broker password.
    pub amqp_url: SecretString,
    /// CA certificates an `amqps://` broker's certificate may be signed by, besides the
    /// system's.
    pub amqp_ca_file: Option<CaFile>,
    /// Prefix of every exchange and queue name, so several fleets can share a broker.
    pub namespace: String,
}

const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[derive(clap::Args)]
struct BrokerGiven {
    /// AMQP URL of RabbitMQ [default: amqp://guest:guest@127.0.0.1:5672/%2f].
    #[arg(
        long,
        env = "WEFT_AMQP_URL",
        value_name = "WEFT_AMQP_URL",
        hide_env_values = true
    )]
    amqp_url: Option<String>,
    /// File holding the AMQP URL (a Kubernetes or Docker secret), instead of WEFT_AMQP_URL.
    #[arg(long, env = "WEFT_AMQP_URL_FILE", value_name = "WEFT_AMQP_URL_FILE")]
    amqp_url_file: Option<PathBuf>,
    /// PEM file of CA certificates trusted for an amqps:// broker, besides the system's.
    #[arg(long, env = "WEFT_AMQP_CA_FILE", value_name = "WEFT_AMQP_CA_FILE")]
    amqp_ca_file: Option<PathBuf>,
    /// Prefix of every exchange and queue name, so several fleets can share a broker.
    #[arg(long, env = "WEFT_NAMESPACE", value_name = "WEFT_NAMESPACE", default_value = "weft", value_parser = parse_namespace)]
    namespace: String,
}

impl BrokerArgs {
    /// Where to connect, with the CA file.
    pub fn broker(&self) -> Broker {
        Broker::new(self.amqp_url.expose_secret(), self.amqp_ca_file.clone())
    }

    fn resolve(given: BrokerGiven) -> Result<Self, SettingError> {
        let amqp_url = Given {
            variable: "WEFT_AMQP_URL",
            value: given.amqp_url,
            file: given.amqp_url_file,
        }
        .parse(parse_amqp_url)?
        .unwrap_or_else(|| SecretString::from(DEFAULT_AMQP_URL));
        Ok(Self {
            amqp_url,
            amqp_ca_file: read_ca_file("WEFT_AMQP_CA_FILE", given.amqp_ca_file)?,
            namespace: given.namespace,
        })
    }
}

resolved_args!(BrokerArgs, BrokerGiven, BrokerArgs::resolve);

/// How to reach PostgreSQL.
#[derive(Debug, Clone)]
pub struct DatabaseArgs {
    /// Where PostgreSQL is, the credentials (its `Debug` hides the password) and the
    /// `sslmode`.
    pub database_url: DatabaseUrl,
    /// CA certificates the server's certificate may be signed by under
    /// `sslmode=verify-ca|verify-full`, besides the system's.
    pub database_ca_file: Option<CaFile>,
    /// Connections in the pool.
    pub database_pool_size: usize,
    /// Apply pending migrations at start (under an advisory lock).
    pub auto_migrate: bool,
}

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/weft";

#[derive(clap::Args)]
struct DatabaseGiven {
    /// PostgreSQL URL [default: postgres://postgres@127.0.0.1:5432/weft].
    #[arg(
        long,
        env = "WEFT_DATABASE_URL",
        value_name = "WEFT_DATABASE_URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// File holding the PostgreSQL URL (a Kubernetes or Docker secret), instead of
    /// WEFT_DATABASE_URL.
    #[arg(
        long,
        env = "WEFT_DATABASE_URL_FILE",
        value_name = "WEFT_DATABASE_URL_FILE"
    )]
    database_url_file: Option<PathBuf>,
    /// PEM file of CA certificates trusted for sslmode=verify-ca and verify-full, besides
    /// the system's.
    #[arg(
        long,
        env = "WEFT_DATABASE_CA_FILE",
        value_name = "WEFT_DATABASE_CA_FILE"
    )]
    database_ca_file: Option<PathBuf>,
    /// Connections in the pool.
    #[arg(
        long,
        env = "WEFT_DATABASE_POOL_SIZE",
        value_name = "WEFT_DATABASE_POOL_SIZE",
        default_value_t = 16
    )]
    database_pool_size: usize,
    /// Apply pending migrations at start (under an advisory lock).
    #[arg(long, env = "WEFT_AUTO_MIGRATE", value_name = "WEFT_AUTO_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    auto_migrate: bool,
}

impl DatabaseArgs {
    fn resolve(given: DatabaseGiven) -> Result<Self, SettingError> {
        let database_url = Given {
            variable: "WEFT_DATABASE_URL",
            value: given.database_url,
            file: given.database_url_file,
        }
        .parse(parse_database_url)?;
        let database_url = match database_url {
            Some(url) => url,
            None => {
                parse_database_url(DEFAULT_DATABASE_URL).expect("the default database URL is valid")
            }
        };
        Ok(Self {
            database_url,
            database_ca_file: read_ca_file("WEFT_DATABASE_CA_FILE", given.database_ca_file)?,
            database_pool_size: given.database_pool_size,
            auto_migrate: given.auto_migrate,
        })
    }
}

resolved_args!(DatabaseArgs, DatabaseGiven, DatabaseArgs::resolve);

/// The master key ring, for the services that encrypt or decrypt credentials.
#[derive(Debug, Clone)]
pub struct MasterKeysArgs {
    /// Its `Debug` shows the key ids only.
    pub master_keys: KeyRing,
}

#[derive(clap::Args)]
struct MasterKeysGiven {
    /// Master keys for credentials: `key_id:base64(32 bytes)`, comma-separated, newest first.
    #[arg(
        long,
        env = "WEFT_MASTER_KEYS",
        value_name = "WEFT_MASTER_KEYS",
        hide_env_values = true,
        required_unless_present = "master_keys_file"
    )]
    master_keys: Option<String>,
    /// File holding the master keys (a Kubernetes or Docker secret), instead of
    /// WEFT_MASTER_KEYS.
    #[arg(
        long,
        env = "WEFT_MASTER_KEYS_FILE",
        value_name = "WEFT_MASTER_KEYS_FILE"
    )]
    master_keys_file: Option<PathBuf>,
}

impl MasterKeysArgs {
    fn resolve(given: MasterKeysGiven) -> Result<Self, SecretError> {
        let master_keys = Given {
            variable: "WEFT_MASTER_KEYS",
            value: given.master_keys,
            file: given.master_keys_file,
        }
        .parse(parse_master_keys)?
        .expect("clap requires WEFT_MASTER_KEYS or WEFT_MASTER_KEYS_FILE");
        Ok(Self { master_keys })
    }
}

resolved_args!(MasterKeysArgs, MasterKeysGiven, MasterKeysArgs::resolve);

/// The bearer token of the admin API (the gateway's).
#[derive(Debug, Clone)]
pub struct AdminTokenArgs {
    /// `None` turns the admin API off.
    pub admin_token: Option<SecretString>,
}

#[derive(clap::Args)]
struct AdminTokenGiven {
    /// Bearer token of the admin API, at least 16 visible ASCII characters; the admin API
    /// is off when unset.
    #[arg(
        long,
        env = "WEFT_ADMIN_TOKEN",
        value_name = "WEFT_ADMIN_TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,
    /// File holding the admin token (a Kubernetes or Docker secret), instead of
    /// WEFT_ADMIN_TOKEN.
    #[arg(
        long,
        env = "WEFT_ADMIN_TOKEN_FILE",
        value_name = "WEFT_ADMIN_TOKEN_FILE"
    )]
    admin_token_file: Option<PathBuf>,
}

impl AdminTokenArgs {
    fn resolve(given: AdminTokenGiven) -> Result<Self, SecretError> {
        let admin_token = Given {
            variable: "WEFT_ADMIN_TOKEN",
            value: given.admin_token,
            file: given.admin_token_file,
        }
        .parse(parse_admin_token)?;
        Ok(Self { admin_token })
    }
}

resolved_args!(AdminTokenArgs, AdminTokenGiven, AdminTokenArgs::resolve);

/// The client secret the gateway signs in to an OpenID provider with.
#[derive(Debug, Clone)]
pub struct OidcSecretArgs {
    /// `None` for a public client (PKCE only).
    pub oidc_client_secret: Option<SecretString>,
}

#[derive(clap::Args)]
struct OidcSecretGiven {
    /// The client secret of the gateway at the OpenID provider.
    #[arg(
        long,
        env = "WEFT_OIDC_CLIENT_SECRET",
        value_name = "WEFT_OIDC_CLIENT_SECRET",
        hide_env_values = true
    )]
    oidc_client_secret: Option<String>,
    /// File holding the client secret, instead of WEFT_OIDC_CLIENT_SECRET.
    #[arg(
        long,
        env = "WEFT_OIDC_CLIENT_SECRET_FILE",
        value_name = "WEFT_OIDC_CLIENT_SECRET_FILE"
    )]
    oidc_client_secret_file: Option<PathBuf>,
}

impl OidcSecretArgs {
    fn resolve(given: OidcSecretGiven) -> Result<Self, SecretError> {
        let oidc_client_secret = Given {
            variable: "WEFT_OIDC_CLIENT_SECRET",
            value: given.oidc_client_secret,
            file: given.oidc_client_secret_file,
        }
        .parse(parse_client_secret)?;
        Ok(Self { oidc_client_secret })
    }
}

resolved_args!(OidcSecretArgs, OidcSecretGiven, OidcSecretArgs::resolve);

/// The SMTP server invitations and password resets are mailed through (the gateway's).
#[derive(Debug, Clone)]
pub struct SmtpArgs {
    /// `None`: nothing is mailed; links are handed over by whoever created them.
    pub smtp_url: Option<SecretString>,
}

#[derive(clap::Args)]
struct SmtpGiven {
    /// `smtps://user:password@host:465` (TLS), `smtp://user:password@host:587?tls=required`
    /// (STARTTLS) or `smtp://host:25` (plain, for a relay on the same host).
    #[arg(
        long,
        env = "WEFT_SMTP_URL",
        value_name = "WEFT_SMTP_URL",
        hide_env_values = true
    )]
    smtp_url: Option<String>,
    /// File holding the SMTP URL, instead of WEFT_SMTP_URL.
    #[arg(long, env = "WEFT_SMTP_URL_FILE", value_name = "WEFT_SMTP_URL_FILE")]
    smtp_url_file: Option<PathBuf>,
}

impl SmtpArgs {
    fn resolve(given: SmtpGiven) -> Result<Self, SecretError> {
        let smtp_url = Given {
            variable: "WEFT_SMTP_URL",
            value: given.smtp_url,
            file: given.smtp_url_file,
        }
        .parse(parse_smtp_url)?;
        Ok(Self { smtp_url })
    }
}

resolved_args!(SmtpArgs, SmtpGiven, SmtpArgs::resolve);

fn parse_smtp_url(text: &str) -> Result<SecretString, String> {
    let scheme_ok = text.starts_with("smtp://") || text.starts_with("smtps://");
    if !scheme_ok || text.chars().any(char::is_control) {
        return Err(
            "is not an SMTP URL: write smtps://user:password@host:465 or smtp://host:25".to_owned(),
        );
    }
    Ok(SecretString::from(text.to_owned()))
}

fn parse_client_secret(text: &str) -> Result<SecretString, String> {
    if text.is_empty() || text.chars().any(char::is_control) {
        return Err("is empty or holds control characters".to_owned());
    }
    Ok(SecretString::from(text.to_owned()))
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

    #[derive(Parser, Debug)]
    struct Secrets {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(flatten)]
        keys: MasterKeysArgs,
        #[command(flatten)]
        admin: AdminTokenArgs,
    }

    const MARKER: &str = "Qw3rTy9UiOp4";
    const KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

    #[test]
    fn debug_output_shows_no_secret() {
        let config = Secrets::try_parse_from([
            "probe".to_owned(),
            format!("--database-url=postgres://weft:{MARKER}@db/weft"),
            format!("--amqp-url=amqp://weft:{MARKER}@broker/%2f"),
            format!("--master-keys=k1:{KEY}"),
            format!("--admin-token={MARKER}{MARKER}"),
        ])
        .expect("valid");
        let debug = format!("{config:?}");
        assert!(!debug.contains(MARKER), "{debug}");
        assert!(!debug.contains(KEY), "{debug}");
        assert!(debug.contains("k1"), "key ids are shown: {debug}");
    }

    #[test]
    fn secrets_come_from_the_files_the_file_variants_name() {
        let dir =
            std::env::temp_dir().join(format!("weft-config-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir).expect("temp dir");
        let file = |name: &str, content: String| {
            let path = dir.join(name);
            std::fs::write(&path, content).expect("written");
            path.to_str().expect("UTF-8").to_owned()
        };
        let amqp_url = format!("amqp://weft:{MARKER}@broker/%2f");
        let config = Secrets::try_parse_from([
            "probe".to_owned(),
            "--database-url-file".to_owned(),
            file("db", format!("postgres://weft:{MARKER}@db.internal/weft\n")),
            "--amqp-url-file".to_owned(),
            file("amqp", format!("{amqp_url}\n")),
            "--master-keys-file".to_owned(),
            file("keys", format!("k7:{KEY}\n")),
            "--admin-token-file".to_owned(),
            file("token", format!("{MARKER}{MARKER}\r\n")),
        ])
        .expect("valid");
        std::fs::remove_dir_all(&dir).expect("removed");
        assert_eq!(
            config.database.database_url.config().get_password(),
            Some(MARKER.as_bytes())
        );
        assert_eq!(
            config.database.database_url.config().get_hosts(),
            [tokio_postgres::config::Host::Tcp("db.internal".to_owned())]
        );
        assert_eq!(config.broker.amqp_url.expose_secret(), amqp_url);
        assert!(format!("{:?}", config.keys.master_keys).contains("k7"));
        assert_eq!(
            config
                .admin
                .admin_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned()),
            Some(format!("{MARKER}{MARKER}"))
        );
    }

    #[test]
    fn a_secret_given_both_ways_is_refused_naming_both() {
        let error = Secrets::try_parse_from([
            "probe".to_owned(),
            format!("--master-keys=k1:{KEY}"),
            "--database-url=postgres://db/weft".to_owned(),
            "--database-url-file=/nonexistent".to_owned(),
        ])
        .expect_err("both given");
        assert_eq!(
            one_line(&error.render().to_string()),
            "error: WEFT_DATABASE_URL and WEFT_DATABASE_URL_FILE are both set: set only one of them"
        );
    }

    #[test]
    fn an_unreadable_ca_file_is_refused_naming_the_setting_and_the_path() {
        for (flag, variable) in [
            ("--database-ca-file", "WEFT_DATABASE_CA_FILE"),
            ("--amqp-ca-file", "WEFT_AMQP_CA_FILE"),
        ] {
            let path = "/nonexistent/weft-ca.pem";
            let error = Secrets::try_parse_from([
                "probe".to_owned(),
                format!("--master-keys=k1:{KEY}"),
                format!("{flag}={path}"),
            ])
            .expect_err("no such file");
            let line = one_line(&error.render().to_string());
            assert!(
                line.starts_with(&format!("error: {variable}: cannot read `{path}`: ")),
                "{line}"
            );
        }
    }

    #[test]
    fn without_settings_the_urls_are_the_local_defaults() {
        let config =
            Secrets::try_parse_from(["probe".to_owned(), format!("--master-keys=k1:{KEY}")])
                .expect("valid");
        assert_eq!(config.broker.amqp_url.expose_secret(), DEFAULT_AMQP_URL);
        assert_eq!(
            config.database.database_url.config().get_dbname(),
            Some("weft")
        );
        assert_eq!(
            config.database.database_url.ssl_mode(),
            crate::tls::SslMode::Prefer
        );
        assert!(config.admin.admin_token.is_none());
    }
}
