//! `--spawn`: a fleet of the load test's own, started from the binaries built next to this
//! one (the same target directory and profile): a private database (created, migrated
//! with `weft-gateway migrate`, dropped at the end), a broker namespace of its own
//! (deleted at the end), a gateway, schedulers, workers and the mock upstream, each a
//! child process with its log in `--logs`.

use std::fs::File;
use std::future::Future;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use tokio::time::Instant;
use weft_runtime::queue::{self, Broker, Topology};

/// How long a spawned process may take to answer `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the fleet may drain after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(clap::Args, Clone, Debug)]
pub struct SpawnArgs {
    /// Start a fleet of its own (gateway, schedulers, workers, mock upstream) from the
    /// binaries next to this one, with a private database and broker namespace, and stop
    /// it at the end. `--api`, `--admin-token` and `--upstream` are then not used.
    #[arg(long)]
    pub spawn: bool,
    /// Schedulers to spawn.
    #[arg(long, default_value_t = 1)]
    pub schedulers: usize,
    /// Workers to spawn.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// WEFT_WORKER_CONCURRENCY of each spawned worker (the worker's default when unset).
    #[arg(long)]
    pub worker_concurrency: Option<u16>,
    /// The PostgreSQL server the private database is created on (connects to this
    /// database to create and drop it).
    #[arg(
        long,
        env = "WEFT_LOADTEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub database_url: String,
    /// The broker the spawned fleet uses.
    #[arg(
        long,
        env = "WEFT_LOADTEST_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Latency of every answer of the spawned mock upstream.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    pub mock_latency: Duration,
    /// Share of the spawned mock's answers that are 503 (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    pub mock_error_rate: f64,
    /// RUST_LOG of the spawned processes.
    #[arg(long, default_value = "info")]
    pub fleet_log: String,
    /// More environment for the spawned fleet, `NAME=VALUE` (repeatable), e.g.
    /// `--fleet-env WEFT_SCHEDULER_PREFETCH=256`.
    #[arg(long, value_parser = parse_env_pair)]
    pub fleet_env: Vec<(String, String)>,
    /// Directory of the spawned processes' logs (one file per process, replaced).
    #[arg(long, default_value = "loadtest-logs")]
    pub logs: PathBuf,
}

fn parse_env_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("`{text}` is not NAME=VALUE")),
    }
}

struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

/// A spawned fleet. Stop it with [`Fleet::stop`]; dropping it kills what still runs.
pub struct Fleet {
    pub api: String,
    pub admin_token: String,
    pub upstream: String,
    /// Base URLs of each worker's metrics address.
    pub worker_metrics: Vec<String>,
    /// The directory the binaries came from (its name is the build profile).
    pub bin_dir: PathBuf,
    pub namespace: String,
    admin_url: String,
    amqp_url: String,
    database_created: bool,
    processes: Vec<Process>,
}

impl Fleet {
    /// Starts the fleet unless `interrupted` resolves first; either way nothing is left
    /// behind when it fails (processes stopped, database dropped, queues deleted).
    pub async fn start(
        args: &SpawnArgs,
        interrupted: impl Future<Output = &'static str>,
    ) -> anyhow::Result<Self> {
        let bin_dir = binaries_dir()?;
        let namespace = format!("weft_loadtest_{}", uuid::Uuid::new_v4().simple());
        let mut fleet = Self {
            api: String::new(),
            admin_token: hex::encode(rand::random::<[u8; 32]>()),
            upstream: String::new(),
            worker_metrics: Vec::new(),
            bin_dir,
            namespace,
            admin_url: args.database_url.clone(),
            amqp_url: args.amqp_url.clone(),
            database_created: false,
            processes: Vec::new(),
        };
        let launched = tokio::select! {
            launched = fleet.launch(args) => launched,
            signal = interrupted => Err(anyhow::anyhow!("interrupted by {signal} while starting the fleet")),
        };
        match launched {
            Ok(()) => Ok(fleet),
            Err(e) => {
                fleet.stop().await;
                Err(e)
            }
        }
    }

    /// The started processes, by pid and name.
    pub fn pids(&self) -> Vec<(u32, String)> {
        self.processes
            .iter()
            .map(|p| (p.child.id(), p.name.clone()))
            .collect()
    }

