//! Snapshots of the partitions this node leads, into the `[worker.snapshots]` repository: the
//! partition's store as of one moment (at least what it had applied when asked), with the
//! metadata a restoring replica checks (cluster, partition, key range, LSN).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use restate_bifrost::Bifrost;
use restate_metadata_store::MetadataClient;
use restate_snapshots::{KeyRange, Repository, SnapshotFile, SnapshotMetadata};
use restate_types::metadata::{NODES_CONFIG_KEY, NodesConfiguration, PartitionTable};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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
    /// With `--trim-log`: the log's trim point after the trim.
    pub trim_point: Option<u64>,
}

/// A snapshot in the repository.
#[derive(Debug, Clone)]
pub struct ListedSnapshot {
    pub partition_id: u16,
    pub snapshot_id: String,
    pub min_applied_lsn: u64,
    pub created_at: String,
    pub location: String,
    /// The one the partition's `latest.json` points at.
    pub latest: bool,
}

/// What taking and restoring snapshots needs besides the replicas.
pub(crate) struct Snapshotter {
    repository: Result<Repository, String>,
    num_retained: u32,
    /// `snapshot-interval`: automatic snapshots at most this often.
    interval: Option<Duration>,
    /// `snapshot-interval-num-records`: automatic snapshots after this many new records.
    num_records: Option<u64>,
    cluster_name: String,
    node_name: String,
    /// Where exports are written before they move into the repository.
    scratch: PathBuf,
    table: PartitionTable,
    metadata: MetadataClient,
    bifrost: Bifrost,
}

impl Snapshotter {
    /// Opens the repository of `[worker.snapshots]` (on the runtime its S3 requests will use).
    pub(crate) async fn new(
        config: &restate_config::Configuration,
        table: PartitionTable,
        metadata: MetadataClient,
        bifrost: Bifrost,
    ) -> Self {
        let options = &config.worker.snapshots;
        let aws = restate_aws::aws_settings!(options, "[worker.snapshots]");
        let repository = match &options.destination {
            None => Err(format!(
                "node {} has no [worker.snapshots] destination: set destination = \"s3://bucket/prefix\" or \
                 \"file:///path\" (or RESTATE_WORKER__SNAPSHOTS__DESTINATION) and restart it",
                config.node_name()
            )),
            Some(destination) => Repository::open(destination, &aws).await.map_err(|e| e.to_string()),
        };
        if let (Some(_), Err(reason)) = (&options.destination, &repository) {
            tracing::warn!("snapshots cannot be taken: {reason}");
        }
        Self {
            repository,
            num_retained: options.num_retained,
            interval: options.snapshot_interval.filter(|interval| !interval.is_zero()),
            num_records: options.snapshot_interval_num_records.filter(|n| *n > 0),
            cluster_name: config.cluster_name.clone(),
            node_name: config.node_name().to_owned(),
            scratch: config.node_dir().join("db-snapshots"),
            table,
            metadata,
            bifrost,
        }
    }

    /// Whether snapshots can be taken and restored at all.
    pub(crate) fn has_repository(&self) -> bool {
        self.repository.is_ok()
    }

    /// The LSN of the partition's oldest retained snapshot (see
    /// [`LatestSnapshot::archived_lsn`](restate_snapshots::LatestSnapshot::archived_lsn)); `None`
    /// without a repository, without a snapshot, or while the repository cannot be read.
    /// Blocking.
    pub(crate) fn archived_lsn_blocking(&self, partition: u16) -> Option<u64> {
        let repository = self.repository.as_ref().ok()?;
        match repository.latest(partition) {
            Ok(latest) => latest.map(|latest| latest.archived_lsn()),
            Err(error) => {
                tracing::debug!(partition, %error, "cannot read the partition's latest snapshot");
                None
            }
        }
    }

    /// The snapshots in the repository, newest first per partition (only `only`'s if given).
    /// Blocking.
    pub(crate) fn list_blocking(&self, only: Option<u16>) -> Result<(String, Vec<ListedSnapshot>), SnapshotsError> {
        let repository = self.repository.clone().map_err(SnapshotsError::NotConfigured)?;
        let mut listed = Vec::new();
        for partition in self.table.partitions.iter().map(|p| p.id) {
            if only.is_some_and(|only| only != partition) {
                continue;
            }
            let latest = repository.latest(partition).map_err(|e| SnapshotsError::Failed {
                partition,
                reason: e.to_string(),
            })?;
            let Some(latest) = latest else { continue };
            for retained in &latest.retained_snapshots {
                listed.push(ListedSnapshot {
                    partition_id: partition,
                    snapshot_id: retained.snapshot_id.clone(),
                    min_applied_lsn: retained.min_applied_lsn,
                    created_at: retained.created_at.clone(),
                    location: repository.location(partition, &retained.path),
                    latest: retained.snapshot_id == latest.snapshot_id,
                });
            }
        }
        Ok((repository.describe(), listed))
    }

