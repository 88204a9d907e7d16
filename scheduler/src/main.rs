//! `weft-scheduler`: see the crate documentation of `weft_scheduler`.

use anyhow::Context;
use weft_runtime::telemetry;
use weft_scheduler::{Config, Scheduler};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: Config = weft_runtime::config::parse();
    // Dropped at the end of `main`, exporting the spans still buffered.
    let _telemetry = telemetry::init("weft-scheduler", &config.process.log_format)
        .unwrap_or_else(|e| weft_runtime::config::refuse(&e));
    let ops = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .with_context(|| {
            format!(
                "binding the metrics address {} (WEFT_METRICS_ADDR)",
                config.metrics_addr
            )
        })?;
    let scheduler = Scheduler::new(config)
        .await
        .context("starting the scheduler")?;
    tracing::info!("scheduler started");
    scheduler
        .serve(ops, telemetry::shutdown_signal())
        .await
        .context("running the scheduler")?;
    tracing::info!("scheduler stopped");
    Ok(())
}
