//! The cluster controller's placement of partition replicas: `replication` copies of each
//! partition on the nodes with the `worker` role, balanced, kept in `partition_placement`.
//! Replicas follow membership (a node that joins gets its share, one that leaves the nodes
//! configuration is replaced), not liveness: a dead node's partitions fail over to the other
//! members of their sets, and its replicas are still its when it comes back.

use restate_metadata_store::{MetadataClient, ReadModifyWrite};
use restate_types::Role;
use restate_types::metadata::{
    NODES_CONFIG_KEY, NodesConfiguration, PARTITION_PLACEMENT_KEY, PARTITION_TABLE_KEY, PartitionPlacement,
    PartitionTable,
};

/// Plans the placement from the current partition table and worker nodes and stores it if it
/// changed. Returns whether it did.
pub async fn update_placement(metadata: &MetadataClient) -> Result<bool, String> {
    let Some((_, table)) = metadata
        .get_json::<PartitionTable>(PARTITION_TABLE_KEY)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(false);
    };
    let Some((_, nodes)) = metadata
        .get_json::<NodesConfiguration>(NODES_CONFIG_KEY)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(false);
    };
    let workers: Vec<_> = nodes.with_role(Role::Worker).map(|node| node.id).collect();
    if workers.is_empty() {
        return Ok(false);
    }
    let partitions: Vec<u16> = table.partitions.iter().map(|p| p.id).collect();
    let copies = usize::from(table.replication.num_copies());
    let mut changed = false;
    metadata
        .read_modify_write(PARTITION_PLACEMENT_KEY, |current: Option<&PartitionPlacement>| {
            let current = current.cloned().unwrap_or_default();
            let planned = PartitionPlacement::plan(&current, &partitions, &workers, copies);
            changed = planned != current;
            Ok(match changed {
                true => ReadModifyWrite::Write(planned),
                false => ReadModifyWrite::Keep,
            })
        })
        .await
        .map_err(|e| e.to_string())?;
    if changed {
        tracing::info!(workers = workers.len(), copies, "placed the partition replicas");
    }
    Ok(changed)
}
