//! `restatectl nodes …`

use std::time::Duration;

use clap::Subcommand;
use futures::future::join_all;
use restate_proto::cluster_ctrl::{ClusterState, GetClusterStateRequest, SetStorageStateRequest};
use restate_types::Role;
use restate_types::metadata::StorageState;

use crate::cluster::{admin_addresses, nodes_config, on_admin, read_from_admin};
use crate::connection::Addresses;
use crate::table::new_table;

#[derive(Debug, Subcommand)]
pub(crate) enum NodesCommand {
    /// Every node of the cluster with its generation, roles and liveness; works while some
    /// nodes are down.
    #[command(alias = "ls")]
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Add each node's uptime, its own status and its roles' statuses.
        #[arg(long)]
        extra: bool,
    },
    /// Remove nodes from the nodes configuration (refused: restate-rs keeps every node that
    /// joined; take one out of service instead, see the message).
    Remove {
        /// A node id or a comma-separated list of node ids.
        #[arg(long = "nodes", alias = "node", value_delimiter = ',', required = true, value_parser = parse_node_id)]
        nodes: Vec<u32>,
    },
    /// Set a worker's state (refused: restate-rs workers have no separate state; see the message).
    SetWorkerState {
        #[arg(long = "nodes", alias = "node", value_delimiter = ',', required = true, value_parser = parse_node_id)]
        nodes: Vec<u32>,
        #[arg(long, value_parser = ["provisioning", "active", "draining", "disabled"])]
        worker_state: String,
        #[arg(long)]
        force: bool,
    },
    /// [dangerous] Change log-servers' storage state, e.g. `read-only` to keep a node out of
    /// new log segments before taking it away.
    SetStorageState {
        /// A node id or a comma-separated list of node ids (N2 or 2).
        #[arg(long = "nodes", alias = "node", value_delimiter = ',', required = true, value_parser = parse_node_id)]
        nodes: Vec<u32>,
        /// The new state.
        #[arg(long, value_parser = parse_storage_state)]
        storage_state: StorageState,
        /// Skip the safety checks (enough read-write log-servers left, node-owned transitions).
        /// This can make logs unwritable or hide lost records.
        #[arg(long)]
        force: bool,
    },
}

fn parse_node_id(text: &str) -> Result<u32, String> {
    let digits = text.trim().trim_start_matches(['N', 'n']);
    digits
        .parse::<u32>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| format!("`{text}` is not a node id; expected e.g. N2 or 2"))
}

fn ids(nodes: &[u32]) -> String {
    nodes.iter().map(|n| format!("N{n}")).collect::<Vec<_>>().join(",")
}

fn parse_storage_state(text: &str) -> Result<StorageState, String> {
    text.parse()
}

pub(crate) async fn run(command: NodesCommand, addresses: &Addresses) -> anyhow::Result<()> {
    match command {
        NodesCommand::List { json, extra } => list(addresses, json, extra).await,
        NodesCommand::Remove { nodes } => anyhow::bail!(
            "`nodes remove --nodes {}`: restate-rs keeps every node that joined in the nodes configuration and offers no \
             removal. To take a node out of service: `restatectl nodes set-storage-state --nodes <ID> \
             --storage-state read-only` (then `gone` once its log segments are sealed), `restatectl metadata-server \
             remove-node <ID>` if it is a metadata server, then stop it; partitions move off a dead worker by themselves",
            ids(&nodes)
        ),
        NodesCommand::SetWorkerState {
            nodes, worker_state, ..
        } => anyhow::bail!(
            "`nodes set-worker-state --nodes {} --worker-state {worker_state}`: restate-rs workers have no separate \
             worker state: the cluster controller places partitions on every live node with the worker role. To move \
             partitions off a node, stop it (they fail over to other replicas); see placement with `restatectl \
             partitions list`, and log-server storage state with `restatectl nodes set-storage-state`",
            ids(&nodes)
        ),
        NodesCommand::SetStorageState {
            nodes,
            storage_state,
            force,
        } => set_storage_state(addresses, nodes, storage_state, force).await,
    }
}

/// One row of the node list.
pub(crate) struct NodeRow {
    pub(crate) id: String,
    pub(crate) generation: u32,
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) roles: Vec<String>,
    /// The log-server's storage state, for nodes with that role.
    pub(crate) storage_state: Option<String>,
    pub(crate) liveness: String,
    pub(crate) last_seen: Option<Duration>,
    pub(crate) uptime: Option<Duration>,
    pub(crate) status: String,
    pub(crate) role_status: Vec<(String, String)>,
}

