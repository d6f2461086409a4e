//! `restatectl metadata-server list-servers|add-node|remove-node`.

use anyhow::{anyhow, bail};
use clap::Subcommand;
use futures::future::join_all;
use restate_proto::metadata_server::metadata_server_svc_client::MetadataServerSvcClient;
use restate_proto::metadata_server::{AddNodeRequest, RemoveNodeRequest, StatusRequest, StatusResponse};
use restate_types::{PlainNodeId, Role};

use crate::connection::{Addresses, call_error};
use crate::table::new_table;

#[derive(Debug, Subcommand)]
pub(crate) enum MetadataServerCommand {
    /// Every metadata server with its Raft state.
    #[command(alias = "ls")]
    ListServers {
        #[arg(long)]
        json: bool,
    },
    /// Make nodes' metadata servers voting members.
    #[command(alias = "add")]
    AddNode {
        /// Node ids, e.g. N2 or 2 (comma-separated or repeated).
        #[arg(value_delimiter = ',', required_unless_present = "node")]
        nodes: Vec<PlainNodeId>,
        /// A node id (same as giving it as an argument).
        #[arg(long)]
        node: Option<PlainNodeId>,
    },
    /// Remove nodes' metadata servers from the members (not the last one).
    #[command(alias = "rm")]
    RemoveNode {
        /// Node ids, e.g. N2 or 2 (comma-separated or repeated).
        #[arg(value_delimiter = ',', required_unless_present = "node")]
        nodes: Vec<PlainNodeId>,
        /// A node id (same as giving it as an argument).
        #[arg(long)]
        node: Option<PlainNodeId>,
    },
}

fn all_nodes(mut nodes: Vec<PlainNodeId>, node: Option<PlainNodeId>) -> Vec<PlainNodeId> {
    nodes.extend(node);
    let mut seen = Vec::new();
    nodes.retain(|n| {
        let new = !seen.contains(n);
        seen.push(*n);
        new
    });
    nodes
}

pub(crate) async fn run(command: MetadataServerCommand, addresses: &Addresses) -> anyhow::Result<()> {
    match command {
        MetadataServerCommand::ListServers { json } => list(addresses, json).await,
        MetadataServerCommand::AddNode { nodes, node } => {
            for node in all_nodes(nodes, node) {
                add_node(addresses, node).await?;
            }
            Ok(())
        }
        MetadataServerCommand::RemoveNode { nodes, node } => {
            for node in all_nodes(nodes, node) {
                remove_node(addresses, node).await?;
            }
            Ok(())
        }
    }
}

/// (node label, address) of every metadata server: from the nodes configuration when the
/// cluster is provisioned, else the given addresses.
async fn servers(addresses: &Addresses) -> anyhow::Result<Vec<(String, String)>> {
    match addresses.nodes_config().await {
        Ok(Some((_, nodes))) => Ok(nodes
            .with_role(Role::MetadataServer)
            .map(|node| (node.id.to_string(), node.address.clone()))
            .collect()),
        Ok(None) | Err(_) => Ok(addresses
            .addresses
            .iter()
            .map(|a| ("?".to_owned(), a.clone()))
            .collect()),
    }
}

async fn status_of(addresses: &Addresses, address: &str) -> anyhow::Result<StatusResponse> {
    let mut client = MetadataServerSvcClient::new(addresses.channel(address)?);
    Ok(client
        .status(StatusRequest {})
        .await
        .map_err(|status| call_error(address, &status))?
        .into_inner())
}

async fn list(addresses: &Addresses, json: bool) -> anyhow::Result<()> {
    let servers = servers(addresses).await?;
    let statuses = join_all(servers.iter().map(|(_, address)| status_of(addresses, address))).await;
    if statuses.iter().all(Result::is_err) {
        let first = statuses.into_iter().find_map(Result::err);
        return Err(first.unwrap_or_else(|| anyhow!("no metadata server is known")));
    }
    if json {
        let rows: Vec<serde_json::Value> = servers
            .iter()
            .zip(&statuses)
            .map(|((label, address), status)| match status {
                Ok(s) => serde_json::json!({
                    "node": label, "address": address, "status": s.status,
                    "leader": s.leader_id.map(|id| format!("N{id}")), "term": s.term,
                    "members": s.members.iter().filter(|m| m.voter).map(|m| format!("N{}", m.node_id)).collect::<Vec<_>>(),
                    "applied": s.applied_index, "committed": s.committed_index,
                    "snapshot_index": s.snapshot_index, "storage_id": s.storage_id,
                }),
                Err(e) => serde_json::json!({"node": label, "address": address, "status": "UNREACHABLE", "error": e.to_string()}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let mut table = new_table(&[
        "NODE",
        "STATUS",
        "CONFIG",
        "LEADER",
        "MEMBERS",
        "APPLIED",
        "COMMITTED",
        "TERM",
        "LOG-LENGTH",
        "SNAP-INDEX",
    ]);
    for ((label, address), status) in servers.iter().zip(&statuses) {
        match status {
            Ok(s) => {
                let voters: Vec<String> = s
                    .members
                    .iter()
                    .filter(|m| m.voter)
                    .map(|m| format!("N{}", m.node_id))
                    .collect();
                table.add_row(vec![
                    s.node_id.map_or(label.clone(), |id| format!("N{id}")),
                    s.status.clone(),
                    format!("v{}", s.configuration_version),
                    s.leader_id.map_or("-".to_owned(), |id| format!("N{id}")),
                    format!("[{}]", voters.join(",")),
                    s.applied_index.to_string(),
                    s.committed_index.to_string(),
                    s.term.to_string(),
                    s.last_log_index.saturating_sub(s.snapshot_index).to_string(),
                    s.snapshot_index.to_string(),
                ]);
            }
            Err(_) => {
                table.add_row(vec![label.clone(), format!("UNREACHABLE ({address})")]);
            }
        }
    }
    println!("Metadata service");
    println!("{table}");
    Ok(())
}

async fn add_node(addresses: &Addresses, node: PlainNodeId) -> anyhow::Result<()> {
    let Some((_, nodes)) = addresses.nodes_config().await? else {
        bail!("the cluster is not provisioned; run `restatectl provision` first");
    };
    let Some(target) = nodes.nodes.get(&node) else {
        bail!("{node} is not in the nodes configuration");
    };
    if !target.roles.contains(&Role::MetadataServer) {
        bail!("{node} does not run the metadata-server role");
    }
    let mut client = MetadataServerSvcClient::new(addresses.channel(&target.address)?);
    client
        .add_node(AddNodeRequest {})
        .await
        .map_err(|status| call_error(&target.address, &status))?;
    println!("✅ {node} is a voting member of the metadata cluster");
    Ok(())
}

async fn remove_node(addresses: &Addresses, node: PlainNodeId) -> anyhow::Result<()> {
    let servers = servers(addresses).await?;
    let mut leader_address = None;
    for (_, address) in &servers {
        if let Ok(status) = status_of(addresses, address).await
            && !status.leader_address.is_empty()
        {
            leader_address = Some(status.leader_address);
            break;
        }
    }
    let Some(leader) = leader_address else {
        bail!("no metadata server knows a leader; a majority of the members must be up to remove one");
    };
    let mut client = MetadataServerSvcClient::new(addresses.channel(&leader)?);
    client
        .remove_node(RemoveNodeRequest {
            node_id: node.0,
            storage_id: None,
        })
        .await
        .map_err(|status| call_error(&leader, &status))?;
    println!("✅ {node} was removed from the metadata cluster");
    Ok(())
}
