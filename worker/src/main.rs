//! `weft-worker`: see the crate documentation of `weft_worker`.

use anyhow::Context;
use weft_runtime::telemetry;
use weft_worker::{Config, Worker};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = weft_runtime::config::parse();
    // Dropped at the end of `main`, exporting the spans still buffered.
    let _telemetry = telemetry::init("weft-worker", &config.process.log_format)
        .unwrap_or_else(|e| weft_runtime::config::refuse(&e));
    let ops = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| {
            format!(
                "binding the metrics address {} (WEFT_METRICS_ADDR)",
                config.metrics_addr
            )
        })?;
    let worker = Worker::new(config).context("starting the worker")?;
    tracing::info!("worker started");
    worker
        .serve(ops, telemetry::shutdown_signal())
        .await
        .context("running the worker")?;
    tracing::info!("worker stopped");
    Ok(())
}
