//! The `worker` role: a partition processor per partition, each applying its partition's log
//! to the partition store and, as leader, running invocations on the invoker. See
//! `OVERVIEW.md` for how a call flows through the log.

mod durability;
mod handle;
mod introspect;
pub mod leadership;
mod metrics;
pub mod model;
mod processor;
mod replicas;
mod settings;
mod snapshots;
mod trimming;
pub use snapshots::{CreatedSnapshot, ListedSnapshot, SnapshotsError};
pub mod state_machine;
pub mod wal;

use std::sync::Arc;

use restate_bifrost::Bifrost;
use restate_config::Configuration;
use restate_metadata_store::MetadataClient;
use restate_partition_store::{PARTITION_STORE_DIR, PartitionStores};
use restate_types::PlainNodeId;
use restate_types::metadata::{PARTITION_TABLE_KEY, PartitionTable};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use handle::{PartitionHandle, WorkerHandle};
pub use leadership::EpochMetadata;
pub use leadership::election::preference;
pub use metrics::WorkerMetrics;
pub use processor::{SkippedRecords, skipped_records_key};
pub use restate_partition_api::invocation_id_of;
pub use settings::WorkerSettings;

use crate::processor::{Processor, ProcessorCtx, ProcessorExit};
use crate::replicas::Replicas;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot read the partition table: {0}")]
    PartitionTable(String),
    #[error(transparent)]
    Store(#[from] restate_partition_store::PartitionStoreError),
    #[error("{0}")]
    Invoker(String),
}

/// The running worker role.
pub struct Worker {
    handle: WorkerHandle,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Worker {
    /// Opens the partition store and starts a processor for each partition the placement
    /// gives this node (every partition while there is no placement), then follows the
    /// placement. `schema` is the node's copy of the schema registry (the node keeps it
    /// fresh); `router` is the node's partition API, told which replicas run here.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        config: &Configuration,
        bifrost: Bifrost,
        metadata: MetadataClient,
        node_id: u32,
        view: restate_types::ClusterView,
        schema: restate_metadata_store::SchemaCache,
        metrics: WorkerMetrics,
        router: restate_partition_api::Partitions,
    ) -> Result<Self, WorkerError> {
        let table = match metadata.get_json::<PartitionTable>(PARTITION_TABLE_KEY).await {
            Ok(Some((_, table))) => table,
            Ok(None) => {
                return Err(WorkerError::PartitionTable(
                    "the cluster has no partition table yet".into(),
                ));
            }
            Err(error) => return Err(WorkerError::PartitionTable(error.to_string())),
        };
        let path = config.node_dir().join(PARTITION_STORE_DIR);
        let ids: Vec<u16> = table.partitions.iter().map(|p| p.id).collect();
        let stores = tokio::task::spawn_blocking(move || PartitionStores::open(&path, ids))
            .await
            .map_err(|e| WorkerError::Invoker(e.to_string()))??;
        let mut ctx = ProcessorCtx::new(config, bifrost.clone(), metadata, node_id, view, schema)
            .map_err(WorkerError::Invoker)?;
        ctx.metrics = metrics;
        ctx.partitions = table
            .partitions
            .iter()
            .map(|p| (p.id, p.key_range_start..=p.key_range_end))
            .collect();
        let log_ids: Vec<u32> = table.partitions.iter().map(|p| u32::from(p.id)).collect();
        if let Err(error) = bifrost.create_logs(&log_ids).await {
            // Each log is still created on its first append.
            tracing::warn!(%error, "cannot create the partition logs up front");
        }
        // Appends wait a little longer than Bifrost itself tries, so its own answer wins.
        let append_deadline = config.bifrost.append_timeout + std::time::Duration::from_secs(5);
        let snapshotter =
            Arc::new(snapshots::Snapshotter::new(config, table.clone(), ctx.metadata.clone(), bifrost.clone()).await);
        let mut replicas = Replicas::new(
            Arc::new(ctx),
            stores,
            bifrost,
            table,
            append_deadline,
            router,
            PlainNodeId(node_id),
        );
        replicas.snapshotter = Some(snapshotter.clone());
        let trimmer = trimming::Trimmer::new(replicas.ctx.clone(), snapshotter.clone(), config);
        // Without a readable placement yet, run every partition (as a cluster without one
        // does); the follower corrects it once the placement can be read.
        let placement = replicas.read_placement().await.unwrap_or_default();
        replicas.follow(placement).await?;
        let handle = replicas.handle.clone();
        handle.set_snapshotter(snapshotter.clone());
        tracing::info!(partitions = handle.partitions().len(), "partition processors started");
        let cancel = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(replicas.run(cancel.clone())),
            tokio::spawn(durability::persist_periodically(handle.clone(), cancel.clone())),
            tokio::spawn(trimmer.run(handle.clone(), cancel.clone())),
            tokio::spawn(snapshotter.run_automatic(handle.clone(), cancel.clone())),
        ];
        Ok(Self { handle, cancel, tasks })
    }

    pub fn handle(&self) -> WorkerHandle {
        self.handle.clone()
    }

    /// Stops every processor (running attempts are dropped; their invocations resume on the
    /// next leader from the log).
    pub async fn stop(self) {
        self.cancel.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Runs a processor; if it panics, its partition is marked failed with the panic (and its
/// waiters told at once) instead of looking healthy while every call to it hangs. Returns why
/// it stopped.
pub(crate) async fn supervise(
    processor: Processor,
    handle: PartitionHandle,
    metrics: WorkerMetrics,
    cancel: CancellationToken,
) -> ProcessorExit {
    let partition = handle.partition_id;
    match tokio::spawn(processor.run(cancel)).await {
        Ok(exit) => exit,
        Err(error) if error.is_panic() => {
            let panic = error.into_panic();
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(partition, "the partition processor panicked: {message}");
            handle
                .state
                .set_failed(format!("the partition processor panicked: {message}; restart the node"));
            metrics.partition_failed(partition, true);
            handle.drop_waiters();
            ProcessorExit::Stopped
        }
        Err(_) => ProcessorExit::Stopped,
    }
}
