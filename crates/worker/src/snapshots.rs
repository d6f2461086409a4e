//! Snapshots of the partitions this node leads, into the `[worker.snapshots]` repository: the
//! partition's store as of one moment (at least what it had applied when asked), with the
//! metadata a restoring replica checks (cluster, partition, key range, LSN).

use std::path::PathBuf;

use restate_metadata_store::MetadataClient;
use restate_snapshots::{KeyRange, Repository, SnapshotFile, SnapshotMetadata};
use restate_types::metadata::{NODES_CONFIG_KEY, NodesConfiguration, PartitionTable};

use crate::handle::WorkerHandle;

/// Why no snapshot could be taken.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotsError {
    /// Nothing to take snapshots into (or a destination this version cannot use).
    #[error("{0}")]
    NotConfigured(String),
    #[error("partition {partition}: {reason}")]
    Failed { partition: u16, reason: String },
}

/// A snapshot this node took.
#[derive(Debug, Clone)]
pub struct CreatedSnapshot {
    pub partition_id: u16,
    pub snapshot_id: String,
    pub min_applied_lsn: u64,
    pub location: String,
    pub size_bytes: u64,
    pub entries: u64,
}

/// What taking snapshots needs besides the replicas.
pub(crate) struct Snapshotter {
    repository: Result<Repository, String>,
    num_retained: u32,
    cluster_name: String,
    node_name: String,
    /// Where exports are written before they move into the repository.
    scratch: PathBuf,
    table: PartitionTable,
    metadata: MetadataClient,
}

impl Snapshotter {
    pub(crate) fn new(config: &restate_config::Configuration, table: PartitionTable, metadata: MetadataClient) -> Self {
        let options = &config.worker.snapshots;
        let repository = match &options.destination {
            None => Err(format!(
                "node {} has no [worker.snapshots] destination: set destination = \"file:///path\" (or \
                 RESTATE_WORKER__SNAPSHOTS__DESTINATION) and restart it",
                config.node_name()
            )),
            Some(destination) => Repository::from_destination(destination).map_err(|e| e.to_string()),
        };
        if let (Some(_), Err(reason)) = (&options.destination, &repository) {
            tracing::warn!("snapshots cannot be taken: {reason}");
        }
        Self {
            repository,
            num_retained: options.num_retained,
            cluster_name: config.cluster_name.clone(),
            node_name: config.node_name().to_owned(),
            scratch: config.node_dir().join("db-snapshots"),
            table,
            metadata,
        }
    }

    /// Takes a snapshot of each partition this node leads (only of `only` if given).
    pub(crate) async fn create(
        &self,
        replicas: &WorkerHandle,
        only: Option<u16>,
    ) -> Result<Vec<CreatedSnapshot>, SnapshotsError> {
        let repository = self.repository.clone().map_err(SnapshotsError::NotConfigured)?;
        let fingerprint = match self.metadata.get_json::<NodesConfiguration>(NODES_CONFIG_KEY).await {
            Ok(Some((_, nodes))) => nodes.cluster_fingerprint.to_string(),
            Ok(None) => String::new(),
            Err(error) => {
                return Err(SnapshotsError::NotConfigured(format!(
                    "cannot read the cluster's identity from metadata: {error}"
                )));
            }
        };
        let mut created = Vec::new();
        for (store, state) in replicas.stores() {
            let partition = store.partition_id();
            let snapshot = state.snapshot();
            if !snapshot.is_leader || only.is_some_and(|only| only != partition) {
                continue;
            }
            let Some(range) = self.table.partitions.iter().find(|p| p.id == partition) else {
                continue;
            };
            let snapshot_id = restate_snapshots::new_snapshot_id();
            let min_applied_lsn = snapshot.applied_lsn;
            let dir = self.scratch.join(partition.to_string()).join(&snapshot_id);
            let metadata = SnapshotMetadata {
                version: "V1".into(),
                cluster_name: self.cluster_name.clone(),
                cluster_fingerprint: fingerprint.clone(),
                partition_id: partition,
                node_name: self.node_name.clone(),
                created_at: restate_snapshots::now_rfc3339(),
                snapshot_id: snapshot_id.clone(),
                key_range: KeyRange {
                    start: range.key_range_start,
                    end: range.key_range_end,
                },
                log_id: u32::from(partition),
                min_applied_lsn,
                files: Vec::new(),
            };
            let (repository, num_retained) = (repository.clone(), self.num_retained);
            let failed = |reason: String| SnapshotsError::Failed { partition, reason };
            let stored = tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                let exported = store
                    .export(&dir.join(restate_snapshots::DATA_FILE))
                    .map_err(|e| e.to_string());
                let stored = exported.and_then(|exported| {
                    let mut metadata = metadata;
                    metadata.files.push(SnapshotFile {
                        name: restate_snapshots::DATA_FILE.into(),
                        size: exported.size,
                        num_entries: exported.entries,
                    });
                    let location = repository
                        .put(&metadata, &dir, num_retained)
                        .map_err(|e| e.to_string())?;
                    Ok((exported, location))
                });
                // What did not move into the repository is not needed either way.
                let _ = std::fs::remove_dir_all(&dir);
                stored
            })
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(failed)?;
            let (exported, location) = stored;
            tracing::info!(partition, %snapshot_id, min_applied_lsn, location = %location.display(), "created a partition snapshot");
            created.push(CreatedSnapshot {
                partition_id: partition,
                snapshot_id,
                min_applied_lsn,
                location: format!("file://{}", location.display()),
                size_bytes: exported.size,
                entries: exported.entries,
            });
        }
        Ok(created)
    }
}
