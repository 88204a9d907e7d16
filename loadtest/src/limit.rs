//! `weft-loadtest limit`: the physical reference on this machine. A minimal loop that
//! does per step what the fleet must do at least (publish to a quorum queue and wait for
//! the confirm, consume, commit one single-row transaction), with `concurrency` chains of
//! steps in flight, measured as steps per second and per-step latency. The fleet's figures
//! are stated as a fraction of it.
//!
//! One step: the message of chain `c` is published (confirm awaited), delivered, the
//! row of `c` is updated in its own transaction, then the chain's next message is
//! published and the delivery acknowledged, as the scheduler does with a result. The
//! step's latency runs from its publish to its commit.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use serde_json::{Value, json};
use weft_runtime::queue::{self, Broker};

use crate::procs::{ProcSample, ProcessSampler};
use crate::stats::Latencies;

/// Longest wait for the broker or the database to answer.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub struct LimitArgs {
    /// Chains of steps in flight at once; a comma-separated list measures each in turn.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    concurrency: Vec<usize>,
    /// How long each concurrency is measured.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Time before the measurement starts (connections open, caches warm).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// PostgreSQL connections in the pool.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// The PostgreSQL server; a private database is created on it and dropped after.
    #[arg(
        long,
        env = "WEFT_LOADTEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    #[arg(
        long,
        env = "WEFT_LOADTEST_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// Where to write the JSON result.
    #[arg(long, default_value = "loadtest-limit.json")]
    out: PathBuf,
}

/// What one concurrency level measured.
struct Level {
    concurrency: usize,
    steps: usize,
    seconds: f64,
    latency: Latencies,
    /// CPU of this loop, RabbitMQ and PostgreSQL over the measurement.
    cpu: Vec<ProcSample>,
}

impl Level {
    /// CPU time of the loop, the broker and the database per step, in ms.
    fn cpu_ms_per_step(&self) -> f64 {
        let busy: f64 = self.cpu.iter().map(|p| p.cpu_percent / 100.0).sum();
        busy * self.seconds * 1e3 / self.steps as f64
    }
}