    /// `release` or `debug`: the directory the binaries came from.
    pub fn build_profile(&self) -> String {
        self.bin_dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    async fn launch(&mut self, args: &SpawnArgs) -> anyhow::Result<()> {
        std::fs::create_dir_all(&args.logs)
            .with_context(|| format!("creating the log directory {}", args.logs.display()))?;
        let database = self.namespace.clone();
        let admin = connect_postgres(&self.admin_url).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .with_context(|| format!("creating the database {database}"))?;
        self.database_created = true;

        let master_key =
            base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        let mut env: Vec<(String, String)> = vec![
            (
                "WEFT_DATABASE_URL".into(),
                with_database(&self.admin_url, &database)?,
            ),
            ("WEFT_AMQP_URL".into(), self.amqp_url.clone()),
            ("WEFT_NAMESPACE".into(), self.namespace.clone()),
            ("WEFT_MASTER_KEYS".into(), format!("loadtest:{master_key}")),
            ("WEFT_ADMIN_TOKEN".into(), self.admin_token.clone()),
            ("WEFT_EGRESS_ALLOW".into(), "127.0.0.0/8".into()),
            ("WEFT_LOG_FORMAT".into(), "json".into()),
            ("WEFT_SHUTDOWN_TIMEOUT".into(), "10s".into()),
            ("RUST_LOG".into(), args.fleet_log.clone()),
        ];
        if let Some(concurrency) = args.worker_concurrency {
            env.push(("WEFT_WORKER_CONCURRENCY".into(), concurrency.to_string()));
        }
        env.extend(args.fleet_env.iter().cloned());

        let gateway = self.bin_dir.join("weft-gateway");
        let migrate_log = args.logs.join("migrate.log");
        let (stdout, stderr) = log_files(&migrate_log)?;
        let status = Command::new(&gateway)
            .arg("migrate")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .with_context(|| format!("running {} migrate", gateway.display()))?;
        if !status.success() {
            bail!(
                "weft-gateway migrate failed ({status}):\n{}",
                tail(&migrate_log)
            );
        }

        let api_addr = free_addr()?;
        self.api = format!("http://{api_addr}");
        let mut ready: Vec<(usize, String)> = Vec::new();
        let gateway_ops = free_addr()?;
        let extra = [
            ("WEFT_HTTP_ADDR".to_owned(), api_addr.clone()),
            ("WEFT_METRICS_ADDR".to_owned(), gateway_ops.clone()),
        ];
        let index = self.spawn("gateway", &gateway, &[], &env, &extra, &args.logs)?;
        ready.push((index, format!("http://{gateway_ops}/readyz")));
        for n in 1..=args.schedulers {
            let ops = free_addr()?;
            let extra = [("WEFT_METRICS_ADDR".to_owned(), ops.clone())];
            let binary = self.bin_dir.join("weft-scheduler");
            let index = self.spawn(
                &format!("scheduler-{n}"),
                &binary,
                &[],
                &env,
                &extra,
                &args.logs,
            )?;
            ready.push((index, format!("http://{ops}/readyz")));
        }
        for n in 1..=args.workers {
            let ops = free_addr()?;
            let extra = [("WEFT_METRICS_ADDR".to_owned(), ops.clone())];
            let binary = self.bin_dir.join("weft-worker");
            let index = self.spawn(
                &format!("worker-{n}"),
                &binary,
                &[],
                &env,
                &extra,
                &args.logs,
            )?;
            ready.push((index, format!("http://{ops}/readyz")));
            self.worker_metrics.push(format!("http://{ops}"));
        }
        let mock_addr = free_addr()?;
        self.upstream = format!("http://{mock_addr}");
        let mock_args = [
            "mock".to_owned(),
            "--addr".to_owned(),
            mock_addr,
            "--latency".to_owned(),
            humantime::format_duration(args.mock_latency).to_string(),
            "--error-rate".to_owned(),
            args.mock_error_rate.to_string(),
        ];
        let this = std::env::current_exe().context("locating this executable")?;
        let index = self.spawn("mock", &this, &mock_args, &[], &[], &args.logs)?;
        ready.push((
            index,
            format!("{}{}", self.upstream, crate::mock::STATS_PATH),
        ));

        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + READY_TIMEOUT;
        for (index, url) in ready {
            loop {
                let answered = client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if answered {
                    break;
                }
                let process = &mut self.processes[index];
                if let Some(status) = process.child.try_wait()? {
                    bail!(
                        "{} exited during start-up ({status}):\n{}",
                        process.name,
                        tail(&process.log)
                    );
                }
                if Instant::now() >= deadline {
                    bail!(
                        "{} is not ready after {READY_TIMEOUT:?} ({url}):\n{}",
                        process.name,
                        tail(&process.log)
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    fn spawn(
        &mut self,
        name: &str,
        binary: &Path,
        args: &[String],
        env: &[(String, String)],
        extra: &[(String, String)],
        logs: &Path,
    ) -> anyhow::Result<usize> {
        let log = logs.join(format!("{name}.log"));
        let (stdout, stderr) = log_files(&log)?;
        let child = Command::new(binary)
            .args(args)
            .envs(env.iter().chain(extra).map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // A group of its own: Ctrl-C reaches the driver only, which then stops the
            // fleet in order.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        self.processes.push(Process {
            name: name.to_owned(),
            child,
            log,
        });
        Ok(self.processes.len() - 1)
    }

    /// SIGTERM to every process (SIGKILL after the stop timeout), then drops the
    /// database and deletes the namespace's queues. Problems are reported, not returned:
    /// the figures are already taken.
    pub async fn stop(&mut self) {
        for process in &self.processes {
            let _ = Command::new("kill")
                .args(["-TERM", &process.child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for process in &mut self.processes {
            loop {
                match process.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        eprintln!(
                            "{} did not stop within {STOP_TIMEOUT:?}: killing it",
                            process.name
                        );
                        let _ = process.child.kill();
                        let _ = process.child.wait();
                        break;
                    }
                    Ok(None) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        self.processes.clear();
        if self.database_created {
            let dropped = async {
                connect_postgres(&self.admin_url)
                    .await?
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        self.namespace
                    ))
                    .await?;
                anyhow::Ok(())
            };
            match dropped.await {
                Ok(()) => self.database_created = false,
                Err(e) => eprintln!("could not drop the database {}: {e:#}", self.namespace),
            }
        }
        let deleted = async {
            let connection =
                queue::connect(&Broker::new(&self.amqp_url, None), "weft-loadtest cleanup").await?;
            let channel = connection.create_channel().await?;
            Topology::new(self.namespace.clone())
                .delete(&channel)
                .await?;
            let _ = connection.close(200, "done".into()).await;
            anyhow::Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(20), deleted).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not delete the queues of {}: {e:#}", self.namespace),
            Err(_) => eprintln!(
                "the broker did not answer while deleting the queues of {}",
                self.namespace
            ),
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for process in &mut self.processes {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
    }
}

/// The directory holding this executable, which must also hold the fleet's binaries.
fn binaries_dir() -> anyhow::Result<PathBuf> {
    let this = std::env::current_exe().context("locating this executable")?;
    let dir = this
        .parent()
        .context("this executable has no directory")?
        .to_path_buf();
    for binary in ["weft-gateway", "weft-scheduler", "weft-worker"] {
        if !dir.join(binary).is_file() {
            bail!(
                "{binary} is not in {} (next to weft-loadtest): build the fleet with the same \
                 profile first (`cargo build --bins`, or `cargo build --release --bins`)",
                dir.display()
            );
        }
    }
    Ok(dir)
}

async fn connect_postgres(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let connecting = tokio_postgres::connect(url, tokio_postgres::NoTls);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .with_context(|| format!("PostgreSQL at {} did not answer in time", redact(url)))?
        .with_context(|| format!("connecting to PostgreSQL at {}", redact(url)))?;
    tokio::spawn(connection);
    Ok(client)
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let scheme_end = url
        .find("://")
        .map(|i| i + 3)
        .with_context(|| format!("`{}` is not a postgres:// URL", redact(url)))?;
    let (base, query) = match url.find('?') {
        Some(i) => (&url[..i], &url[i..]),
        None => (url, ""),
    };
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    Ok(format!("{}/{database}{query}", &base[..host_end]))
}

/// The URL without a password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A loopback address with a port free now (the process started next binds it).
fn free_addr() -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.to_string())
}

/// A process's log, emptied (it is this run's alone): one handle for stdout and one for
/// stderr, both appending so neither overwrites the other.
fn log_files(path: &Path) -> anyhow::Result<(File, File)> {
    File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let open = || {
        File::options()
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))
    };
    Ok((open()?, open()?))
}

/// The last lines of a log, for a start-up failure.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced_or_added() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "postgres://postgres@127.0.0.1:5432/x",
            ),
            (
                "postgres://postgres@127.0.0.1:5432",
                "postgres://postgres@127.0.0.1:5432/x",
            ),
            (
                "postgres://u:p@h/db?sslmode=disable",
                "postgres://u:p@h/x?sslmode=disable",
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(with_database(url, "x").expect("a URL"), expected);
        }
        assert!(with_database("not a url", "x").is_err());
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn fleet_env_pairs_need_a_name() {
        assert_eq!(
            parse_env_pair("WEFT_X=a=b"),
            Ok(("WEFT_X".to_owned(), "a=b".to_owned()))
        );
        assert!(parse_env_pair("=v").is_err());
        assert!(parse_env_pair("novalue").is_err());
    }
}
