//! `weft-loadtest`: drives a running Weft fleet with webhooks at a fixed rate and reports
//! what it sustained, and serves the mock upstream API the profiles call.
//!
//! - [`mock`]: the upstream stand-in (`weft-loadtest mock`).
//! - [`profile`]: the scenarios under test (`chain4`, `chain40`).
//! - [`drive`]: open-loop webhook load and run accounting (`weft-loadtest run`).
//! - [`report`]: percentiles, the summary table and the JSON report.

mod drive;
mod mock;
mod profile;
mod report;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weft-loadtest",
    version,
    about = "Load tester and mock upstream for Weft"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the mock upstream API.
    Mock(mock::MockArgs),
    /// Drive a running fleet with webhooks and report the figures.
    Run(drive::RunArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Mock(args) => runtime.block_on(mock::serve(args)),
        Command::Run(args) => runtime.block_on(drive::run(args)),
    }
}