    /// Replaces what the store of `partition` holds by the newest readable snapshot in the
    /// repository (an older retained one if the newest cannot be read) that holds at least
    /// `required` (when the log was trimmed past what the store applied); returns the LSN the
    /// snapshot had applied at least, or `None` when nothing is required and there is no
    /// repository or no snapshot. A snapshot of another cluster or of another key range is
    /// refused with an error that names it. Blocking: run it off the async workers.
    pub(crate) fn restore_blocking(
        &self,
        store: &restate_partition_store::PartitionStore,
        fingerprint: Option<&str>,
        required: Option<u64>,
    ) -> Result<Option<u64>, String> {
        let partition = store.partition_id();
        let repository = match (&self.repository, required) {
            (Ok(repository), _) => repository,
            (Err(_), None) => return Ok(None),
            (Err(reason), Some(_)) => return Err(reason.clone()),
        };
        let Some(latest) = repository.latest(partition).map_err(|e| e.to_string())? else {
            return match required {
                None => Ok(None),
                Some(_) => Err(format!(
                    "{} holds no snapshot of partition {partition}: take one with `restatectl snapshots create \
                     --partition {partition}` while a replica that has the trimmed records leads it",
                    repository.describe()
                )),
            };
        };
        let Some(range) = self.table.partitions.iter().find(|p| p.id == partition) else {
            return Ok(None);
        };
        let mut unreadable = Vec::new();
        for candidate in &latest.retained_snapshots {
            if let Some(required) = required
                && candidate.min_applied_lsn < required
            {
                unreadable.push(format!(
                    "{} holds LSN {}, older than the {required} needed",
                    candidate.snapshot_id, candidate.min_applied_lsn
                ));
                continue;
            }
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
    /// With `trim_log`, trims each snapshotted partition's log up to what its snapshot holds.
    pub(crate) async fn create(
        &self,
        replicas: &WorkerHandle,
        only: Option<u16>,
        trim_log: bool,
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
        let led: Vec<_> = replicas
            .stores()
            .into_iter()
            .filter(|(store, state)| state.snapshot().is_leader && only.is_none_or(|only| only == store.partition_id()))
            .collect();
        // A few at a time: each flushes, writes a file and uploads it.
        let results: Vec<_> = futures::stream::iter(led)
            .map(|(store, state)| self.create_one(&repository, &fingerprint, store, state, trim_log))
            .buffer_unordered(EXPORT_CONCURRENCY)
            .collect()
            .await;
        let mut created = Vec::new();
        for result in results {
            if let Some(snapshot) = result? {
                created.push(snapshot);
            }
        }
        created.sort_by_key(|s| s.partition_id);
        Ok(created)
    }

    /// Takes a snapshot of one partition's store into `repository`; `None` if the partition
    /// is not in the partition table.
    async fn create_one(
        &self,
        repository: &Repository,
        fingerprint: &str,
        store: restate_partition_store::PartitionStore,
        state: crate::handle::PartitionState,
        trim_log: bool,
    ) -> Result<Option<CreatedSnapshot>, SnapshotsError> {
        let partition = store.partition_id();
        let snapshot = state.snapshot();
        let Some(range) = self.table.partitions.iter().find(|p| p.id == partition) else {
            return Ok(None);
        };
        let snapshot_id = restate_snapshots::new_snapshot_id();
        let min_applied_lsn = snapshot.applied_lsn;
        let dir = self.scratch.join(partition.to_string()).join(&snapshot_id);
        let metadata = SnapshotMetadata {
            version: "V1".into(),
            cluster_name: self.cluster_name.clone(),
            cluster_fingerprint: fingerprint.to_owned(),
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
        tracing::info!(partition, %snapshot_id, min_applied_lsn, %location, "created a partition snapshot");
        let trim_point = match trim_log {
            // The records the snapshot holds are the ones below the new trim point.
            true => Some(
                self.bifrost
                    .trim(u32::from(partition), min_applied_lsn + 1)
                    .await
                    .map_err(|e| {
                        failed(format!(
                            "the snapshot {snapshot_id} was taken, but trimming the log failed: {e}"
                        ))
                    })?,
            ),
            false => None,
        };
        if let Some(trim_point) = trim_point {
            tracing::info!(partition, trim_point, "trimmed the partition's log after its snapshot");
            state.update(|s| s.trim_point = Some(trim_point));
        }
        Ok(Some(CreatedSnapshot {
            partition_id: partition,
            snapshot_id,
            min_applied_lsn,
            location,
            size_bytes: exported.size,
            entries: exported.entries,
            trim_point,
        }))
    }
}

/// Partitions exported and uploaded at once by one `snapshots create`.
const EXPORT_CONCURRENCY: usize = 4;

/// How often the leaders check whether a snapshot is due.
const AUTOMATIC_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// After an automatic snapshot failed, the next try waits at least this long.
const AUTOMATIC_RETRY_PAUSE: Duration = Duration::from_secs(10);

/// When a partition's last snapshot was taken (or this node started leading it without one).
#[derive(Debug, Clone, Copy)]
struct LastSnapshot {
    at: Instant,
    lsn: u64,
}

/// Whether a partition is due for a snapshot by `snapshot-interval` and
/// `snapshot-interval-num-records` (when both are set, both must be met; when neither is,
/// never).
fn snapshot_due(
    interval: Option<Duration>,
    num_records: Option<u64>,
    last: LastSnapshot,
    applied: u64,
    now: Instant,
) -> bool {
    if applied <= last.lsn || (interval.is_none() && num_records.is_none()) {
        return false;
    }
    let time_met = interval.is_none_or(|interval| now.duration_since(last.at) >= interval);
    let records_met = num_records.is_none_or(|n| applied - last.lsn >= n);
    time_met && records_met
}

impl Snapshotter {
    /// Takes the snapshots `[worker.snapshots] snapshot-interval` and
    /// `snapshot-interval-num-records` ask for, of the partitions this node leads, until
    /// `cancel`. Does nothing when neither is set or there is no repository.
    pub(crate) async fn run_automatic(self: Arc<Self>, replicas: WorkerHandle, cancel: CancellationToken) {
        if (self.interval.is_none() && self.num_records.is_none()) || !self.has_repository() {
            return;
        }
        let mut last: HashMap<u16, LastSnapshot> = HashMap::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(AUTOMATIC_CHECK_INTERVAL) => {}
            }
            for (store, state) in replicas.stores() {
                let partition = store.partition_id();
                let snapshot = state.snapshot();
                if !snapshot.is_leader || snapshot.failure.is_some() {
                    last.remove(&partition);
                    continue;
                }
                let now = Instant::now();
                let previous = match last.get(&partition) {
                    Some(previous) => *previous,
                    None => {
                        // Counted from when this node started leading, and from the LSN of the
                        // newest snapshot there is.
                        let this = self.clone();
                        let lsn = tokio::task::spawn_blocking(move || this.latest_lsn_blocking(partition))
                            .await
                            .unwrap_or(None)
                            .unwrap_or(0);
                        *last.entry(partition).or_insert(LastSnapshot { at: now, lsn })
                    }
                };
                if !snapshot_due(self.interval, self.num_records, previous, snapshot.applied_lsn, now) {
                    continue;
                }
                match self.create(&replicas, Some(partition), false).await {
                    Ok(created) => {
                        let lsn = created.first().map_or(snapshot.applied_lsn, |s| s.min_applied_lsn);
                        last.insert(
                            partition,
                            LastSnapshot {
                                at: Instant::now(),
                                lsn,
                            },
                        );
                    }
                    Err(error) => {
                        tracing::warn!(partition, %error, "the automatic snapshot failed; trying again later");
                        // The interval (or the pause) counts again from now.
                        let at = Instant::now() + AUTOMATIC_RETRY_PAUSE;
                        let at = at.checked_sub(self.interval.unwrap_or(Duration::ZERO)).unwrap_or(at);
                        last.insert(partition, LastSnapshot { at, lsn: previous.lsn });
                    }
                }
            }
        }
    }

    /// The LSN of the partition's newest snapshot, if the repository can say. Blocking.
    fn latest_lsn_blocking(&self, partition: u16) -> Option<u64> {
        let repository = self.repository.as_ref().ok()?;
        repository
            .latest(partition)
            .ok()
            .flatten()
            .map(|latest| latest.min_applied_lsn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_due_when_every_configured_condition_is_met() {
        let start = Instant::now();
        let last = LastSnapshot { at: start, lsn: 100 };
        let minute = Some(Duration::from_secs(60));
        let later = start + Duration::from_secs(61);
        assert!(!snapshot_due(None, None, last, 500, later), "neither set: never");
        assert!(snapshot_due(minute, None, last, 101, later));
        assert!(!snapshot_due(minute, None, last, 101, start + Duration::from_secs(30)));
        assert!(!snapshot_due(minute, None, last, 100, later), "nothing new to take");
        assert!(snapshot_due(None, Some(50), last, 150, start));
        assert!(!snapshot_due(None, Some(50), last, 149, later));
        assert!(
            !snapshot_due(minute, Some(50), last, 150, start),
            "both set: both must be met"
        );
        assert!(
            !snapshot_due(minute, Some(50), last, 120, later),
            "both set: both must be met"
        );
        assert!(snapshot_due(minute, Some(50), last, 150, later));
    }
}
