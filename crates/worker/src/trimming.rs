//! Automatic trimming of the partitions' logs. A record may leave a partition's log once no
//! replica can need it again: every few seconds each leader works out its partition's
//! durability point from what its replicas made durable (their heartbeats say) and what the
//! snapshot repository holds, by the `[worker] durability-mode`, and trims the log below the
//! point it reached `trim-delay-interval` ago. Every replica also records the archived LSN and
//! the trim point it saw, for `restatectl partitions list`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use restate_config::DurabilityMode;
use restate_types::{PlainNodeId, Role};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::handle::WorkerHandle;
use crate::processor::ProcessorCtx;
use crate::snapshots::Snapshotter;

/// How often the leaders check what they may trim.
pub(crate) const TRIM_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// What may be trimmed, given what the replicas made durable (`None`: a replica never said)
/// and the archived LSN: the highest LSN that no copy the mode relies on still needs from the
/// log. `None` when nothing may be trimmed.
pub(crate) fn durability_point(mode: DurabilityMode, durable: &[Option<u64>], archived: Option<u64>) -> Option<u64> {
    // A replica that never reported counts as having nothing durable.
    let min_durable = durable.iter().map(|lsn| lsn.unwrap_or(0)).min();
    let max_durable = durable.iter().filter_map(|lsn| *lsn).max();
    let point = match mode {
        DurabilityMode::None => None,
        DurabilityMode::ReplicaSetOnly => min_durable,
        DurabilityMode::SnapshotAndReplicaSet => min_durable.zip(archived).map(|(d, a)| d.min(a)),
        DurabilityMode::Balanced => max_durable.zip(archived).map(|(d, a)| d.min(a)),
        DurabilityMode::SnapshotOnly => archived,
    };
    point.filter(|point| *point > 0)
}

/// The durability points a leader saw, oldest first, each waiting out the trim delay.
#[derive(Debug, Default)]
pub(crate) struct DelayedPoints {
    waiting: VecDeque<(Instant, u64)>,
    /// The highest point seen at least the delay ago.
    ripe: Option<u64>,
}

impl DelayedPoints {
    /// Records `point` as seen `now`; returns the highest point seen at least `delay` ago.
    pub(crate) fn observe(&mut self, now: Instant, point: u64, delay: Duration) -> Option<u64> {
        let highest = self.waiting.back().map(|(_, p)| *p).or(self.ripe);
        if highest.is_none_or(|highest| point > highest) {
            self.waiting.push_back((now, point));
        }
        while let Some((seen, point)) = self.waiting.front().copied() {
            if now.duration_since(seen) < delay {
                break;
            }
            self.ripe = Some(point);
            self.waiting.pop_front();
        }
        self.ripe
    }
}

/// The leaders' trimming, one task for all the partitions of this node.
pub(crate) struct Trimmer {
    ctx: Arc<ProcessorCtx>,
    snapshotter: Arc<Snapshotter>,
    configured: Option<DurabilityMode>,
    delay: Duration,
    points: HashMap<u16, DelayedPoints>,
    warned_without_repository: bool,
}

impl Trimmer {
    pub(crate) fn new(
        ctx: Arc<ProcessorCtx>,
        snapshotter: Arc<Snapshotter>,
        config: &restate_config::Configuration,
    ) -> Self {
        Self {
            ctx,
            snapshotter,
            configured: config.worker.durability_mode,
            delay: config.worker.trim_delay_interval,
            points: HashMap::new(),
            warned_without_repository: false,
        }
    }

