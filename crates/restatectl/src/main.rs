//! `restatectl`: the operator tool of a restate-rs cluster (gRPC on the fabric port).

mod cluster;
mod commands;
mod connection;
mod settings;
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
    /// Talk to this one node only: replaces --address, and calls that need an admin node do
    /// not move on to the other admin nodes of the nodes configuration.
    #[arg(short = 'S', long, global = true, value_name = "ADDRESS")]
    single_address: Option<String>,
    /// Refuse to act on nodes of any other cluster.
    #[arg(long, env = "RESTATECTL_CLUSTER_NAME", global = true)]
    cluster_name: Option<String>,
    /// Timeout for connecting to a node.
    #[arg(long, default_value = "3s", value_parser = parse_timeout, global = true)]
    connect_timeout: std::time::Duration,
    /// Timeout for one request.
    #[arg(long, default_value = "10s", value_parser = parse_timeout, global = true)]
    request_timeout: std::time::Duration,
    /// Answer "yes" to confirmation prompts (the default when the environment variable CI is
    /// set).
    #[arg(short = 'y', long, global = true)]
    yes: bool,
    /// More output on stderr (which node answered); repeatable.
    #[arg(short = 'v', long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Less output on stderr (no notes); repeatable.
    #[arg(short = 'q', long, action = clap::ArgAction::Count, global = true)]
    quiet: u8,
    /// Table output style.
    #[arg(long, value_enum, default_value_t = settings::TableStyle::Compact, global = true)]
    table_style: settings::TableStyle,
    /// How times are shown: relative (human) or as timestamps.
    #[arg(long, value_enum, default_value_t = settings::TimeFormat::Human, global = true)]
    time_format: settings::TimeFormat,
    /// Accepted for compatibility with Restate's restatectl: restate-rs nodes serve their
    /// fabric port over plain http, so there is no certificate to check.
    #[arg(long, global = true)]
    insecure_skip_tls_verify: bool,
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
    #[command(subcommand, name = "metadata-server", aliases = ["metadata-servers", "ms"])]
    MetadataServer(commands::metadata_server::MetadataServerCommand),
    /// The partitions: recovering one that cannot apply its log.
    #[command(subcommand, alias = "partition")]
    Partitions(commands::partitions::PartitionsCommand),
    /// Partition snapshots in the snapshot repository (`[worker.snapshots] destination`).
    #[command(subcommand, alias = "snapshot")]
    Snapshots(commands::snapshots::SnapshotsCommand),
    /// [low-level] The log-servers of replicated loglets.
    #[command(subcommand, name = "replicated-loglet")]
    ReplicatedLoglet(commands::replicated_loglet::ReplicatedLogletCommand),
    /// SQL over the partition stores, through a node's admin API (`POST /query`).
    Sql(commands::sql::SqlArgs),
    /// Shell completions (not built into restate-rs's restatectl).
    #[command(subcommand)]
    Completions(commands::unsupported::CompletionsCommand),
    /// Storage maintenance (not offered by restate-rs nodes).
    #[command(subcommand)]
    Storage(commands::unsupported::StorageCommand),
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
    settings::init(settings::Settings {
        yes: cli.yes || std::env::var_os("CI").is_some_and(|ci| !ci.is_empty() && ci != "false" && ci != "0"),
        verbosity: i8::try_from(i16::from(cli.verbose) - i16::from(cli.quiet)).unwrap_or_default(),
        table_style: cli.table_style,
        time_format: cli.time_format,
    });
    let single = cli.single_address.is_some();
    let given = match cli.single_address {
        Some(address) => vec![address],
        None => cli.addresses,
    };
    let addresses = match Addresses::new(given, cli.connect_timeout, cli.request_timeout, single) {
        Ok(addresses) => addresses,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    // Commands that need no node.
    let command = match cli.command {
        Command::Completions(command) => return report(commands::unsupported::completions(command)),
        Command::Storage(command) => return report(commands::unsupported::storage(command)),
        Command::Partitions(commands::partitions::PartitionsCommand::GenerateMetadata(args)) => {
            return report(commands::partitions::generate_metadata(args));
        }
        Command::Logs(commands::logs::LogsCommand::GenerateMetadata(args)) => {
            return report(commands::logs::generate_metadata(args));
        }
        command => command,
    };
    if let Err(error) = addresses.check_cluster(cli.cluster_name.as_deref()).await {
        eprintln!("error: {error:#}");
        return ExitCode::FAILURE;
    }
    let result = match command {
        Command::Nodes(command) => commands::nodes::run(command, &addresses).await,
        Command::Provision(args) => commands::provision::run(args, &addresses).await,
        Command::Status(args) => commands::status::run(args, &addresses).await,
        Command::Logs(command) => commands::logs::run(command, &addresses).await,
        Command::Config(command) => commands::config::run(command, &addresses).await,
        Command::Metadata(command) => commands::metadata::run(command, &addresses).await,
        Command::MetadataServer(command) => commands::metadata_server::run(command, &addresses).await,
        Command::Partitions(command) => commands::partitions::run(command, &addresses).await,
        Command::Snapshots(command) => commands::snapshots::run(command, &addresses).await,
        Command::ReplicatedLoglet(command) => commands::replicated_loglet::run(command, &addresses).await,
        Command::Sql(args) => commands::sql::run(args, &addresses).await,
        Command::Completions(command) => commands::unsupported::completions(command),
        Command::Storage(command) => commands::unsupported::storage(command),
    };
    report(result)
}

