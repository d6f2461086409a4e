//! Provisioning: writes the first cluster metadata (`nodes_config`, then `bifrost_config`,
//! then `partition_table`), each with `DoesNotExist`, so running it twice changes nothing.
//!
//! Auto-provisioning is safe with several nodes configured to do it: with the replicated
//! store only the node at the lowest configured metadata address provisions, only once it
//! sees a majority of those addresses, and never when one of them already belongs to a
//! provisioned cluster.

use std::time::Duration;

use restate_config::{Configuration, LogProviderKind, MetadataClientKind};
use restate_proto::metadata_server::StatusRequest;
use restate_proto::metadata_server::metadata_server_svc_client::MetadataServerSvcClient;
use restate_types::metadata::{
    BIFROST_CONFIG_KEY, LogProviderConfig, LogsConfiguration, NODES_CONFIG_KEY, NodeConfig, NodesConfiguration,
    PARTITION_TABLE_KEY, PartitionTable, Precondition, Version,
};
use restate_types::{ClusterFingerprint, PlainNodeId, ReplicationProperty};

use crate::context::NodeContext;

/// What provisioning writes besides the nodes configuration.
#[derive(Debug, Clone)]
pub(crate) struct ProvisionParams {
    pub(crate) num_partitions: u16,
    pub(crate) partition_replication: ReplicationProperty,
    pub(crate) log_provider: LogProviderConfig,
}

impl ProvisionParams {
    pub(crate) fn from_config(config: &Configuration) -> Self {
        let log_provider = match config.bifrost.default_provider {
            LogProviderKind::Local => LogProviderConfig::Local,
            LogProviderKind::Replicated => LogProviderConfig::Replicated {
                replication: config.default_replication.clone(),
                target_nodeset_size: config.bifrost.replicated_loglet.default_nodeset_size,
            },
        };
        Self {
            num_partitions: config.default_num_partitions,
            partition_replication: config.default_replication.clone(),
            log_provider,
        }
    }
}

