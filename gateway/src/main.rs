//! `weft-gateway`: see the crate documentation of `weft_gateway`.
//!
//! `weft-gateway migrate` applies pending migrations and exits; `weft-gateway rotate-keys`
//! re-encrypts stored secrets under the newest master key and exits; `weft-gateway
//! create-user` creates a person (password on standard input) and `weft-gateway
//! reset-password` prints a reset link, and exit; without a subcommand
//! the gateway serves until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use anyhow::Context;
use secrecy::SecretString;
use tokio::net::TcpListener;
use weft_gateway::{Command, Config, Gateway, secrets, setup};
use weft_runtime::{db, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let config: Config = weft_runtime::config::parse();
    let telemetry = telemetry::init("weft-gateway", &config.process.log_format)
        .unwrap_or_else(|e| weft_runtime::config::refuse(&e));
    let code = match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-gateway: {}", one_line(&e));
            ExitCode::FAILURE
        }
    };
    // Exports the spans still buffered.
    drop(telemetry);
    code
}

async fn run(config: Config) -> anyhow::Result<()> {
    match config.command {
        Some(Command::Migrate) => return migrate(&config).await,
        Some(Command::RotateKeys { batch_size }) => return rotate_keys(&config, batch_size).await,
        Some(Command::CreateUser {
            ref email,
            ref name,
            owner,
            ref workspace_name,
        }) => {
            let owned = owner.then_some(workspace_name.as_str());
            return create_user(&config, email, name.as_deref(), owned).await;
        }
        Some(Command::ResetPassword { ref email }) => return reset_password(&config, email).await,
        Some(Command::DisableUser { ref email, enable }) => {
            let pool = pool(&config)?;
            setup::set_disabled(&pool, email, !enable)
                .await
                .with_context(|| format!("changing whether {email} is disabled"))?;
            report(&format!(
                "{email} is {}",
                if enable {
                    "enabled"
                } else {
                    "disabled: their sessions ended"
                }
            ));
            return Ok(());
        }
        None => {}
    }
    let api = TcpListener::bind(config.http_addr).await.with_context(|| {
        format!(
            "binding the HTTP address {} (WEFT_HTTP_ADDR)",
            config.http_addr
        )
    })?;
    let ops = TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| {
            format!(
                "binding the metrics address {} (WEFT_METRICS_ADDR)",
                config.metrics_addr
            )
        })?;
    let gateway = Gateway::new(config).await.context("starting the gateway")?;
    tracing::info!(api = %api.local_addr()?, ops = %ops.local_addr()?, "gateway started");
    gateway
        .serve(api, ops, telemetry::shutdown_signal())
        .await
        .context("running the gateway")?;
    tracing::info!("gateway stopped");
    Ok(())
}

fn pool(config: &Config) -> anyhow::Result<deadpool_postgres::Pool> {
    db::pool(
        &config.database.database_url,
        config.database.database_ca_file.as_ref(),
        config.database.database_pool_size,
    )
    .context("connecting to the database (WEFT_DATABASE_URL)")
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let pool = pool(config)?;
    db::migrate(&pool).await.context("applying migrations")?;
    tracing::info!("database migrated");
    Ok(())
}

async fn create_user(
    config: &Config,
    email: &str,
    name: Option<&str>,
    owned_workspace: Option<&str>,
) -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("reading the password from standard input")?;
    let password = SecretString::from(password.trim_end_matches(['\r', '\n']).to_owned());
    let pool = pool(config)?;
    let created = setup::create_user(&pool, email, name, password, owned_workspace)
        .await
        .with_context(|| format!("creating the person {email}"))?;
    let mut line = format!("created {} ({})", created.email, created.user);
    if let Some(workspace) = created.workspace {
        line.push_str(&format!(", owner of workspace {workspace}"));
    }
    report(&line);
    Ok(())
}

async fn reset_password(config: &Config, email: &str) -> anyhow::Result<()> {
    let pool = pool(config)?;
    let (link, expires_at) = setup::reset_password(&pool, &config.public_url, email)
        .await
        .with_context(|| format!("issuing a password reset for {email}"))?;
    report(&format!(
        "open this link to choose a new password (single use, until {expires_at}): {link}"
    ));
    Ok(())
}

async fn rotate_keys(config: &Config, batch_size: i64) -> anyhow::Result<()> {
    let pool = pool(config)?;
    let mut client = pool
        .get()
        .await
        .context("connecting to the database (WEFT_DATABASE_URL)")?;
    let rotated = secrets::rotate_keys(&mut client, &config.keys.master_keys, batch_size)
        .await
        .context("re-encrypting stored secrets")?;
    report(&format!(
        "re-encrypted {} stored secrets under the newest key",
        rotated.re_encrypted
    ));
    if rotated.undecryptable > 0 {
        anyhow::bail!(
            "{} stored secrets do not decrypt with WEFT_MASTER_KEYS and were left as they are: is the key they were encrypted under still in the list?",
            rotated.undecryptable
        );
    }
    Ok(())
}

/// A command's result, for the operator who ran it.
#[expect(clippy::print_stdout, reason = "the result of a command is its output")]
fn report(line: &str) {
    println!("{line}");
}

/// The error and its causes on one line. Some causes already end with their own source's
/// message; it is not repeated.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if line.ends_with(&message) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&message);
    }
    line
}