fn report(result: anyhow::Result<()>) -> ExitCode {
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

    /// Command lines in the shape of Restate's restatectl `--help` tree
    /// (`/work/shared/anchor/restatectl-helptree.txt`): every flag and alias it accepts parses.
    #[test]
    fn restates_command_lines_parse() {
        let lines: &[&str] = &[
            "status",
            "status --extra -v -q --table-style borders --time-format rfc2822 --yes --insecure-skip-tls-verify",
            "status -S http://localhost:5122/ --connect-timeout 3000 --request-timeout 13000",
            "status --addresses http://localhost:5122/",
            "status --server http://localhost:5122/ -vv -qq -y --time-format iso8601 --table-style compact",
            "provision --address http://localhost:5122/ --yes",
            "provision -n 4 -r 2 --log-replication 2 --partition-replication 2 --log-provider replicated \
             --log-default-nodeset-size 0 --disable-feature controlled-idempotent-sharding",
            "nodes list --extra",
            "nodes remove --nodes 2,3",
            "nodes remove --node 2",
            "nodes set-storage-state --nodes 1 --storage-state read-only --force",
            "nodes set-worker-state --node N2 --worker-state draining --force",
            "partitions list --sort node",
            "partitions list --sort active",
            "partitions generate-metadata --num-partition 4 --version 2 --pretty",
            "partitions generate-metadata -n 4",
            "partitions placement set 0 --replicas 1,2 --freeze maintenance",
            "partitions placement set 0 -r 1 2",
            "partitions placement freeze 0 1-3 --reason x",
            "partitions placement unfreeze 0",
            "partitions placement show",
            "partitions placement show 0 1-2",
            "partitions leadership pin 0 1-4 --node 2",
            "partitions leadership unpin 0",
            "partitions leadership freeze 0 --reason x",
            "partitions leadership unfreeze 0",
            "partitions leadership show 1-2",
            "logs list",
            "logs generate-metadata --version 2 -r 2 --nodeset N1,N2 --sequencer N1:1 -n 4 --pretty",
            "logs describe",
            "logs describe 0 1-4 --from-segment-id 2 --skip 1 --tail 10 --extra",
            "logs describe 0 --head 3",
            "logs describe --all",
            "logs trim 0 1-4 --trim-point 10",
            "logs trim -t 10 0",
            "logs reconfigure --log-id 0 -p replicated -i 1 -m 1 --replication 2 --nodeset N1,N2 --sequencer N1",
            "logs seal 0 1-4 -i 2 --reason test",
            "logs find-tail 0 1-4",
            "snapshots create",
            "snapshots create-snapshot 0 1-4 --min-lsn 10 --trim-log",
            "snapshots create -m 10 -t 3",
            "config get",
            "config set --log-provider replicated --log-replication 1",
            "config set -r 2 --partition-replication 2 --log-default-nodeset-size 0 -n 8",
            "metadata get --key nodes_config",
            "metadata get -k nodes_config",
            "metadata patch --key k --patch [] --version 3 --dry-run",
            "metadata patch -k k -p [] -n",
            "metadata put --key k doc.json --version 3 -n",
            "metadata put -k k - --dry-run",
            "metadata migrate --toml target-metadata.toml",
            "metadata migrate --toml target-metadata.toml --force",
            "replicated-loglet digest 3_1 --from 1 --to 5 -u",
            "replicated-loglet info 3_1",
            "replicated-loglet list-servers",
            "replicated-loglet servers",
            "replicated-loglet nodes",
            "metadata-server add-node 2,3",
            "metadata-server add 2 3",
            "metadata-server remove-node N2",
            "metadata-server rm 2",
            "metadata-server list-servers",
            "ms ls",
            "sql --json \"SELECT 1\"",
            "sql --jsonl \"SELECT 1\"",
            "completions generate bash",
            "completions install zsh",
            "completions generate",
            "storage compact -d partition-store -n N1,N2 --timeout 10m --bottommost-level-compaction force \
             --recalculate-level",
        ];
        for line in lines {
            let mut args = vec!["restatectl".to_owned()];
            let mut quoted: Option<String> = None;
            for word in line.split_whitespace() {
                match (&mut quoted, word.strip_prefix('"')) {
                    (None, Some(rest)) if rest.ends_with('"') => args.push(rest.trim_end_matches('"').to_owned()),
                    (None, Some(rest)) => quoted = Some(rest.to_owned()),
                    (Some(text), _) if word.ends_with('"') => {
                        args.push(format!("{text} {}", word.trim_end_matches('"')));
                        quoted = None;
                    }
                    (Some(text), _) => *text = format!("{text} {word}"),
                    (None, None) => args.push(word.to_owned()),
                }
            }
            if let Err(error) = Cli::try_parse_from(&args) {
                panic!("`restatectl {line}` does not parse: {error}");
            }
        }
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn provision_and_config_set_take_replication_for_both() {
        let cli = Cli::try_parse_from(["restatectl", "provision", "-r", "2"]).unwrap();
        let Command::Provision(args) = cli.command else {
            panic!("not provision");
        };
        assert!(format!("{args:?}").contains("replication: Some(\"2\")"), "{args:?}");
    }
}
