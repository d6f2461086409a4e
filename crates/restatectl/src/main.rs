//! `restatectl`: the operator tool of a restate-rs cluster (gRPC on the fabric port).

mod cluster;
mod commands;
mod connection;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::connection::Addresses;

#[derive(Debug, Parser)]
#[command(name = "restatectl", version, about = "Operate a restate-rs cluster")]
struct Cli {
    /// Fabric address of a node (repeatable or comma separated).
    #[arg(
        short = 's',
        long = "address",
        // The names Restate's restatectl and docs also use (`restatectl status --addresses …`).
        aliases = ["addresses", "server"],
        env = "RESTATECTL_ADDRESS",
        value_delimiter = ',',
        default_value = "http://localhost:5122/",
        global = true
    )]
    addresses: Vec<String>,
    /// Refuse to act on nodes of any other cluster.
    #[arg(long, env = "RESTATECTL_CLUSTER_NAME", global = true)]
    cluster_name: Option<String>,
    /// Timeout for connecting to a node.
    #[arg(long, default_value = "3s", value_parser = parse_timeout, global = true)]
    connect_timeout: std::time::Duration,
    /// Timeout for one request.
    #[arg(long, default_value = "10s", value_parser = parse_timeout, global = true)]
    request_timeout: std::time::Duration,
    #[command(subcommand)]
    command: Command,
}

/// A timeout: a duration (`3s`, `500ms`) or, as Restate's restatectl takes it, bare milliseconds.
fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    if let Ok(millis) = text.trim().parse::<u64>() {
        return Ok(std::time::Duration::from_millis(millis));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{e}; expected a duration such as 3s or 500ms, or milliseconds such as 3000"))
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Nodes of the cluster.
    #[command(subcommand)]
    Nodes(commands::nodes::NodesCommand),
    /// The cluster at a glance: nodes and their liveness, logs, partitions, metadata service.
    Status(commands::status::StatusArgs),
    /// The cluster configuration (partitions, replication, log provider).
    #[command(subcommand)]
    Config(commands::config::ConfigCommand),
    /// The logs (Bifrost): chains of segments, tails, trims.
    #[command(subcommand)]
    Logs(commands::logs::LogsCommand),
    /// Provision a new cluster through one node.
    Provision(commands::provision::ProvisionArgs),
    /// Read and write raw metadata values.
    #[command(subcommand)]
    Metadata(commands::metadata::MetadataCommand),
    /// The replicated metadata store's servers.
    #[command(subcommand, name = "metadata-server", alias = "metadata-servers")]
    MetadataServer(commands::metadata_server::MetadataServerCommand),
    /// The partitions: recovering one that cannot apply its log.
    #[command(subcommand, alias = "partition")]
    Partitions(commands::partitions::PartitionsCommand),
    /// Partition snapshots in the snapshot repository (`[worker.snapshots] destination`).
    #[command(subcommand, alias = "snapshot")]
    Snapshots(commands::snapshots::SnapshotsCommand),
}

/// `restatectl … | head` closes stdout early: end quietly (exit 141, as if killed by SIGPIPE)
/// like other Unix tools instead of printing a panic.
fn exit_quietly_on_closed_stdout() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload().downcast_ref::<String>().map_or("", String::as_str);
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    exit_quietly_on_closed_stdout();
    let cli = Cli::parse();
    let addresses = Addresses::new(cli.addresses, cli.connect_timeout, cli.request_timeout);
    if let Err(error) = addresses.check_cluster(cli.cluster_name.as_deref()).await {
        eprintln!("error: {error:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Nodes(command) => commands::nodes::run(command, &addresses).await,
        Command::Provision(args) => commands::provision::run(args, &addresses).await,
        Command::Status(args) => commands::status::run(args, &addresses).await,
        Command::Logs(command) => commands::logs::run(command, &addresses).await,
        Command::Config(command) => commands::config::run(command, &addresses).await,
        Command::Metadata(command) => commands::metadata::run(command, &addresses).await,
        Command::MetadataServer(command) => commands::metadata_server::run(command, &addresses).await,
        Command::Partitions(command) => commands::partitions::run(command, &addresses).await,
        Command::Snapshots(command) => commands::snapshots::run(command, &addresses).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_is_accepted_like_address_repeated_or_comma_separated() {
        let cli = Cli::try_parse_from(["restatectl", "status", "--addresses", "http://localhost:5122/"]).unwrap();
        assert_eq!(cli.addresses, vec!["http://localhost:5122/"]);
        let cli = Cli::try_parse_from([
            "restatectl",
            "nodes",
            "list",
            "--addresses",
            "http://a:5122/,http://b:5122/",
            "-s",
            "http://c:5122/",
        ])
        .unwrap();
        assert_eq!(
            cli.addresses,
            vec!["http://a:5122/", "http://b:5122/", "http://c:5122/"]
        );
        let cli = Cli::try_parse_from(["restatectl", "status", "--server", "http://d:5122/"]).unwrap();
        assert_eq!(cli.addresses, vec!["http://d:5122/"]);
    }

    #[test]
    fn timeouts_take_durations_or_bare_milliseconds_like_restates_restatectl() {
        let cli = Cli::try_parse_from([
            "restatectl",
            "status",
            "--connect-timeout",
            "3000",
            "--request-timeout",
            "2s",
        ])
        .unwrap();
        assert_eq!(cli.connect_timeout, std::time::Duration::from_secs(3));
        assert_eq!(cli.request_timeout, std::time::Duration::from_secs(2));
        let error = Cli::try_parse_from(["restatectl", "status", "--connect-timeout", "soon"]).unwrap_err();
        assert!(error.to_string().contains("milliseconds such as 3000"), "{error}");
    }

    #[test]
    fn snapshots_create_snapshot_is_the_reference_name_of_snapshots_create() {
        assert!(Cli::try_parse_from(["restatectl", "snapshots", "create-snapshot"]).is_ok());
    }
}
