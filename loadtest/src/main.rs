//! `weft-loadtest`: drives a Weft fleet with webhooks and reports what it sustained,
//! serves the mock upstream API the profiles call, and measures the machine's physical
//! reference.
//!
//! - [`mock`]: the upstream stand-in (`weft-loadtest mock`).
//! - [`profile`]: the scenarios under test (`chain4`, `chain40`, `fanout`).
//! - [`drive`]: open-loop webhook load, ramp, run accounting (`weft-loadtest run`).
//! - [`spawn`]: a fleet of the load test's own (`run --spawn`).
//! - [`monitor`]: the live progress line and the timeline; [`procs`]: CPU and RSS.
//! - [`report`], [`html`], [`stats`]: the figures, the table, JSON and HTML.
//! - [`limit`]: the physical reference (`weft-loadtest limit`).

mod drive;
mod html;
mod limit;
mod mock;
mod monitor;
mod procs;
mod profile;
mod report;
mod spawn;
mod stats;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weft-loadtest",
    version,
    about = "Load tester, mock upstream and physical reference for Weft"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the mock upstream API.
    Mock(mock::MockArgs),
    /// Drive a fleet (running, or started with --spawn) with webhooks and report the figures.
    Run(Box<drive::RunArgs>),
    /// Measure the physical reference: publish+confirm, consume and one commit per step.
    Limit(limit::LimitArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Mock(args) => runtime.block_on(mock::serve(args)),
        Command::Run(args) => runtime.block_on(drive::run(*args)),
        Command::Limit(args) => runtime.block_on(limit::run(args)),
    }
}
