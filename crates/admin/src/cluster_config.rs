//! The cluster configuration: partition count and replication (`partition_table`) and the
//! default log provider (`bifrost_config`), with the rules for changing them.

use restate_metadata_store::{MetadataClient, ReadModifyWrite, WriteError};
use restate_proto::cluster_ctrl::{ClusterConfiguration, SetClusterConfigurationRequest};
use restate_types::metadata::{
    BIFROST_CONFIG_KEY, LogProviderConfig, LogsConfiguration, NODES_CONFIG_KEY, NodesConfiguration,
    PARTITION_TABLE_KEY, PartitionTable,
};
use restate_types::{ReplicationProperty, Role};
use tonic::Status;

fn unavailable(error: impl std::fmt::Display) -> Status {
    Status::unavailable(error.to_string())
}

pub(crate) async fn read(metadata: &MetadataClient) -> Result<ClusterConfiguration, Status> {
    let not_provisioned =
        || Status::failed_precondition("the cluster is not provisioned yet; run `restatectl provision`");
    let (partitions_version, partitions) = metadata
        .get_json::<PartitionTable>(PARTITION_TABLE_KEY)
        .await
        .map_err(unavailable)?
        .ok_or_else(not_provisioned)?;
    let (logs_version, logs) = metadata
        .get_json::<LogsConfiguration>(BIFROST_CONFIG_KEY)
        .await
        .map_err(unavailable)?
        .ok_or_else(not_provisioned)?;
    Ok(describe(&partitions, partitions_version.0, &logs, logs_version.0))
}

fn describe(
    partitions: &PartitionTable,
    partitions_version: u32,
    logs: &LogsConfiguration,
    logs_version: u32,
) -> ClusterConfiguration {
    let (log_replication, nodeset) = match &logs.default_provider {
        LogProviderConfig::Replicated {
            replication,
            target_nodeset_size,
        } => (replication.to_string(), u32::from(*target_nodeset_size)),
        _ => (String::new(), 0),
    };
    ClusterConfiguration {
        num_partitions: partitions.num_partitions() as u32,
        partition_replication: partitions.replication.to_string(),
        log_provider: logs.default_provider.kind().to_owned(),
        log_replication,
        log_nodeset_size: nodeset,
        partition_table_version: partitions_version,
        logs_version,
    }
}

fn parse_replication(flag: &str, text: &str) -> Result<ReplicationProperty, Status> {
    text.parse()
        .map_err(|e: restate_types::ReplicationPropertyError| Status::invalid_argument(format!("{flag}: {e}")))
}

/// The new default log provider, following the rules: the provider may only change to
/// `replicated`, and log replication needs that many log-servers.
fn new_provider(
    current: &LogProviderConfig,
    request: &SetClusterConfigurationRequest,
    log_servers: usize,
) -> Result<LogProviderConfig, Status> {
    let kind = request.log_provider.as_deref().unwrap_or(current.kind());
    let replication = request
        .log_replication
        .as_deref()
        .map(|text| parse_replication("--log-replication", text))
        .transpose()?;
    let next = match (kind, current) {
        (
            "replicated",
            LogProviderConfig::Replicated {
                replication: current_replication,
                target_nodeset_size,
            },
        ) => LogProviderConfig::Replicated {
            replication: replication.unwrap_or_else(|| current_replication.clone()),
            target_nodeset_size: request
                .log_nodeset_size
                .map(|n| n.min(u32::from(u16::MAX)) as u16)
                .unwrap_or(*target_nodeset_size),
        },
        ("replicated", _) => LogProviderConfig::Replicated {
            replication: replication.unwrap_or_default(),
            target_nodeset_size: request.log_nodeset_size.unwrap_or(0).min(u32::from(u16::MAX)) as u16,
        },
        (same, current) if same == current.kind() => {
            if replication.is_some() {
                return Err(Status::invalid_argument(format!(
                    "--log-replication only applies to the replicated log provider, and the provider is `{same}`; \
                     add --log-provider replicated"
                )));
            }
            current.clone()
        }
        ("local", current) => {
            return Err(Status::failed_precondition(format!(
                "the log provider can only change to `replicated`, not from `{}` to `{kind}`",
                current.kind()
            )));
        }
        (other, _) => {
            return Err(Status::invalid_argument(format!(
                "--log-provider `{other}`: expected local or replicated"
            )));
        }
    };
    if let Some(replication) = next.replication() {
        let needed = usize::from(replication.num_copies());
        if needed > log_servers {
            return Err(Status::failed_precondition(format!(
                "log replication {replication} needs at least {needed} log-servers, but the cluster has {log_servers}"
            )));
        }
    }
    Ok(next)
}