/// The nodes of the cluster, with liveness from an admin node's failure detector (or, with
/// no admin node reachable, from asking every node directly).
pub(crate) async fn node_rows(addresses: &Addresses) -> anyhow::Result<(u32, Vec<NodeRow>, Option<ClusterState>)> {
    let (version, nodes) = nodes_config(addresses).await?;
    let admins = admin_addresses(addresses, Some(&nodes));
    let state = read_from_admin(addresses, &admins, |mut client| async move {
        client
            .get_cluster_state(GetClusterStateRequest {})
            .await
            .map(|r| r.into_inner())
    })
    .await;
    let state = match state {
        Ok(state) => Some(state),
        Err(error) => {
            crate::settings::note(&format!("{error:#}; asking every node directly"));
            None
        }
    };
    let mut rows = Vec::new();
    for node in nodes.nodes.values() {
        let mut row = NodeRow {
            id: node.id.to_string(),
            generation: node.generation,
            name: node.name.clone(),
            address: node.address.clone(),
            roles: node.roles.iter().map(|r| r.to_string()).collect(),
            storage_state: node
                .roles
                .contains(&Role::LogServer)
                .then(|| node.log_server_state.to_string()),
            liveness: "UNKNOWN".into(),
            last_seen: None,
            uptime: None,
            status: String::new(),
            role_status: Vec::new(),
        };
        if let Some(peer) = state
            .as_ref()
            .and_then(|s| s.nodes.iter().find(|p| p.node_id == node.id.0))
        {
            row.generation = row.generation.max(peer.generation);
            row.liveness = peer.liveness.clone();
            row.last_seen = peer.last_seen_ms_ago.map(Duration::from_millis);
            let reachable = matches!(peer.liveness.as_str(), "ALIVE" | "SUSPECT");
            row.uptime = reachable.then(|| Duration::from_secs(peer.uptime_s));
            // What a dead node last reported is not its status now: report none.
            if reachable {
                row.status = peer.status.clone();
                row.role_status = peer.role_status.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                row.role_status.sort();
            }
        }
        rows.push(row);
    }
    if state.is_none() {
        let probes = join_all(rows.iter().map(|row| {
            let address = restate_net::normalize_address(&row.address);
            async move { tokio::time::timeout(Duration::from_secs(1), addresses.ident(&address)).await }
        }))
        .await;
        for (row, probe) in rows.iter_mut().zip(probes) {
            match probe {
                Ok(Ok(ident)) => {
                    row.liveness = "ALIVE".into();
                    row.status = ident.status;
                    row.uptime = Some(Duration::from_secs(ident.age_s));
                    row.last_seen = Some(Duration::ZERO);
                    row.role_status = ident.role_states.into_iter().map(|r| (r.role, r.status)).collect();
                }
                _ => row.liveness = "UNREACHABLE".into(),
            }
        }
    }
    Ok((version, rows, state))
}

/// A last sighting `duration` ago, in the chosen `--time-format`.
pub(crate) fn human(duration: Option<Duration>) -> String {
    crate::settings::format_ago(duration)
}

pub(crate) fn rows_json(rows: &[NodeRow]) -> serde_json::Value {
    serde_json::Value::Array(
        rows.iter()
            .map(|row| {
                serde_json::json!({
                    "node_id": row.id,
                    "generation": row.generation,
                    "name": row.name,
                    "address": row.address,
                    "roles": row.roles,
                    "storage_state": row.storage_state,
                    "liveness": row.liveness,
                    "status": (!row.status.is_empty()).then_some(&row.status),
                    "last_seen_ms_ago": row.last_seen.map(|d| d.as_millis() as u64),
                    "uptime_s": row.uptime.map(|d| d.as_secs()),
                    "role_status": row.role_status.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                })
            })
            .collect(),
    )
}

async fn list(addresses: &Addresses, json: bool, extra: bool) -> anyhow::Result<()> {
    let (version, rows, _) = node_rows(addresses).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows_json(&rows))?);
        return Ok(());
    }
    let mut header = vec![
        "NODE",
        "GEN",
        "NAME",
        "ADDRESS",
        "ROLES",
        "STORAGE-STATE",
        "LIVENESS",
        "LAST-SEEN",
    ];
    if extra {
        header.extend(["UPTIME", "STATUS", "ROLE-STATUS"]);
    }
    let mut table = new_table(&header);
    for row in &rows {
        let mut cells = vec![
            row.id.clone(),
            row.generation.to_string(),
            row.name.clone(),
            row.address.clone(),
            row.roles.join(" | "),
            row.storage_state.clone().unwrap_or_else(|| "-".into()),
            row.liveness.clone(),
            human(row.last_seen),
        ];
        if extra {
            cells.push(
                row.uptime
                    .map_or("-".to_owned(), |u| humantime::format_duration(u).to_string()),
            );
            cells.push(if row.status.is_empty() {
                "-".to_owned()
            } else {
                row.status.clone()
            });
            let roles: Vec<String> = row
                .role_status
                .iter()
                .map(|(role, status)| format!("{role}:{status}"))
                .collect();
            cells.push(if roles.is_empty() {
                "-".to_owned()
            } else {
                roles.join(" ")
            });
        }
        table.add_row(cells);
    }
    println!("Node Configuration (v{version})");
    println!("{table}");
    Ok(())
}

async fn set_storage_state(
    addresses: &Addresses,
    nodes: Vec<u32>,
    storage_state: StorageState,
    force: bool,
) -> anyhow::Result<()> {
    let (_, config) = nodes_config(addresses).await?;
    let admins = admin_addresses(addresses, Some(&config));
    let request = SetStorageStateRequest {
        node_ids: nodes,
        storage_state: storage_state.to_string(),
        force,
    };
    let response = on_admin(addresses, &admins, |mut client| {
        let request = request.clone();
        async move { client.set_storage_state(request).await.map(|r| r.into_inner()) }
    })
    .await?;
    let mut table = new_table(&["NODE", "BEFORE", "AFTER"]);
    for change in &response.changes {
        table.add_row(vec![
            format!("N{}", change.node_id),
            change.before.clone(),
            change.after.clone(),
        ]);
    }
    println!("{table}");
    println!("✅ Storage state updated; log-servers follow within a few seconds");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_accept_both_spellings() {
        assert_eq!(parse_node_id("N2"), Ok(2));
        assert_eq!(parse_node_id("3"), Ok(3));
        assert!(parse_node_id("N0").is_err());
        assert!(parse_node_id("two").unwrap_err().contains("expected e.g. N2"));
    }
}
