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

/// What taking and restoring snapshots needs besides the replicas.
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

    /// Fills the empty store of `partition` from the newest readable snapshot in the
    /// repository (an older retained one if the newest cannot be read); returns the LSN the
    /// snapshot had applied at least, or `None` when there is no repository or no snapshot.
    /// A snapshot of another cluster or of another key range is refused with an error that
    /// names it. Blocking: run it off the async workers.
    pub(crate) fn restore_blocking(
        &self,
        store: &restate_partition_store::PartitionStore,
        fingerprint: Option<&str>,
    ) -> Result<Option<u64>, String> {
        let Ok(repository) = &self.repository else {
            return Ok(None);
        };
        let partition = store.partition_id();
        let Some(latest) = repository.latest(partition).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let Some(range) = self.table.partitions.iter().find(|p| p.id == partition) else {
            return Ok(None);
        };
        let mut unreadable = Vec::new();
        for candidate in &latest.retained_snapshots {
            let metadata = match repository.metadata(partition, &candidate.path) {
                Ok(metadata) => metadata,
                Err(error) => {
                    tracing::warn!(partition, snapshot = %candidate.snapshot_id, %error, "cannot read a snapshot; trying an older one");
                    unreadable.push(format!("{}: {error}", candidate.snapshot_id));
                    continue;
                }
            };
            let foreign_cluster = metadata.cluster_name != self.cluster_name
                || fingerprint.is_some_and(|ours| !ours.is_empty() && metadata.cluster_fingerprint != ours);
            if foreign_cluster {
                return Err(format!(
                    "snapshot {} of partition {partition} in {} belongs to cluster `{}` (fingerprint {}), not to this \
                     cluster `{}`: point [worker.snapshots] destination at this cluster's snapshots",
                    metadata.snapshot_id,
                    repository.describe(),
                    metadata.cluster_name,
                    metadata.cluster_fingerprint,
                    self.cluster_name
                ));
            }
            if metadata.partition_id != partition
                || metadata.key_range.start != range.key_range_start
                || metadata.key_range.end != range.key_range_end
            {
                return Err(format!(
                    "snapshot {} in {} is of partition {} with keys {}..={}, but partition {partition} owns keys \
                     {}..={}: it cannot be restored here",
                    metadata.snapshot_id,
                    repository.describe(),
                    metadata.partition_id,
                    metadata.key_range.start,
                    metadata.key_range.end,
                    range.key_range_start,
                    range.key_range_end
                ));
            }
            // The repository's file stays: import a copy (the import moves its file).
            let scratch = self
                .scratch
                .join(partition.to_string())
                .join(format!("restore-{}", metadata.snapshot_id));
            let imported = std::fs::create_dir_all(&scratch)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    let copy = scratch.join(restate_snapshots::DATA_FILE);
                    repository
                        .copy_file(partition, &candidate.path, restate_snapshots::DATA_FILE, &copy)
                        .map_err(|e| e.to_string())?;
                    store.import(&copy).map_err(|e| e.to_string())
                });
            let _ = std::fs::remove_dir_all(&scratch);
            match imported {
                Ok(()) => {
                    tracing::info!(partition, snapshot = %metadata.snapshot_id, min_applied_lsn = metadata.min_applied_lsn, "restored the partition from a snapshot");
                    return Ok(Some(metadata.min_applied_lsn));
                }
                Err(error) => {
                    tracing::warn!(partition, snapshot = %metadata.snapshot_id, %error, "cannot restore a snapshot; trying an older one");
                    unreadable.push(format!("{}: {error}", metadata.snapshot_id));
                }
            }
        }
        Err(format!(
            "no snapshot of partition {partition} in {} could be restored ({})",
            repository.describe(),
            unreadable.join("; ")
        ))
    }

    /// The cluster's fingerprint as metadata has it (`None` if it cannot be read now).
    pub(crate) async fn fingerprint(&self) -> Option<String> {
        match self.metadata.get_json::<NodesConfiguration>(NODES_CONFIG_KEY).await {
            Ok(Some((_, nodes))) => Some(nodes.cluster_fingerprint.to_string()),
            _ => None,
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
