//! `restate-bench`: load generators against a running cluster (or a reference system on the
//! same machine), printing throughput and latency percentiles as a table and one JSON line.

mod invoke;
mod log;
mod metadata;
mod report;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "restate-bench", version, about = "Benchmarks for restate-rs clusters")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Clients doing compare-and-swap puts and linearizable gets on a metadata store.
    Metadata(metadata::MetadataArgs),
    /// Appenders on one log through a node's Bifrost: records/s and append latency.
    Log(log::LogArgs),
    /// Workers calling one handler through an ingress: calls/s and call latency.
    Invoke(invoke::InvokeArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Metadata(args) => metadata::run(args).await,
        Command::Log(args) => log::run(args).await,
        Command::Invoke(args) => invoke::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