    /// Checks every [`TRIM_CHECK_INTERVAL`] until `cancel`.
    pub(crate) async fn run(mut self, replicas: WorkerHandle, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(TRIM_CHECK_INTERVAL) => {}
            }
            self.check(&replicas).await;
        }
    }

    /// The replicas of `partition`: its replica set, or every worker node while nothing is placed.
    fn replica_set(&self, partition: u16) -> Vec<PlainNodeId> {
        let placed = self
            .ctx
            .placement
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .replicas_of(partition)
            .map(<[PlainNodeId]>::to_vec);
        placed.unwrap_or_else(|| self.ctx.view.nodes_with_role(Role::Worker))
    }

    fn mode(&mut self, replica_set: &[PlainNodeId]) -> DurabilityMode {
        if let Some(mode) = self.configured {
            return mode;
        }
        let cluster = replica_set.len() > 1 || self.ctx.view.nodes_with_role(Role::Worker).len() > 1;
        if !cluster {
            return DurabilityMode::ReplicaSetOnly;
        }
        if !self.snapshotter.has_repository() && !self.warned_without_repository {
            self.warned_without_repository = true;
            tracing::warn!(
                "this is a cluster without a snapshot repository: the partitions' logs are not trimmed \
                 automatically (set [worker.snapshots] destination, or [worker] durability-mode = \
                 \"replica-set-only\" to trim below what every replica made durable)"
            );
        }
        DurabilityMode::Balanced
    }

    async fn check(&mut self, replicas: &WorkerHandle) {
        let me = PlainNodeId(self.ctx.node_id);
        for (store, state) in replicas.stores() {
            let partition = store.partition_id();
            let log_id = u32::from(partition);
            let snapshotter = self.snapshotter.clone();
            let archived = tokio::task::spawn_blocking(move || snapshotter.archived_lsn_blocking(partition))
                .await
                .unwrap_or(None);
            let trim_point = self.ctx.bifrost.trim_point(log_id).await.ok();
            state.update(|s| {
                s.archived_lsn = archived;
                s.trim_point = trim_point.or(s.trim_point);
            });
            let snapshot = state.snapshot();
            if !snapshot.is_leader || snapshot.failure.is_some() {
                self.points.remove(&partition);
                continue;
            }
            let replica_set = self.replica_set(partition);
            let durable: Vec<Option<u64>> = replica_set
                .iter()
                .map(|node| match *node == me {
                    true => Some(snapshot.durable_lsn),
                    false => self.ctx.view.durable_lsn(*node, partition),
                })
                .collect();
            let mode = self.mode(&replica_set);
            let Some(point) = durability_point(mode, &durable, archived) else {
                continue;
            };
            let Some(ripe) = self
                .points
                .entry(partition)
                .or_default()
                .observe(Instant::now(), point, self.delay)
            else {
                continue;
            };
            // Records up to the durability point are no longer needed.
            let target = ripe + 1;
            if trim_point.is_some_and(|current| current >= target) {
                continue;
            }
            match self.ctx.bifrost.trim(log_id, target).await {
                Ok(trimmed) => {
                    tracing::debug!(
                        partition,
                        trim_point = trimmed,
                        mode = mode.as_str(),
                        "trimmed the partition's log"
                    );
                    state.update(|s| s.trim_point = Some(trimmed));
                }
                Err(error) => tracing::debug!(partition, %error, "cannot trim the partition's log now"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_keeps_what_the_copies_it_relies_on_still_need() {
        let durable = [Some(40), Some(70), None];
        let both = [Some(40), Some(70)];
        assert_eq!(durability_point(DurabilityMode::None, &both, Some(100)), None);
        assert_eq!(
            durability_point(DurabilityMode::ReplicaSetOnly, &durable, None),
            None,
            "a replica that never reported holds nothing durable"
        );
        assert_eq!(durability_point(DurabilityMode::ReplicaSetOnly, &both, None), Some(40));
        assert_eq!(
            durability_point(DurabilityMode::SnapshotAndReplicaSet, &both, Some(30)),
            Some(30)
        );
        assert_eq!(
            durability_point(DurabilityMode::SnapshotAndReplicaSet, &both, None),
            None
        );
        assert_eq!(
            durability_point(DurabilityMode::Balanced, &durable, Some(100)),
            Some(70)
        );
        assert_eq!(durability_point(DurabilityMode::Balanced, &durable, Some(50)), Some(50));
        assert_eq!(
            durability_point(DurabilityMode::Balanced, &both, None),
            None,
            "without a snapshot a replica that loses its disk could not come back"
        );
        assert_eq!(
            durability_point(DurabilityMode::SnapshotOnly, &[None], Some(9)),
            Some(9)
        );
    }

    #[test]
    fn a_point_is_trimmed_to_only_after_the_delay() {
        let delay = Duration::from_secs(10);
        let start = Instant::now();
        let mut points = DelayedPoints::default();
        assert_eq!(points.observe(start, 10, delay), None);
        assert_eq!(points.observe(start + Duration::from_secs(4), 20, delay), None);
        assert_eq!(points.observe(start + Duration::from_secs(10), 30, delay), Some(10));
        assert_eq!(points.observe(start + Duration::from_secs(13), 30, delay), Some(10));
        assert_eq!(points.observe(start + Duration::from_secs(14), 30, delay), Some(20));
        assert_eq!(points.observe(start + Duration::from_secs(30), 30, delay), Some(30));
        // Without a delay the point is trimmed to at once.
        let mut points = DelayedPoints::default();
        assert_eq!(points.observe(start, 5, Duration::ZERO), Some(5));
        assert_eq!(points.observe(start, 6, Duration::ZERO), Some(6));
    }
}