pub async fn run(args: LimitArgs) -> anyhow::Result<()> {
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!("--concurrency must list numbers above zero");
    }
    let name = format!("weft_limit_{}", uuid::Uuid::new_v4().simple());
    let levels = measure_privately(&args, &name).await?;
    print(&levels);
    let report = json!({
        "tool": "weft-loadtest limit",
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "load_average": crate::procs::load_average(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "per_step": "publish with confirm to a quorum queue, consume, one single-row commit, ack",
        "connections": args.connections,
        "levels": levels.iter().map(|l| json!({
            "concurrency": l.concurrency,
            "steps": l.steps,
            "seconds": l.seconds,
            "steps_per_second": l.steps as f64 / l.seconds,
            "step_latency_ms": l.latency.to_json(),
            "cpu_ms_per_step": l.cpu_ms_per_step(),
            "cpu_percent": l.cpu.iter().map(|p| (p.name.clone(), json!(p.cpu_percent))).collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<Value>>(),
    });
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("written to {}", args.out.display());
    Ok(())
}

/// Measures every level on a database and a queue named `name`, created for it and
/// removed after.
async fn measure_privately(args: &LimitArgs, name: &str) -> anyhow::Result<Vec<Level>> {
    let admin = connect(&args.database_url).await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .with_context(|| format!("creating the database {name}"))?;
    let outcome = measure_all(args, name).await;
    if let Err(e) = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
    {
        eprintln!("could not drop the database {name}: {e}");
    }
    outcome
}

// The table on stdout is this command's output.
#[allow(clippy::print_stdout)]
fn print(levels: &[Level]) {
    println!(
        "physical reference: publish+confirm (quorum queue), consume, single-row commit per step"
    );
    println!(
        "{:>12} {:>10} {:>10} {:>10} {:>10} {:>12}  CPU % by process",
        "concurrency", "steps/s", "p50 ms", "p99 ms", "p99.9 ms", "CPU ms/step"
    );
    for level in levels {
        let cpu: Vec<String> = level
            .cpu
            .iter()
            .map(|p| format!("{} {:.0}", p.name, p.cpu_percent))
            .collect();
        println!(
            "{:>12} {:>10.0} {:>10.2} {:>10.2} {:>10.2} {:>12.3}  {}",
            level.concurrency,
            level.steps as f64 / level.seconds,
            level.latency.q(0.5),
            level.latency.q(0.99),
            level.latency.q(0.999),
            level.cpu_ms_per_step(),
            cpu.join(", ")
        );
    }
}

async fn measure_all(args: &LimitArgs, name: &str) -> anyhow::Result<Vec<Level>> {
    let database_url = crate::spawn::with_database(&args.database_url, name)?;
    let pool = pool(&database_url, args.connections)?;
    let rows = args.concurrency.iter().copied().max().unwrap_or(1);
    let client = pool
        .get()
        .await
        .context("connecting to the private database")?;
    client
        .batch_execute(&format!(
            "CREATE TABLE chains (id integer PRIMARY KEY, steps bigint NOT NULL, updated_at timestamptz NOT NULL);
             INSERT INTO chains SELECT g, 0, now() FROM generate_series(0, {}) g;",
            rows - 1
        ))
        .await
        .context("creating the table")?;
    drop(client);

    let broker = Broker::new(&args.amqp_url, None);
    let publisher = queue::connect(&broker, "weft-loadtest limit publisher")
        .await
        .context("connecting to RabbitMQ")?;
    let consumer = queue::connect(&broker, "weft-loadtest limit consumer")
        .await
        .context("connecting to RabbitMQ")?;
    let channel = publisher.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .context("declaring the quorum queue")?;

    let mut levels = Vec::new();
    let mut outcome = Ok(());
    for &concurrency in &args.concurrency {
        eprintln!(
            "concurrency {concurrency}: measuring for {:?}",
            args.duration
        );
        match measure(args, name, concurrency, &pool, &channel, &consumer).await {
            Ok(level) => levels.push(level),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    let _ = channel
        .queue_delete(name.into(), QueueDeleteOptions::default())
        .await;
    let _ = publisher.close(200, "done".into()).await;
    let _ = consumer.close(200, "done".into()).await;
    outcome.map(|()| levels)
}

/// Shared by the step handlers of one level.
struct Loop {
    base: Instant,
    measure_from: Instant,
    measure_until: Instant,
    stopping: AtomicBool,
    finished_chains: AtomicUsize,
    latencies_ms: Mutex<Vec<f64>>,
}

async fn measure(
    args: &LimitArgs,
    queue: &str,
    concurrency: usize,
    pool: &Pool,
    publish: &Channel,
    consumer_connection: &Connection,
) -> anyhow::Result<Level> {
    let base = Instant::now();
    let state = Arc::new(Loop {
        base,
        measure_from: base + args.warmup,
        measure_until: base + args.warmup + args.duration,
        stopping: AtomicBool::new(false),
        finished_chains: AtomicUsize::new(0),
        latencies_ms: Mutex::new(Vec::new()),
    });
    let channel = consumer_connection.create_channel().await?;
    let prefetch = u16::try_from(concurrency).unwrap_or(u16::MAX);
    channel
        .basic_qos(prefetch, BasicQosOptions { global: false })
        .await?;
    let mut deliveries = channel
        .basic_consume(
            queue.into(),
            format!("limit-{concurrency}").as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for chain in 0..concurrency {
        publish_step(publish, queue, chain as u32, base).await?;
    }
    let handlers = {
        let (state, pool, publish, queue) = (
            state.clone(),
            pool.clone(),
            publish.clone(),
            queue.to_owned(),
        );
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            while let Some(delivery) = deliveries.next().await {
                let delivery = delivery?;
                let (handler_state, pool, publish, queue) =
                    (state.clone(), pool.clone(), publish.clone(), queue.clone());
                tasks.spawn(async move {
                    step(delivery, &handler_state, &pool, &publish, &queue).await
                });
                while let Some(done) = tasks.try_join_next() {
                    done??;
                }
                if state.stopping.load(Ordering::Relaxed)
                    && state.finished_chains.load(Ordering::Relaxed) >= concurrency
                {
                    break;
                }
            }
            while let Some(done) = tasks.join_next().await {
                done??;
            }
            anyhow::Ok(())
        })
    };
    let mut sampler = ProcessSampler::services_only();
    tokio::time::sleep_until(state.measure_from.into()).await;
    sampler.sample();
    tokio::time::sleep_until(state.measure_until.into()).await;
    let cpu = sampler.sample();
    state.stopping.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while state.finished_chains.load(Ordering::Relaxed) < concurrency {
        if handlers.is_finished() {
            handlers.await??;
            bail!("the consumer stopped before every chain finished");
        }
        if Instant::now() >= deadline {
            handlers.abort();
            bail!("the chains did not finish within 30 s of the end of the measurement");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The consumer only notices the end with the next delivery: there is none.
    handlers.abort();
    let _ = channel.close(200, "level done".into()).await;
    let latencies = std::mem::take(
        &mut *state
            .latencies_ms
            .lock()
            .map_err(|_| anyhow::anyhow!("a step handler panicked"))?,
    );
    Ok(Level {
        concurrency,
        steps: latencies.len(),
        seconds: args.duration.as_secs_f64(),
        latency: Latencies::new(latencies),
        cpu,
    })
}

/// One step of a chain: commit its row, publish its next step (unless stopping), ack.
async fn step(
    delivery: lapin::message::Delivery,
    state: &Loop,
    pool: &Pool,
    publish: &Channel,
    queue: &str,
) -> anyhow::Result<()> {
    let (chain, sent) = decode(&delivery.data).context("a message of another shape")?;
    let client = pool.get().await?;
    let statement = client
        .prepare_cached("UPDATE chains SET steps = steps + 1, updated_at = now() WHERE id = $1")
        .await?;
    client.execute(&statement, &[&(chain as i32)]).await?;
    drop(client);
    let now = Instant::now();
    let sent_at = state.base + Duration::from_nanos(sent);
    if sent_at >= state.measure_from && now <= state.measure_until {
        let latency = now.duration_since(sent_at).as_secs_f64() * 1e3;
        if let Ok(mut latencies) = state.latencies_ms.lock() {
            latencies.push(latency);
        }
    }
    let stopping = state.stopping.load(Ordering::Relaxed);
    if !stopping {
        publish_step(publish, queue, chain, state.base).await?;
    }
    if !delivery.acker.ack(BasicAckOptions::default()).await? {
        bail!("the delivery could not be acknowledged: its channel is closed");
    }
    // Counted once acknowledged: nothing of this level is left to leak into the next.
    if stopping {
        state.finished_chains.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

async fn publish_step(
    channel: &Channel,
    queue: &str,
    chain: u32,
    base: Instant,
) -> anyhow::Result<()> {
    let sent = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let confirmed = async {
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &encode(chain, sent),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?
            .await
    };
    match tokio::time::timeout(SERVICE_TIMEOUT, confirmed).await {
        Err(_) => bail!("the broker did not confirm a step within {SERVICE_TIMEOUT:?}"),
        Ok(confirmation) => match confirmation? {
            Confirmation::Ack(None) => Ok(()),
            other => bail!("the broker did not take the step: {other:?}"),
        },
    }
}

/// A step message: the chain and when its publish began (ns after the level's start).
fn encode(chain: u32, sent_nanos: u64) -> [u8; 12] {
    let mut bytes = [0; 12];
    bytes[..4].copy_from_slice(&chain.to_le_bytes());
    bytes[4..].copy_from_slice(&sent_nanos.to_le_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Option<(u32, u64)> {
    let chain = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
    let sent = u64::from_le_bytes(bytes.get(4..12)?.try_into().ok()?);
    Some((chain, sent))
}

fn pool(url: &str, size: usize) -> anyhow::Result<Pool> {
    let config = tokio_postgres::Config::from_str(url).context("parsing the database URL")?;
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let timeouts = Timeouts {
        wait: Some(SERVICE_TIMEOUT),
        create: Some(SERVICE_TIMEOUT),
        recycle: Some(SERVICE_TIMEOUT),
    };
    Ok(Pool::builder(manager)
        .max_size(size.max(1))
        .timeouts(timeouts)
        .runtime(Runtime::Tokio1)
        .build()?)
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio::time::timeout(
        SERVICE_TIMEOUT,
        tokio_postgres::connect(url, tokio_postgres::NoTls),
    )
    .await
    .context("PostgreSQL did not answer in time")?
    .context("connecting to PostgreSQL")?;
    tokio::spawn(connection);
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_messages_round_trip() {
        assert_eq!(decode(&encode(7, 123_456_789)), Some((7, 123_456_789)));
        assert_eq!(decode(&[1, 2, 3]), None);
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        limit: LimitArgs,
    }

    /// Against the real PostgreSQL and RabbitMQ: every level takes steps and times each
    /// one, and the private database and queue are gone afterwards.
    #[tokio::test]
    async fn the_reference_loop_commits_each_step_and_cleans_up() {
        use clap::Parser as _;
        let cli = Cli::try_parse_from([
            "limit",
            "--concurrency",
            "1,4",
            "--duration",
            "400ms",
            "--warmup",
            "100ms",
            "--connections",
            "2",
        ])
        .expect("arguments parse");
        let args = cli.limit;
        let name = format!("weft_limit_test_{}", uuid::Uuid::new_v4().simple());
        let levels = measure_privately(&args, &name).await.expect("measured");
        assert_eq!(
            levels.iter().map(|l| l.concurrency).collect::<Vec<_>>(),
            [1, 4]
        );
        for level in &levels {
            assert!(level.steps > 0, "concurrency {}", level.concurrency);
            assert_eq!(level.latency.len(), level.steps);
            assert!(level.latency.q(0.5) > 0.0);
            let names: Vec<&str> = level.cpu.iter().map(|p| p.name.as_str()).collect();
            assert!(names.contains(&"loadtest driver"), "{names:?}");
        }
        let admin = connect(&args.database_url).await.expect("connects");
        let left = admin
            .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await
            .expect("queried");
        assert!(left.is_empty(), "the database {name} was not dropped");
        let connection = queue::connect(
            &Broker::new(&args.amqp_url, None),
            "weft-loadtest limit test",
        )
        .await
        .expect("broker reachable");
        let channel = connection.create_channel().await.expect("a channel");
        let passive = channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        assert!(passive.is_err(), "the queue {name} was not deleted");
    }
}
