//! `restatectl config get|set`: the cluster configuration.

use anyhow::bail;
use clap::Subcommand;
use restate_proto::cluster_ctrl::{
    ClusterConfiguration, GetClusterConfigurationRequest, SetClusterConfigurationRequest,
};

use crate::cluster::{admin_addresses, on_admin, read_from_admin};
use crate::connection::Addresses;
use crate::table::new_table;

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Show the cluster configuration.
    Get {
        #[arg(long)]
        json: bool,
    },
    /// Change the cluster configuration: shows the change and asks before applying it.
    Set {
        /// Replication of both logs and partitions (logs only where they are replicated);
        /// --log-replication and --partition-replication override it for one of them.
        #[arg(short = 'r', long)]
        replication: Option<String>,
        /// Default provider of new log segments; it may only change to `replicated`.
        #[arg(long)]
        log_provider: Option<String>,
        /// Copies of log records, e.g. 2 or "{zone: 2, node: 3}".
        #[arg(long)]
        log_replication: Option<String>,
        /// Log-servers per segment (0 = automatic).
        #[arg(long)]
        log_default_nodeset_size: Option<u32>,
        /// Copies of partition state.
        #[arg(long)]
        partition_replication: Option<String>,
        /// Number of partitions; only while it is 0.
        #[arg(short = 'n', long)]
        num_partitions: Option<u32>,
    },
}

pub(crate) async fn run(command: ConfigCommand, addresses: &Addresses) -> anyhow::Result<()> {
    let nodes = addresses.nodes_config().await.ok().flatten().map(|(_, nodes)| nodes);
    let admins = admin_addresses(addresses, nodes.as_ref());
    match command {
        ConfigCommand::Get { json } => {
            let configuration = read_from_admin(addresses, &admins, |mut client| async move {
                client
                    .get_cluster_configuration(GetClusterConfigurationRequest {})
                    .await
                    .map(|r| r.into_inner())
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&to_json(&configuration))?);
            } else {
                let mut table = new_table(&["SETTING", "VALUE"]);
                for (name, value) in fields(&configuration) {
                    table.add_row(vec![name.to_owned(), value]);
                }
                println!("{table}");
            }
            Ok(())
        }
        ConfigCommand::Set {
            replication,
            log_provider,
            mut log_replication,
            log_default_nodeset_size,
            mut partition_replication,
            num_partitions,
        } => {
            if let Some(replication) = replication {
                partition_replication = partition_replication.or_else(|| Some(replication.clone()));
                if log_replication.is_none() {
                    let provider = match &log_provider {
                        Some(provider) => provider.clone(),
                        None => {
                            read_from_admin(addresses, &admins, |mut client| async move {
                                client
                                    .get_cluster_configuration(GetClusterConfigurationRequest {})
                                    .await
                                    .map(|r| r.into_inner())
                            })
                            .await?
                            .log_provider
                        }
                    };
                    if provider == "replicated" {
                        log_replication = Some(replication);
                    }
                }
            }
            let request = |dry_run| SetClusterConfigurationRequest {
                dry_run,
                log_provider: log_provider.clone(),
                log_replication: log_replication.clone(),
                partition_replication: partition_replication.clone(),
                num_partitions,
                log_nodeset_size: log_default_nodeset_size,
            };
            let plan = on_admin(addresses, &admins, |mut client| {
                let request = request(true);
                async move { client.set_cluster_configuration(request).await.map(|r| r.into_inner()) }
            })
            .await?;
            let (before, after) = (plan.before.unwrap_or_default(), plan.after.unwrap_or_default());
            let changes: Vec<(&str, String, String)> = fields(&before)
                .into_iter()
                .zip(fields(&after))
                .filter(|((_, old), (_, new))| old != new)
                .map(|((name, old), (_, new))| (name, old, new))
                .collect();
            if changes.is_empty() {
                println!("Nothing to change: the cluster configuration already is like that.");
                return Ok(());
            }
            let mut table = new_table(&["SETTING", "NOW", "NEW"]);
            for (name, old, new) in &changes {
                table.add_row(vec![name.to_string(), old.clone(), new.clone()]);
            }
            println!("{table}");
            if !super::confirm("Apply this change?")? {
                bail!("cancelled; nothing was changed");
            }
            on_admin(addresses, &admins, |mut client| {
                let request = request(false);
                async move { client.set_cluster_configuration(request).await.map(|r| r.into_inner()) }
            })
            .await?;
            println!("✅ Cluster configuration updated");
            Ok(())
        }
    }
}

fn fields(c: &ClusterConfiguration) -> Vec<(&'static str, String)> {
    vec![
        ("partitions", c.num_partitions.to_string()),
        ("partition replication", c.partition_replication.clone()),
        ("log provider", c.log_provider.clone()),
        (
            "log replication",
            if c.log_replication.is_empty() {
                "-".into()
            } else {
                c.log_replication.clone()
            },
        ),
        ("log nodeset size", c.log_nodeset_size.to_string()),
    ]
}

fn to_json(c: &ClusterConfiguration) -> serde_json::Value {
    serde_json::json!({
        "num_partitions": c.num_partitions,
        "partition_replication": c.partition_replication,
        "log_provider": c.log_provider,
        "log_replication": c.log_replication,
        "log_nodeset_size": c.log_nodeset_size,
        "partition_table_version": c.partition_table_version,
        "logs_version": c.logs_version,
    })
}
