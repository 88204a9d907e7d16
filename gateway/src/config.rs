//! The gateway's configuration (architecture §8): `WEFT_*` environment variables, also accepted
//! as flags.

use std::net::SocketAddr;
use std::time::Duration;

use weft_domain::access::Role;
use weft_domain::ids::WorkspaceId;
use weft_runtime::config::{
    AdminTokenArgs, BrokerArgs, DatabaseArgs, MasterKeysArgs, OidcSecretArgs, ProcessArgs,
    SmtpArgs, parse_duration,
};
use weft_runtime::egress::{EgressProxy, EgressProxyParser, EgressRule};

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
    #[command(flatten)]
    pub keys: MasterKeysArgs,
    #[command(flatten)]
    pub admin: AdminTokenArgs,
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
    /// The gateway's address as browsers and OAuth providers reach it, without a trailing
    /// slash: OAuth redirect URIs are `<WEFT_PUBLIC_URL>/api/v1/oauth/callback`.
    #[arg(
        long,
        env = "WEFT_PUBLIC_URL",
        value_name = "WEFT_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080",
        value_parser = parse_public_url
    )]
    pub public_url: String,
    /// Networks (CIDR) or host names that OAuth token endpoints may be reached at although
    /// they are private, comma-separated (e.g. `127.0.0.0/8` for local runs). The same
    /// rule as the workers'.
    #[arg(
        long,
        env = "WEFT_EGRESS_ALLOW",
        value_name = "WEFT_EGRESS_ALLOW",
        value_delimiter = ','
    )]
    pub egress_allow: Vec<EgressRule>,
    /// The http(s) forward proxy OAuth token requests leave through (the same setting as the workers'), as
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
    /// Longest a REST API request may take before it is answered 504. Webhooks get this
    /// plus the longest `trigger.respond_timeout`; executing an action and testing a
    /// connection wait for a worker under the action's own timeout instead.
    #[arg(
        long,
        env = "WEFT_HTTP_REQUEST_TIMEOUT",
        value_name = "WEFT_HTTP_REQUEST_TIMEOUT",
        default_value = "30s",
        value_parser = parse_positive_duration
    )]
    pub http_request_timeout: Duration,
    /// Longest run timeout (`settings.timeout`) a scenario may be saved with; one asking
    /// for more is refused, naming the cap.
    #[arg(
        long,
        env = "WEFT_MAX_RUN_TIMEOUT",
        value_name = "WEFT_MAX_RUN_TIMEOUT",
        default_value = "1h",
        value_parser = parse_positive_duration
    )]
    pub max_run_timeout: Duration,
    /// A signed-in session unused this long ends.
    #[arg(
        long,
        env = "WEFT_SESSION_IDLE_TIMEOUT",
        value_name = "WEFT_SESSION_IDLE_TIMEOUT",
        default_value = "12h",
        value_parser = parse_positive_duration
    )]
    pub session_idle_timeout: Duration,
    /// A signed-in session ends this long after login, however it is used.
    #[arg(
        long,
        env = "WEFT_SESSION_LIFETIME",
        value_name = "WEFT_SESSION_LIFETIME",
        default_value = "7d",
        value_parser = parse_positive_duration
    )]
    pub session_lifetime: Duration,
    /// `open`: anyone who reaches the gateway may sign up, getting a workspace of their
    /// own. `closed`: people join by invitation, or from `weft-gateway create-user`.
    #[arg(
        long,
        env = "WEFT_SIGNUP",
        value_name = "WEFT_SIGNUP",
        default_value = "closed"
    )]
    pub signup: Signup,
    /// Whether a signed-in person may create workspaces of their own.
    #[arg(
        long,
        env = "WEFT_USERS_CREATE_WORKSPACES",
        value_name = "WEFT_USERS_CREATE_WORKSPACES",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub users_create_workspaces: bool,
    /// How long an invitation link stays valid.
    #[arg(
        long,
        env = "WEFT_INVITATION_LIFETIME",
        value_name = "WEFT_INVITATION_LIFETIME",
        default_value = "7d",
        value_parser = parse_positive_duration
    )]
    pub invitation_lifetime: Duration,
    /// The OpenID provider people sign in with (its issuer URL, where
    /// `/.well-known/openid-configuration` is); single sign-on is off when unset.
    /// Written exactly as the provider's ID tokens name it (a trailing slash matters).
    #[arg(
        long,
        env = "WEFT_OIDC_ISSUER",
        value_name = "WEFT_OIDC_ISSUER",
        requires = "oidc_client_id",
        value_parser = parse_issuer
    )]
    pub oidc_issuer: Option<String>,
    /// The gateway's client id at the provider; its redirect URI there is
    /// `<WEFT_PUBLIC_URL>/api/v1/sso/callback`.
    #[arg(long, env = "WEFT_OIDC_CLIENT_ID", value_name = "WEFT_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,
    #[command(flatten)]
    pub oidc_secret: OidcSecretArgs,
    /// Email domains whose people get an account on their first single sign-on,
    /// comma-separated (with WEFT_OIDC_PROVISION_WORKSPACE).
    #[arg(
        long,
        env = "WEFT_OIDC_PROVISION_DOMAINS",
        value_name = "WEFT_OIDC_PROVISION_DOMAINS",
        value_delimiter = ',',
        requires = "oidc_provision_workspace"
    )]
    pub oidc_provision_domains: Vec<String>,
    /// The workspace people given an account by single sign-on join.
    #[arg(
        long,
        env = "WEFT_OIDC_PROVISION_WORKSPACE",
        value_name = "WEFT_OIDC_PROVISION_WORKSPACE"
    )]
    pub oidc_provision_workspace: Option<WorkspaceId>,
    /// Their role there.
    #[arg(
        long,
        env = "WEFT_OIDC_PROVISION_ROLE",
        value_name = "WEFT_OIDC_PROVISION_ROLE",
        default_value = "viewer"
    )]
    pub oidc_provision_role: Role,
    #[command(flatten)]
    pub smtp: SmtpArgs,
    /// The sender of the mail the gateway sends; default `Weft <weft@<host of
    /// WEFT_PUBLIC_URL>>`.
    #[arg(long, env = "WEFT_SMTP_FROM", value_name = "WEFT_SMTP_FROM")]
    pub smtp_from: Option<String>,
    /// How long audit events are kept.
    #[arg(
        long,
        env = "WEFT_AUDIT_RETENTION",
        value_name = "WEFT_AUDIT_RETENTION",
        default_value = "365d",
        value_parser = parse_positive_duration
    )]
    pub audit_retention: Duration,
    /// Refuse passwords: everyone signs in through the OpenID provider.
    #[arg(
        long,
        env = "WEFT_SSO_ONLY",
        value_name = "WEFT_SSO_ONLY",
        default_value_t = false,
        action = clap::ArgAction::Set,
        requires = "oidc_issuer"
    )]
    pub sso_only: bool,
}

