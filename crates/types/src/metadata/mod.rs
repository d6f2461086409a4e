//! Cluster metadata: the objects kept in the metadata store and the store's value model.
//!
//! Objects are stored as JSON so operators can read them with `restatectl metadata get`.

mod logs;
mod nodes;
mod partitions;
mod placement;
mod value;

pub use logs::{
    Chain, FIRST_LSN, LogProviderConfig, LogletParams, LogsConfiguration, Lsn, ReplicatedParams, Segment,
    display_loglet_id, loglet_id,
};
pub use nodes::{NodeConfig, NodesConfiguration, StorageState};
pub use partitions::{Partition, PartitionTable};
pub use placement::PartitionPlacement;
pub use value::{Precondition, Version, VersionedValue};

/// Key of the [`NodesConfiguration`].
pub const NODES_CONFIG_KEY: &str = "nodes_config";
/// Key of the [`LogsConfiguration`].
pub const BIFROST_CONFIG_KEY: &str = "bifrost_config";
/// Key of the [`PartitionTable`].
pub const PARTITION_TABLE_KEY: &str = "partition_table";
/// Key of the [`PartitionPlacement`].
pub const PARTITION_PLACEMENT_KEY: &str = "partition_placement";
/// Key of the service schema registry (written by the admin API).
pub const SCHEMA_REGISTRY_KEY: &str = "schema_registry";
/// Prefix of the per-partition leader epoch keys.
pub const PARTITION_EPOCH_PREFIX: &str = "pp_epoch";

/// Keys the cluster owns; the admin HTTP metadata API refuses to change them.
pub fn is_system_key(key: &str) -> bool {
    matches!(
        key,
        NODES_CONFIG_KEY | BIFROST_CONFIG_KEY | PARTITION_TABLE_KEY | PARTITION_PLACEMENT_KEY | SCHEMA_REGISTRY_KEY
    ) || key.starts_with(PARTITION_EPOCH_PREFIX)
}

/// Checks a user-chosen metadata key: non-empty, printable ASCII without spaces or `/`.
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the key is empty".into());
    }
    if key.len() > 512 {
        return Err(format!("the key is {} bytes long; at most 512 are allowed", key.len()));
    }
    if let Some(bad) = key.chars().find(|c| !c.is_ascii_graphic() || *c == '/') {
        return Err(format!(
            "the key `{key}` contains {bad:?}; use letters, digits and punctuation other than `/`"
        ));
    }
    Ok(())
}