pub(crate) async fn set(
    metadata: &MetadataClient,
    request: &SetClusterConfigurationRequest,
) -> Result<(ClusterConfiguration, ClusterConfiguration), Status> {
    let before = read(metadata).await?;
    let nodes = metadata
        .get_json::<NodesConfiguration>(NODES_CONFIG_KEY)
        .await
        .map_err(unavailable)?
        .map(|(_, nodes)| nodes)
        .ok_or_else(|| Status::failed_precondition("the cluster is not provisioned yet; run `restatectl provision`"))?;
    let log_servers = nodes.with_role(Role::LogServer).count();
    let workers = nodes.with_role(Role::Worker).count();

    let (partitions_version, partitions) = metadata
        .get_json::<PartitionTable>(PARTITION_TABLE_KEY)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| Status::failed_precondition("the partition table is missing"))?;
    let (logs_version, logs) = metadata
        .get_json::<LogsConfiguration>(BIFROST_CONFIG_KEY)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| Status::failed_precondition("the logs configuration is missing"))?;

    let provider = new_provider(&logs.default_provider, request, log_servers)?;
    if let Some(count) = request.num_partitions
        && count as usize != partitions.num_partitions()
        && partitions.num_partitions() != 0
    {
        return Err(Status::failed_precondition(format!(
            "the cluster has {} partitions; the number of partitions can only be set while it is 0 (repartitioning is \
             not supported)",
            partitions.num_partitions()
        )));
    }
    let partition_replication = request
        .partition_replication
        .as_deref()
        .map(|text| parse_replication("--partition-replication", text))
        .transpose()?
        .unwrap_or_else(|| partitions.replication.clone());
    let needed = usize::from(partition_replication.num_copies());
    if needed > workers {
        return Err(Status::failed_precondition(format!(
            "partition replication {partition_replication} needs at least {needed} worker nodes, but the cluster has {workers}"
        )));
    }
    let mut new_partitions = match request.num_partitions {
        Some(count) if partitions.num_partitions() == 0 => {
            let count = u16::try_from(count)
                .ok()
                .filter(|c| *c > 0)
                .ok_or_else(|| Status::invalid_argument(format!("--num-partitions {count}: use 1 to 65535")))?;
            PartitionTable::with_equal_ranges(count, partition_replication.clone())
        }
        _ => partitions.clone(),
    };
    new_partitions.replication = partition_replication;
    let new_logs = LogsConfiguration {
        default_provider: provider,
        logs: logs.logs.clone(),
    };
    let logs_changed = new_logs != logs;
    let partitions_changed = new_partitions != partitions;
    let after = describe(
        &new_partitions,
        partitions_version.0 + u32::from(partitions_changed),
        &new_logs,
        logs_version.0 + u32::from(logs_changed),
    );
    if request.dry_run {
        return Ok((before, after));
    }
    if logs_changed {
        let provider = new_logs.default_provider.clone();
        metadata
            .read_modify_write(BIFROST_CONFIG_KEY, |current: Option<&LogsConfiguration>| {
                let mut next = current
                    .cloned()
                    .ok_or_else(|| WriteError::Rejected("the logs configuration vanished".into()))?;
                next.default_provider = provider.clone();
                Ok(ReadModifyWrite::Write(next))
            })
            .await
            .map_err(|e| Status::aborted(format!("updating `{BIFROST_CONFIG_KEY}`: {e}")))?;
    }
    if partitions_changed {
        let target = new_partitions.clone();
        metadata
            .read_modify_write(PARTITION_TABLE_KEY, |current: Option<&PartitionTable>| {
                let current = current.ok_or_else(|| WriteError::Rejected("the partition table vanished".into()))?;
                if current.num_partitions() != partitions.num_partitions() {
                    return Err(WriteError::Rejected(
                        "the partition table changed concurrently; try again".into(),
                    ));
                }
                Ok(ReadModifyWrite::Write(target.clone()))
            })
            .await
            .map_err(|e| Status::aborted(format!("updating `{PARTITION_TABLE_KEY}`: {e}")))?;
    }
    let after = read(metadata).await?;
    Ok((before, after))
}
