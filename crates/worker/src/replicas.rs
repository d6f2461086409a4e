//! Which partitions this node runs: the replica sets of the cluster controller's placement
//! (`partition_placement`) that name this node, followed as the placement changes. A replica
//! that moves here starts applying its log; one that moves away stops (its store stays on
//! disk and catches up from where it stopped if it comes back).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use restate_bifrost::Bifrost;
use restate_partition_api::Partitions;
use restate_partition_store::{Key, PartitionStores, TableKind};
use restate_types::PlainNodeId;
use restate_types::metadata::Lsn;
use restate_types::metadata::{PARTITION_PLACEMENT_KEY, Partition, PartitionPlacement, PartitionTable};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::handle::{PartitionHandle, WorkerHandle};
use crate::processor::appender::Appender;
use crate::processor::{Processor, ProcessorCtx, ProcessorExit};
use crate::snapshots::Snapshotter;
use crate::{WorkerError, supervise};

/// How often the placement is read again.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// Replicas restored from snapshots at once when they start.
const RESTORE_CONCURRENCY: usize = 4;

/// A replica that needs a snapshot and found none it can use tries again after this long.
const RESTORE_RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// The placement as this node last read it, shared with every processor (the election ranks
/// only a partition's replicas).
pub(crate) type SharedPlacement = Arc<RwLock<PartitionPlacement>>;

struct Running {
    handle: PartitionHandle,
    cancel: CancellationToken,
    task: JoinHandle<ProcessorExit>,
    /// Its processor stopped because the log was trimmed past what it applied: the snapshot
    /// it needs (an LSN it must hold at least) and when to look for one again.
    needs_snapshot: Option<(Lsn, Instant)>,
    /// Its processor stopped and the task was awaited (a finished task is awaited once).
    reaped: bool,
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
                if !running.reaped {
                    let _ = running.task.await;
                }
                running.handle.drop_waiters();
            }
        }
        let starting: Vec<Partition> = wanted
            .into_iter()
            .filter(|p| !self.running.contains_key(&p.id))
            .collect();
        // Restores (downloads and ingests) run a few at a time, before any of them starts.
        let this = &*self;
        let ids: Vec<u16> = starting.iter().map(|p| p.id).collect();
        let restores: Vec<_> = futures::stream::iter(ids)
            .map(|id| async move { (id, this.restore_if_needed(id, None).await) })
            .buffer_unordered(RESTORE_CONCURRENCY)
            .collect()
            .await;
        for (partition, restored) in restores {
            if let Err(reason) = restored {
                // Its processor meets the trim and the replica keeps looking for a snapshot.
                tracing::warn!(partition, "the replica cannot start from a snapshot: {reason}");
            }
        }
        for partition in starting {
            if !self.handle.is_empty() {
                tracing::info!(
                    partition = partition.id,
                    "the placement gives this node a replica: starting it"
                );
            }
            self.start(&partition)?;
            changed = true;
        }
        if changed {
            self.publish();
        }
        Ok(())
    }

    /// A replica that starts with an empty store (a new node, or a lost disk) starts from the
    /// newest snapshot in the repository, if there is one, instead of from the beginning of
    /// its log. One whose store is behind the log's trim point (it was down while the log was
    /// trimmed, or `needed` says its processor met the trim) starts from a snapshot that holds
    /// every trimmed record. Returns why it could not when it had to.
    async fn restore_if_needed(&self, partition: u16, needed: Option<Lsn>) -> Result<(), String> {
        let Ok(store) = self.stores.partition(partition) else {
            return Ok(());
        };
        let applied_key = Key::new(TableKind::Fsm).u8(crate::state_machine::fsm::APPLIED_LSN);
        // An unreadable store is the processor's to report.
        let Ok(applied) = store.get::<u64>(&applied_key) else {
            return Ok(());
        };
        let trimmed_past = match self.bifrost.trim_point(u32::from(partition)).await {
            Ok(trim_point) if trim_point > applied.unwrap_or(0) + 1 => Some(trim_point - 1),
            _ => None,
        };
        let required = needed.max(trimmed_past);
        if applied.is_some() && required.is_none() {
            return Ok(());
        }
        let Some(snapshotter) = self.snapshotter.clone() else {
            return match required {
                None => Ok(()),
                Some(lsn) => Err(format!(
                    "it needs a snapshot with LSN {lsn} or later and this worker cannot restore any"
                )),
            };
        };
        let fingerprint = snapshotter.fingerprint().await;
        let restored =
            tokio::task::spawn_blocking(move || snapshotter.restore_blocking(&store, fingerprint.as_deref(), required))
                .await
                .map_err(|e| format!("restoring the partition from a snapshot stopped: {e}"))?;
        match (restored, required) {
            (Ok(_), _) => Ok(()),
            (Err(reason), None) => {
                tracing::error!(partition, "{reason}; the replica reads its log from the start instead");
                Ok(())
            }
            (Err(reason), Some(_)) => Err(reason),
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
        self.running.insert(
            partition.id,
            Running {
                handle,
                cancel,
                task,
                needs_snapshot: None,
                reaped: false,
            },
        );
        Ok(())
    }

    /// Replicas whose processor stopped at a trim of its log start again from a snapshot; one
    /// that finds none it can use stays failed, says why, and looks again a little later.
    async fn recover_trimmed_replicas(&mut self) -> Result<(), WorkerError> {
        let now = Instant::now();
        let mut due = Vec::new();
        for (id, running) in &mut self.running {
            if !running.reaped && running.task.is_finished() {
                running.reaped = true;
                if let Ok(ProcessorExit::TrimmedPast(gap)) = (&mut running.task).await {
                    running.needs_snapshot = Some((gap.snapshot_needed(), now));
                }
            }
            if let Some((needed, at)) = running.needs_snapshot
                && at <= now
            {
                due.push((*id, needed));
            }
        }
        let mut changed = false;
        for (id, needed) in due {
            let Some(partition) = self.table.partitions.iter().find(|p| p.id == id).cloned() else {
                continue;
            };
            match self.restore_if_needed(id, Some(needed)).await {
                Ok(()) => {
                    tracing::info!(
                        partition = id,
                        "the replica restarts from a snapshot past its log's trim point"
                    );
                    if let Some(stopped) = self.running.remove(&id) {
                        stopped.handle.drop_waiters();
                    }
                    self.start(&partition)?;
                    changed = true;
                }
                Err(reason) => {
                    let message = format!(
                        "partition {id}: the log was trimmed past what this replica applied and {reason}; \
                         it tries again in {}s",
                        RESTORE_RETRY_INTERVAL.as_secs()
                    );
                    tracing::warn!(partition = id, "{message}");
                    if let Some(running) = self.running.get_mut(&id) {
                        running.handle.state.set_failed(message);
                        running.needs_snapshot = Some((needed, now + RESTORE_RETRY_INTERVAL));
                    }
                }
            }
        }
        if changed {
            self.publish();
        }
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
            if let Err(error) = self.recover_trimmed_replicas().await {
                tracing::warn!(%error, "cannot restart a replica from a snapshot; retrying");
            }
        }
        for (_, running) in std::mem::take(&mut self.running) {
            running.cancel.cancel();
            if !running.reaped {
                let _ = running.task.await;
            }
        }
    }
}
