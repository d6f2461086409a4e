//! Which partitions this node runs: the replica sets of the cluster controller's placement
//! (`partition_placement`) that name this node, followed as the placement changes. A replica
//! that moves here starts applying its log; one that moves away stops (its store stays on
//! disk and catches up from where it stopped if it comes back).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use restate_bifrost::Bifrost;
use restate_partition_api::Partitions;
use restate_partition_store::{Key, PartitionStores, TableKind};
use restate_types::PlainNodeId;
use restate_types::metadata::{PARTITION_PLACEMENT_KEY, Partition, PartitionPlacement, PartitionTable};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::handle::{PartitionHandle, WorkerHandle};
use crate::processor::appender::Appender;
use crate::processor::{Processor, ProcessorCtx};
use crate::snapshots::Snapshotter;
use crate::{WorkerError, supervise};

/// How often the placement is read again.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// The placement as this node last read it, shared with every processor (the election ranks
/// only a partition's replicas).
pub(crate) type SharedPlacement = Arc<RwLock<PartitionPlacement>>;

struct Running {
    handle: PartitionHandle,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// This node's running replicas.
pub(crate) struct Replicas {
    pub(crate) ctx: Arc<ProcessorCtx>,
    pub(crate) stores: PartitionStores,
    pub(crate) bifrost: Bifrost,
    pub(crate) table: PartitionTable,
    pub(crate) append_deadline: Duration,
    pub(crate) handle: WorkerHandle,
    pub(crate) router: Partitions,
    pub(crate) me: PlainNodeId,
    /// Restores replicas that start with an empty store (none in tests without a repository).
    pub(crate) snapshotter: Option<Arc<Snapshotter>>,
    running: BTreeMap<u16, Running>,
}

impl Replicas {
    pub(crate) fn new(
        ctx: Arc<ProcessorCtx>,
        stores: PartitionStores,
        bifrost: Bifrost,
        table: PartitionTable,
        append_deadline: Duration,
        router: Partitions,
        me: PlainNodeId,
    ) -> Self {
        Self {
            ctx,
            stores,
            bifrost,
            table,
            append_deadline,
            handle: WorkerHandle::default(),
            router,
            me,
            snapshotter: None,
            running: BTreeMap::new(),
        }
    }

    /// Reads the placement; `None` if it cannot be read now.
    pub(crate) async fn read_placement(&self) -> Option<PartitionPlacement> {
        match self
            .ctx
            .metadata
            .get_json::<PartitionPlacement>(PARTITION_PLACEMENT_KEY)
            .await
        {
            Ok(placement) => Some(placement.map(|(_, p)| p).unwrap_or_default()),
            Err(error) => {
                tracing::debug!(%error, "cannot read the partition placement");
                None
            }
        }
    }

    /// Starts the replicas `placement` gives this node and stops the others.
    pub(crate) async fn follow(&mut self, placement: PartitionPlacement) -> Result<(), WorkerError> {
        *self.ctx.placement.write().unwrap_or_else(|p| p.into_inner()) = placement.clone();
        let wanted: Vec<Partition> = self
            .table
            .partitions
            .iter()
            .filter(|p| placement.runs(p.id, self.me))
            .cloned()
            .collect();
        let leaving: Vec<u16> = self
            .running
            .keys()
            .copied()
            .filter(|id| wanted.iter().all(|p| p.id != *id))
            .collect();
        let mut changed = !leaving.is_empty();
        for id in leaving {
            if let Some(running) = self.running.remove(&id) {
                tracing::info!(
                    partition = id,
                    "the placement moved this replica to other nodes: stopping it"
                );
                running.cancel.cancel();
                let _ = running.task.await;
                running.handle.drop_waiters();
            }
        }
        for partition in wanted {
            if !self.running.contains_key(&partition.id) {
                if !self.handle.is_empty() {
                    tracing::info!(
                        partition = partition.id,
                        "the placement gives this node a replica: starting it"
                    );
                }
                self.restore_if_empty(partition.id).await;
                self.start(&partition)?;
                changed = true;
            }
        }
        if changed {
            self.publish();
        }
        Ok(())
    }

    /// A replica that starts with an empty store (a new node, or a lost disk) starts from the
    /// newest snapshot in the repository, if there is one, instead of from the beginning of
    /// its log (which may be trimmed).
    async fn restore_if_empty(&self, partition: u16) {
        let Ok(store) = self.stores.partition(partition) else {
            return;
        };
        let applied = Key::new(TableKind::Fsm).u8(crate::state_machine::fsm::APPLIED_LSN);
        // Only a store that is certainly empty; an unreadable one is the processor's to report.
        if !matches!(store.get::<u64>(&applied), Ok(None)) {
            return;
        }
        let Some(snapshotter) = self.snapshotter.clone() else {
            return;
        };
        let fingerprint = snapshotter.fingerprint().await;
        let restored =
            tokio::task::spawn_blocking(move || snapshotter.restore_blocking(&store, fingerprint.as_deref())).await;
        match restored {
            Ok(Ok(_)) => {}
            Ok(Err(reason)) => {
                tracing::error!(partition, "{reason}; the replica reads its log from the start instead");
            }
            Err(error) => tracing::error!(partition, %error, "restoring the partition from a snapshot stopped"),
        }
    }

    fn start(&mut self, partition: &Partition) -> Result<(), WorkerError> {
        let appender = Appender::spawn(self.bifrost.clone(), u32::from(partition.id), self.append_deadline);
        let store = self.stores.partition(partition.id)?;
        let handle = PartitionHandle::new(partition.id, appender, store.clone(), self.bifrost.clone());
        let range = partition.key_range_start..=partition.key_range_end;
        let processor = Processor::new(self.ctx.clone(), partition.id, range, store, handle.clone())?;
        self.ctx.metrics.partition_failed(partition.id, false);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(supervise(
            processor,
            handle.clone(),
            self.ctx.metrics.clone(),
            cancel.clone(),
        ));
        self.running.insert(partition.id, Running { handle, cancel, task });
        Ok(())
    }

    /// Hands the running replicas to the node's status and to the partition API.
    fn publish(&self) {
        let partitions = self
            .table
            .partitions
            .iter()
            .filter_map(|p| {
                let running = self.running.get(&p.id)?;
                Some((p.key_range_start..=p.key_range_end, running.handle.clone()))
            })
            .collect();
        self.handle.set(partitions);
        self.router.serve_locally(self.handle.local_partitions());
    }

    /// Follows the placement until `cancel`, then stops every replica.
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(FOLLOW_INTERVAL) => {}
            }
            if let Some(placement) = self.read_placement().await
                && let Err(error) = self.follow(placement).await
            {
                tracing::warn!(%error, "cannot start a replica the placement gives this node; retrying");
            }
        }
        for (_, running) in std::mem::take(&mut self.running) {
            running.cancel.cancel();
            let _ = running.task.await;
        }
    }
}
