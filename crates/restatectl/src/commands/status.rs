//! `restatectl status`: the cluster at a glance.

use clap::Args;
use futures::future::join_all;
use restate_proto::cluster_ctrl::GetClusterConfigurationRequest;
use restate_proto::metadata_server::StatusRequest;
use restate_proto::metadata_server::metadata_server_svc_client::MetadataServerSvcClient;
use restate_proto::node_ctl::node_ctl_svc_client::NodeCtlSvcClient;
use restate_proto::node_ctl::{GetPartitionsRequest, PartitionProcessorState};
use restate_types::Role;

use super::nodes::{human, node_rows, rows_json};
use crate::cluster::{admin_addresses, nodes_config, read_from_admin};
use crate::connection::Addresses;
use crate::table::new_table;

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Add per-node role status and the metadata servers' Raft state.
    #[arg(long)]
    extra: bool,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: StatusArgs, addresses: &Addresses) -> anyhow::Result<()> {
    let (version, rows, state) = node_rows(addresses).await?;
    let (_, nodes) = nodes_config(addresses).await?;
    let admins = admin_addresses(addresses, Some(&nodes));
    let configuration = read_from_admin(addresses, &admins, |mut client| async move {
        client
            .get_cluster_configuration(GetClusterConfigurationRequest {})
            .await
            .map(|r| r.into_inner())
    })
    .await;
    let metadata_servers: Vec<(String, Option<restate_proto::metadata_server::StatusResponse>)> =
        join_all(nodes.with_role(Role::MetadataServer).map(|node| {
            let address = restate_net::normalize_address(&node.address);
            let label = node.id.to_string();
            async move {
                let status = match addresses.channel(&address) {
                    Ok(channel) => MetadataServerSvcClient::new(channel)
                        .status(StatusRequest {})
                        .await
                        .ok()
                        .map(|r| r.into_inner()),
                    Err(_) => None,
                };
                (label, status)
            }
        }))
        .await;
    let controller = state.as_ref().map(|s| s.controller).filter(|c| *c != 0);
    let processors = partition_processors(addresses, &nodes).await;

    if args.json {
        let configuration = configuration.as_ref().ok().map(|c| {
            serde_json::json!({
                "num_partitions": c.num_partitions,
                "partition_replication": c.partition_replication,
                "log_provider": c.log_provider,
                "log_replication": c.log_replication,
                "log_nodeset_size": c.log_nodeset_size,
            })
        });
        let servers: Vec<serde_json::Value> = metadata_servers
            .iter()
            .map(|(label, status)| match status {
                Some(s) => serde_json::json!({
                    "node": label, "status": s.status, "leader": s.leader_id.map(|id| format!("N{id}")),
                    "term": s.term, "applied": s.applied_index,
                    "members": s.members.iter().filter(|m| m.voter).map(|m| format!("N{}", m.node_id)).collect::<Vec<_>>(),
                }),
                None => serde_json::json!({"node": label, "status": "UNREACHABLE"}),
            })
            .collect();
        let output = serde_json::json!({
            "cluster_name": nodes.cluster_name,
            "nodes_config_version": version,
            "controller": controller.map(|c| format!("N{c}")),
            "nodes": rows_json(&rows),
            "configuration": configuration,
            "metadata_servers": servers,
            "partitions": processors.iter().map(|(node, p)| serde_json::json!({
                "partition_id": p.partition_id, "node": node,
                "mode": mode(p), "leader_epoch": p.leader_epoch,
                "applied_lsn": p.applied_lsn, "durable_lsn": p.durable_lsn, "failure": p.failure,
                "log_problem": p.log_problem, "outbox_problem": p.outbox_problem,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&output)?);
        return Ok(());
    }

    println!("Cluster `{}` ({})", nodes.cluster_name, nodes.cluster_fingerprint);
    println!("Node Configuration (v{version})");
    let mut table = new_table(&["NODE-ID", "NAME", "UPTIME", "LIVENESS", "METADATA", "ROLES"]);
    for row in &rows {
        let metadata = metadata_servers
            .iter()
            .find(|(label, _)| *label == row.id)
            .map(|(_, status)| status.as_ref().map_or("-".to_owned(), |s| title(&s.status)))
            .unwrap_or_default();
        let mut liveness = row.liveness.clone();
        if controller.is_some_and(|c| format!("N{c}") == row.id) {
            liveness.push_str(" (controller)");
        }
        table.add_row(vec![
            format!("{}:{}", row.id, row.generation),
            row.name.clone(),
            row.uptime
                .map_or("-".to_owned(), |u| humantime::format_duration(u).to_string()),
            liveness,
            metadata,
            row.roles.join(" | "),
        ]);
    }
    println!("{table}");
    match &configuration {
        Ok(c) => {
            let replication = if c.log_replication.is_empty() {
                String::new()
            } else {
                format!(", replication {}", c.log_replication)
            };
            println!("Logs (v{}): provider {}{replication}", c.logs_version, c.log_provider);
            println!(
                "Partitions (v{}): {} partitions, replication {}",
                c.partition_table_version, c.num_partitions, c.partition_replication
            );
        }
        Err(error) => println!("Logs and partitions: unknown ({error:#})"),
    }
    let leader = metadata_servers
        .iter()
        .find_map(|(_, s)| s.as_ref().and_then(|s| s.leader_id))
        .map_or("none".to_owned(), |id| format!("N{id}"));
    if !metadata_servers.is_empty() {
        let up = metadata_servers.iter().filter(|(_, s)| s.is_some()).count();
        println!(
            "Metadata service: replicated, leader {leader}, {up} of {} servers reachable",
            metadata_servers.len()
        );
    }
    if !processors.is_empty() {
        let leading = processors.iter().filter(|(_, p)| p.is_leader).count();
        let mut per_node: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for (node, p) in &processors {
            *per_node.entry(node.as_str()).or_default() += usize::from(p.is_leader);
        }
        let per_node: Vec<String> = per_node.iter().map(|(node, n)| format!("{node} {n}")).collect();
        println!(
            "\nPartition processors: {} running, {leading} leading (leaders per node: {})",
            processors.len(),
            per_node.join(", ")
        );
        let mut table = new_table(&["PARTITION", "NODE", "MODE", "EPOCH", "APPLIED-LSN", "DURABLE-LSN"]);
        for (node, p) in &processors {
            table.add_row(vec![
                p.partition_id.to_string(),
                node.clone(),
                mode(p).to_owned(),
                p.leader_epoch.map_or("-".to_owned(), |e| e.to_string()),
                p.applied_lsn.to_string(),
                p.durable_lsn.to_string(),
            ]);
        }
        println!("{table}");
        for (node, p) in &processors {
            let problems = [
                ("failed", &p.failure),
                ("log", &p.log_problem),
                ("outbox", &p.outbox_problem),
            ];
            for (what, problem) in problems {
                if let Some(problem) = problem {
                    println!("  partition {} on {node}: {what}: {problem}", p.partition_id);
                }
            }
        }
    }
    if args.extra {
        println!("\nRoles");
        let mut roles = new_table(&["NODE", "ROLE", "STATUS", "LAST-SEEN"]);
        for row in &rows {
            for (role, status) in &row.role_status {
                roles.add_row(vec![row.id.clone(), role.clone(), status.clone(), human(row.last_seen)]);
            }
        }
        println!("{roles}");
        if !metadata_servers.is_empty() {
            println!("\nMetadata servers");
            let mut servers = new_table(&[
                "NODE",
                "STATUS",
                "LEADER",
                "MEMBERS",
                "APPLIED",
                "COMMITTED",
                "TERM",
                "SNAP-INDEX",
            ]);
            for (label, status) in &metadata_servers {
                match status {
                    Some(s) => {
                        let members: Vec<String> = s
                            .members
                            .iter()
                            .filter(|m| m.voter)
                            .map(|m| format!("N{}", m.node_id))
                            .collect();
                        servers.add_row(vec![
                            label.clone(),
                            s.status.clone(),
                            s.leader_id.map_or("-".to_owned(), |id| format!("N{id}")),
                            format!("[{}]", members.join(",")),
                            s.applied_index.to_string(),
                            s.committed_index.to_string(),
                            s.term.to_string(),
                            s.snapshot_index.to_string(),
                        ]);
                    }
                    None => {
                        servers.add_row(vec![label.clone(), "UNREACHABLE".to_owned()]);
                    }
                }
            }
            println!("{servers}");
        }
    }
    Ok(())
}

/// The partition processors of every worker node, by node.
pub(crate) async fn partition_processors(
    addresses: &Addresses,
    nodes: &restate_types::metadata::NodesConfiguration,
) -> Vec<(String, PartitionProcessorState)> {
    let answers = join_all(nodes.with_role(Role::Worker).map(|node| {
        let address = restate_net::normalize_address(&node.address);
        let label = node.id.to_string();
        async move {
            let partitions = match addresses.channel(&address) {
                Ok(channel) => NodeCtlSvcClient::new(channel)
                    .get_partitions(GetPartitionsRequest {})
                    .await
                    .map(|r| r.into_inner().partitions)
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            partitions.into_iter().map(move |p| (label.clone(), p))
        }
    }))
    .await;
    let mut all: Vec<(String, PartitionProcessorState)> = answers.into_iter().flatten().collect();
    all.sort_by_key(|(node, p)| (p.partition_id, node.clone()));
    all
}

pub(crate) fn mode(partition: &PartitionProcessorState) -> &'static str {
    match (&partition.failure, partition.is_leader) {
        (Some(_), _) => "Failed",
        (None, true) => "Leader",
        (None, false) => "Follower",
    }
}

/// `MEMBER` → `Member`.
fn title(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut chars = lower.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}