/// Who may create an account.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signup {
    Open,
    Closed,
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err(format!("`{text}` must be longer than zero")),
        duration => Ok(duration),
    }
}

/// An absolute http(s) URL, kept as written: ID tokens must name it exactly.
fn parse_issuer(text: &str) -> Result<String, String> {
    let text = text.trim();
    match reqwest::Url::parse(text) {
        Ok(url) if ["http", "https"].contains(&url.scheme()) && url.query().is_none() => {
            Ok(text.to_owned())
        }
        _ => Err(format!(
            "`{text}` is not an http(s) issuer URL like https://login.example.com/realms/acme"
        )),
    }
}

/// An absolute http(s) URL with no query or fragment; a trailing slash is dropped.
fn parse_public_url(text: &str) -> Result<String, String> {
    let trimmed = text.trim().trim_end_matches('/');
    let scheme_ok = trimmed.starts_with("http://") || trimmed.starts_with("https://");
    let host = trimmed.split_once("://").map_or("", |(_, rest)| rest);
    if !scheme_ok || host.is_empty() || trimmed.contains(['?', '#', ' ']) {
        return Err(format!(
            "`{text}` is not an http(s) URL like https://weft.example.com"
        ));
    }
    Ok(trimmed.to_owned())
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Create a person who signs in with a password read from standard input (one line),
    /// and exit. With `--owner`, also create a workspace they own.
    CreateUser {
        #[arg(long)]
        email: String,
        /// The name shown for them; defaults to the email's local part.
        #[arg(long)]
        name: Option<String>,
        /// Create a workspace (named by `--workspace-name`) with them as its owner.
        #[arg(long)]
        owner: bool,
        #[arg(long, default_value = "My workspace")]
        workspace_name: String,
    },
    /// Print a single-use link (valid 24 hours) with which the person of `--email` chooses
    /// a new password, and exit.
    ResetPassword {
        #[arg(long)]
        email: String,
    },
    /// Disable the person of `--email` at once (their sessions end, their keys stop, they
    /// cannot sign in), or enable them again with `--enable`, and exit.
    DisableUser {
        #[arg(long)]
        email: String,
        #[arg(long)]
        enable: bool,
    },
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
    fn the_public_url_defaults_to_the_local_address_and_loses_its_trailing_slash() {
        let key = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
        let config = Config::try_parse_from(["weft-gateway", "--master-keys", key]).expect("valid");
        assert_eq!(config.public_url, "http://127.0.0.1:8080");
        assert!(config.egress_allow.is_empty());
        let config = Config::try_parse_from([
            "weft-gateway",
            "--master-keys",
            key,
            "--public-url",
            "https://weft.example.com/",
            "--egress-allow",
            "127.0.0.0/8,auth.internal",
        ])
        .expect("valid");
        assert_eq!(config.public_url, "https://weft.example.com");
        assert_eq!(config.egress_allow.len(), 2);
        for bad in ["weft.example.com", "ftp://x", "https://", "https://x/?a=1"] {
            let error =
                Config::try_parse_from(["weft-gateway", "--master-keys", key, "--public-url", bad])
                    .expect_err(bad);
            assert!(
                error.render().to_string().contains("WEFT_PUBLIC_URL"),
                "{bad}: {}",
                error.render()
            );
        }
    }

    #[test]
    fn a_malformed_egress_proxy_is_named_in_one_line_without_its_password() {
        let key = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
        let error = Config::try_parse_from([
            "weft-gateway",
            "--master-keys",
            key,
            "--egress-proxy",
            "http://ops:pr0xy-pa55@proxy.corp:3128/some/path",
        ])
        .expect_err("a path");
        let message = error.render().to_string();
        assert_eq!(
            message.trim_end(),
            "error: invalid WEFT_EGRESS_PROXY: it has a path, query or fragment: write it as http(s)://[user:password@]host:port"
        );
        let config = Config::try_parse_from([
            "weft-gateway",
            "--master-keys",
            key,
            "--egress-proxy",
            "https://ops:pr0xy-pa55@proxy.corp:3128",
        ])
        .expect("an https proxy");
        assert!(!format!("{config:?}").contains("pr0xy-pa55"));
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
