//! Joining the cluster: registering this node in `nodes_config` by compare-and-swap.
//!
//! A known node name keeps its id and gets the next generation (`N<id>:<gen>`); a new name
//! gets the highest id + 1 (or `force-node-id`). Until the cluster is provisioned the node
//! waits and says so in its health.

use std::time::{Duration, Instant};

use restate_metadata_store::{ReadModifyWrite, WriteError};
use restate_types::metadata::{NODES_CONFIG_KEY, NodeConfig, NodesConfiguration, Version};
use restate_types::{GenerationalNodeId, NodeStatus, PlainNodeId};

use crate::context::NodeContext;

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("{0}")]
    Refused(String),
    #[error("the node did not join its cluster within `initialization-timeout` ({timeout:?}): {last}")]
    TimedOut { timeout: Duration, last: String },
}

/// The node's place in the cluster after joining.
pub(crate) struct Joined {
    pub(crate) node_id: GenerationalNodeId,
    pub(crate) nodes_config: NodesConfiguration,
    pub(crate) version: Version,
}

pub(crate) async fn join_cluster(ctx: &NodeContext) -> Result<Joined, JoinError> {
    let config = &ctx.config;
    let timeout = config.initialization_timeout;
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(100);
    let mut last = String::new();
    ctx.health.set_status(NodeStatus::StartingUp, "joining the cluster");
    loop {
        let detail = match ctx.metadata.get_json::<NodesConfiguration>(NODES_CONFIG_KEY).await {
            Ok(None) => "awaiting provisioning: the cluster has no nodes configuration yet; provision it with \
                         `restatectl provision` or `auto-provision = true`"
                .to_owned(),
            Ok(Some((_, nodes))) if nodes.cluster_name != config.cluster_name => {
                return Err(JoinError::Refused(format!(
                    "the metadata store holds cluster `{}`, but this node is configured for cluster `{}`",
                    nodes.cluster_name, config.cluster_name
                )));
            }
            Ok(Some(_)) => match register(ctx).await {
                Ok(joined) => return Ok(joined),
                Err(WriteError::Rejected(reason)) => return Err(JoinError::Refused(reason)),
                Err(error) => format!("registering in the nodes configuration failed: {error}"),
            },
            Err(error)
                if error
                    .to_string()
                    .contains(restate_metadata_store::AWAITING_PROVISIONING) =>
            {
                "awaiting provisioning: no metadata server is provisioned yet; provision the cluster with \
                 `restatectl provision` or `auto-provision = true`"
                    .to_owned()
            }
            Err(error) if error.is_retryable() => format!("waiting for the metadata store: {error}"),
            Err(error) => return Err(JoinError::Refused(error.to_string())),
        };
        if detail != last {
            tracing::info!("{detail}");
            ctx.health.set_status(NodeStatus::StartingUp, detail.clone());
            last = detail;
        }
        if Instant::now() + pause > deadline {
            return Err(JoinError::TimedOut { timeout, last });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

async fn register(ctx: &NodeContext) -> Result<Joined, WriteError> {
    let config = &ctx.config;
    let name = config.node_name().to_owned();
    let address = config.advertised_address().to_string();
    let (version, nodes) = ctx
        .metadata
        .read_modify_write(NODES_CONFIG_KEY, |current: Option<&NodesConfiguration>| {
            let Some(current) = current else {
                return Err(WriteError::Unavailable("the cluster is not provisioned yet".into()));
            };
            let mut nodes = current.clone();
            let entry = match nodes.find_by_name(&name).cloned() {
                Some(existing) => {
                    if let Some(forced) = config.force_node_id
                        && forced != existing.id.0
                    {
                        return Err(WriteError::Rejected(format!(
                            "node `{name}` is {} in the cluster, but `force-node-id` is {forced}; remove force-node-id or use it unchanged",
                            existing.id
                        )));
                    }
                    NodeConfig {
                        generation: existing.generation + 1,
                        address: address.clone(),
                        roles: config.roles.clone(),
                        location: config.location.clone().or(existing.location.clone()),
                        binary_version: restate_types::BINARY_VERSION.to_owned(),
                        ..existing
                    }
                }
                None => {
                    let id = match config.force_node_id {
                        Some(forced) => {
                            let forced = PlainNodeId(forced);
                            if let Some(holder) = nodes.nodes.get(&forced) {
                                return Err(WriteError::Rejected(format!(
                                    "`force-node-id` {forced} is already held by node `{}`",
                                    holder.name
                                )));
                            }
                            forced
                        }
                        None => nodes.next_free_id(),
                    };
                    NodeConfig {
                        id,
                        generation: 1,
                        name: name.clone(),
                        address: address.clone(),
                        roles: config.roles.clone(),
                        location: config.location.clone(),
                        log_server_state: Default::default(),
                        binary_version: restate_types::BINARY_VERSION.to_owned(),
                    }
                }
            };
            nodes.nodes.insert(entry.id, entry);
            Ok(ReadModifyWrite::Write(nodes))
        })
        .await?;
    let node = nodes
        .find_by_name(&name)
        .ok_or_else(|| WriteError::Unavailable("the registration vanished; retrying".into()))?;
    let node_id = node.generational_id();
    tracing::info!(%node_id, nodes_config_version = version.0, "joined the cluster");
    Ok(Joined {
        node_id,
        nodes_config: nodes,
        version,
    })
}
