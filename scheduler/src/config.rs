//! The scheduler's configuration (architecture §8).

use std::net::SocketAddr;
use std::time::Duration;

use weft_runtime::config::{BrokerArgs, DatabaseArgs, ProcessArgs, parse_duration};

#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "weft-scheduler",
    version,
    about = "Weft scheduler: walks scenario graphs and dispatches node tasks"
)]
pub struct Config {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub process: ProcessArgs,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "WEFT_METRICS_ADDR",
        value_name = "WEFT_METRICS_ADDR",
        default_value = "0.0.0.0:9102"
    )]
    pub metrics_addr: SocketAddr,
    /// Messages handled concurrently per consumer.
    #[arg(
        long,
        env = "WEFT_SCHEDULER_PREFETCH",
        value_name = "WEFT_SCHEDULER_PREFETCH",
        default_value_t = 64
    )]
    pub prefetch: u16,
    /// Results recorded in one transaction at most. A batch is what had arrived when the
    /// last one ended: under light load each result is recorded alone, at once.
    #[arg(
        long,
        env = "WEFT_SCHEDULER_RESULT_BATCH",
        value_name = "WEFT_SCHEDULER_RESULT_BATCH",
        default_value_t = 32,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub result_batch: u16,
    /// Running runs whose node states are kept in memory between their results (0: none).
    /// Each holds its nodes' inputs and outputs; runs with a result over 256 KiB are not kept.
    #[arg(
        long,
        env = "WEFT_SCHEDULER_CACHED_RUNS",
        value_name = "WEFT_SCHEDULER_CACHED_RUNS",
        default_value_t = 1_000
    )]
    pub cached_runs: usize,
    /// A run still `queued` this long after it was recorded is published again.
    #[arg(long, env = "WEFT_REQUEUE_AFTER", value_name = "WEFT_REQUEUE_AFTER", default_value = "30s", value_parser = parse_duration)]
    pub requeue_after: Duration,
    /// How often the sweeper looks for work past its deadline.
    #[arg(long, env = "WEFT_SWEEP_INTERVAL", value_name = "WEFT_SWEEP_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub sweep_interval: Duration,
    /// Time a dispatched node may take beyond its own timeout and delay before the sweeper
    /// considers its task lost (queueing under load, a worker restart) and retries it.
    #[arg(long, env = "WEFT_NODE_DEADLINE_GRACE", value_name = "WEFT_NODE_DEADLINE_GRACE", default_value = "60s", value_parser = parse_duration)]
    pub node_deadline_grace: Duration,
    /// How often schedule triggers are checked for ticks that came due. A tick fires
    /// within about this long of its time.
    #[arg(long, env = "WEFT_SCHEDULE_INTERVAL", value_name = "WEFT_SCHEDULE_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub schedule_interval: Duration,
    /// Ticks a schedule fires late for the time no scheduler ran: the most recent ones
    /// missed; older missed ticks are skipped rather than replayed in a burst.
    #[arg(
        long,
        env = "WEFT_SCHEDULE_MAX_CATCH_UP",
        value_name = "WEFT_SCHEDULE_MAX_CATCH_UP",
        default_value_t = 1
    )]
    pub schedule_max_catch_up: u32,
    /// How often poll triggers are checked for polls that came due. A poll is sent
    /// within about this long of its time.
    #[arg(long, env = "WEFT_POLL_CHECK_INTERVAL", value_name = "WEFT_POLL_CHECK_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub poll_check_interval: Duration,
    /// The longest a failing poll trigger waits between polls (each failure in a row
    /// doubles its interval, up to this).
    #[arg(long, env = "WEFT_POLL_MAX_BACKOFF", value_name = "WEFT_POLL_MAX_BACKOFF", default_value = "1h", value_parser = parse_duration)]
    pub poll_max_backoff: Duration,
    /// Item ids remembered per polling scenario (the newest). It must exceed the items one
    /// poll lists, or items it lists start runs again.
    #[arg(
        long,
        env = "WEFT_POLL_SEEN_LIMIT",
        value_name = "WEFT_POLL_SEEN_LIMIT",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub poll_seen_limit: u32,
    /// How often queue depths and consumer counts are read from the broker.
    #[arg(long, env = "WEFT_QUEUE_METRICS_INTERVAL", value_name = "WEFT_QUEUE_METRICS_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub queue_metrics_interval: Duration,
}