impl ProvisionParams {
    /// What will not work right away: replication above the nodes this node knows of (with
    /// the replicated metadata store: its configured members). Nodes join after provisioning,
    /// so this warns instead of refusing; appends and partitions wait, saying why, until
    /// enough nodes have joined. With an external store nothing tells how many will join.
    pub(crate) fn warnings(&self, config: &Configuration) -> Vec<String> {
        if config.metadata_client.kind != MetadataClientKind::Replicated {
            return Vec::new();
        }
        let mut addresses: Vec<String> = config
            .metadata_client
            .addresses
            .iter()
            .map(|a| restate_net::normalize_address(a))
            .collect();
        addresses.sort();
        addresses.dedup();
        let known = addresses.len().max(1);
        let source = "`[metadata-client] addresses`";
        let mut warnings = Vec::new();
        let mut check = |what: &str, replication: &ReplicationProperty, role: &str| {
            let needed = usize::from(replication.num_copies());
            if needed > known {
                warnings.push(format!(
                    "{what} {replication} needs at least {needed} nodes with the {role} role, but only {known} \
                     node(s) are known ({source}); until {needed} have joined, this waits and says why. \
                     Lower it with `restatectl config set` if fewer nodes will join"
                ));
            }
        };
        if let Some(replication) = self.log_provider.replication() {
            check("log replication", replication, "log-server");
        }
        check("partition replication", &self.partition_replication, "worker");
        warnings
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProvisionError {
    #[error("the cluster is already provisioned{0}")]
    AlreadyProvisioned(String),
    #[error("{0}")]
    Invalid(String),
    #[error("provisioning failed: {0}")]
    Failed(String),
}

/// Provisions the cluster through this node. Returns the fingerprint of the new cluster.
pub(crate) async fn provision(
    ctx: &NodeContext,
    params: &ProvisionParams,
) -> Result<ClusterFingerprint, ProvisionError> {
    let config = &ctx.config;
    let fingerprint = ClusterFingerprint::generate();
    let mut nodes = NodesConfiguration::new(&config.cluster_name, fingerprint);
    let id = PlainNodeId(config.force_node_id.unwrap_or(1));
    nodes.nodes.insert(
        id,
        NodeConfig {
            id,
            // Generation 0: registered by provisioning; the node's join makes it 1.
            generation: 0,
            name: config.node_name().to_owned(),
            address: config.advertised_address().to_string(),
            roles: config.roles.clone(),
            location: config.location.clone(),
            log_server_state: Default::default(),
            binary_version: restate_types::BINARY_VERSION.to_owned(),
        },
    );
    let bytes = serde_json::to_vec(&nodes).map_err(|e| ProvisionError::Failed(e.to_string()))?;

    let newly = match config.metadata_client.kind {
        MetadataClientKind::Replicated => {
            let Some(server) = &ctx.metadata_server else {
                return Err(ProvisionError::Invalid(
                    "with the replicated metadata store, provision through a node that has the metadata-server role"
                        .into(),
                ));
            };
            if let Some(existing) = provisioned_peer(ctx).await {
                return Err(ProvisionError::AlreadyProvisioned(existing));
            }
            server
                .provision(id.0, bytes, Version::MIN)
                .await
                .map_err(|e| ProvisionError::Failed(e.to_string()))?
        }
        _ => match ctx
            .metadata
            .put(
                NODES_CONFIG_KEY,
                restate_types::metadata::VersionedValue::new(Version::MIN, bytes),
                Precondition::DoesNotExist,
            )
            .await
        {
            Ok(()) => true,
            Err(error) if error.is_precondition_failure() => false,
            Err(error) => return Err(ProvisionError::Failed(error.to_string())),
        },
    };
    if !newly {
        return Err(ProvisionError::AlreadyProvisioned(String::new()));
    }
    ctx.learn_fingerprint(fingerprint.0);
    write_logs_and_partitions(ctx, params).await?;
    tracing::info!(
        cluster = %config.cluster_name,
        %fingerprint,
        partitions = params.num_partitions,
        log_provider = params.log_provider.kind(),
        "provisioned the cluster"
    );
    Ok(fingerprint)
}

/// Writes `bifrost_config` and `partition_table` unless they exist.
async fn write_logs_and_partitions(ctx: &NodeContext, params: &ProvisionParams) -> Result<(), ProvisionError> {
    let logs = LogsConfiguration {
        default_provider: params.log_provider.clone(),
        logs: Default::default(),
    };
    write_if_absent(ctx, BIFROST_CONFIG_KEY, &logs).await?;
    let partitions = PartitionTable::with_equal_ranges(params.num_partitions, params.partition_replication.clone());
    write_if_absent(ctx, PARTITION_TABLE_KEY, &partitions).await
}

/// Waits until provisioning has written the logs configuration and the partition table. A
/// provisioner that stopped half-way (after `nodes_config`) would leave them missing: after
/// a grace period this node completes provisioning with its own defaults (only if absent).
pub(crate) async fn await_complete_provisioning(ctx: &NodeContext) -> Result<(), ProvisionError> {
    const GRACE: Duration = Duration::from_secs(5);
    let started = std::time::Instant::now();
    loop {
        let logs = ctx.metadata.get_version(BIFROST_CONFIG_KEY).await;
        let partitions = ctx.metadata.get_version(PARTITION_TABLE_KEY).await;
        match (logs, partitions) {
            (Ok(Some(_)), Ok(Some(_))) => return Ok(()),
            (Ok(_), Ok(_)) if started.elapsed() > GRACE => {
                tracing::warn!(
                    "provisioning stopped before writing the logs configuration or the partition table; completing it \
                     with this node's defaults"
                );
                return write_logs_and_partitions(ctx, &ProvisionParams::from_config(&ctx.config)).await;
            }
            (Err(error), _) | (_, Err(error)) if !error.is_retryable() => {
                return Err(ProvisionError::Failed(error.to_string()));
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn write_if_absent<T: serde::Serialize>(ctx: &NodeContext, key: &str, object: &T) -> Result<(), ProvisionError> {
    match ctx
        .metadata
        .put_json(key, Version::MIN, object, Precondition::DoesNotExist)
        .await
    {
        Ok(()) => Ok(()),
        Err(error) if error.is_precondition_failure() => Ok(()),
        Err(error) => Err(ProvisionError::Failed(format!("writing `{key}`: {error}"))),
    }
}

/// A configured metadata server that already belongs to a provisioned cluster, if any.
async fn provisioned_peer(ctx: &NodeContext) -> Option<String> {
    let own = ctx.config.advertised_address().to_string();
    for address in &ctx.config.metadata_client.addresses {
        let address = restate_net::normalize_address(address);
        if address == own {
            continue;
        }
        if let Some(status) = peer_status(ctx, &address).await
            && status.fingerprint != 0
        {
            return Some(format!(
                ": the metadata server at {address} belongs to cluster `{}` ({})",
                status.cluster_name,
                ClusterFingerprint(status.fingerprint)
            ));
        }
    }
    None
}

async fn peer_status(ctx: &NodeContext, address: &str) -> Option<restate_proto::metadata_server::StatusResponse> {
    let timeout = Duration::from_secs(1);
    let channel = restate_net::channel(address, ctx.config.networking.connect_timeout.min(timeout), timeout).ok()?;
    let mut client = MetadataServerSvcClient::new(channel);
    client.status(StatusRequest {}).await.ok().map(|r| r.into_inner())
}

/// Runs at start when `auto-provision` is on and the node has not joined a cluster yet.
pub(crate) async fn auto_provision(ctx: &NodeContext) {
    let config = &ctx.config;
    let params = ProvisionParams::from_config(config);
    if config.metadata_client.kind == MetadataClientKind::Replicated {
        if ctx.metadata_server.is_none() {
            return;
        }
        let own = config.advertised_address().to_string();
        let mut addresses: Vec<String> = config
            .metadata_client
            .addresses
            .iter()
            .map(|a| restate_net::normalize_address(a))
            .collect();
        addresses.sort();
        addresses.dedup();
        if !addresses.is_empty() {
            let lowest = &addresses[0];
            if *lowest != own {
                let reason = if addresses.contains(&own) {
                    format!("the node at the lowest metadata address {lowest} provisions")
                } else {
                    format!(
                        "this node's advertised-address {own} is not among [metadata-client] addresses; the node at {lowest} provisions"
                    )
                };
                tracing::info!("auto-provision: {reason}");
                return;
            }
            if !wait_for_majority(ctx, &addresses, &own).await {
                return;
            }
        }
    }
    match provision(ctx, &params).await {
        Ok(_) => {
            for warning in params.warnings(config) {
                tracing::warn!("auto-provision: {warning}");
            }
        }
        Err(ProvisionError::AlreadyProvisioned(detail)) => {
            tracing::info!("auto-provision: the cluster is already provisioned{detail}");
        }
        Err(error) => tracing::warn!("auto-provision: {error}"),
    }
}

/// Waits until a majority of `addresses` answers, none of them provisioned. Returns false if a
/// provisioned peer was found (then there is nothing to provision).
async fn wait_for_majority(ctx: &NodeContext, addresses: &[String], own: &str) -> bool {
    let needed = addresses.len() / 2 + 1;
    let mut reported = 0;
    loop {
        if let Some(server) = &ctx.metadata_server
            && server.status_response().fingerprint != 0
        {
            return false;
        }
        let mut reachable = usize::from(addresses.iter().any(|a| a == own));
        for address in addresses.iter().filter(|a| *a != own) {
            if let Some(status) = peer_status(ctx, address).await {
                if status.fingerprint != 0 {
                    tracing::info!("auto-provision: {address} already belongs to a provisioned cluster");
                    return false;
                }
                reachable += 1;
            }
        }
        if reachable >= needed {
            return true;
        }
        if reachable != reported {
            reported = reachable;
            tracing::info!(
                "auto-provision waits to see a majority of the metadata servers ({reachable} of {} reachable, {needed} needed)",
                addresses.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
