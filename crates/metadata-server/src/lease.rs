//! Read leases judged by the local clock.
//!
//! openraft's metrics report `millis_since_quorum_ack`, computed when the Raft core publishes
//! them. While the core is blocked (say in an fsync) it publishes nothing, so the last value
//! stays small however much time passes — a stalled leader would trust a lease that expired
//! long ago. [`MetricsClock`] therefore stamps every metrics update with the local instant it
//! arrived at, and the lease counts the age of that stamp on top of the reported silence.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::RaftMetrics;

use crate::raft_types::{MemberNode, NodeId, Raft};

/// What the lease decision needs from one metrics update, and when it arrived here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Observation {
    /// Local instant at which this update was seen.
    pub observed_at: Instant,
    /// The update says this node leads.
    pub is_leader: bool,
    /// The leader has applied an entry of its own term (so everything its predecessors
    /// committed).
    pub own_term_applied: bool,
    /// Silence from a majority when the update was published (leaders only).
    pub millis_since_quorum_ack: Option<u64>,
}

impl Observation {
    pub fn of(metrics: &RaftMetrics<NodeId, MemberNode>, observed_at: Instant) -> Self {
        Self {
            observed_at,
            is_leader: metrics.current_leader == Some(metrics.id),
            own_term_applied: metrics
                .last_applied
                .is_some_and(|id| id.leader_id.term == metrics.current_term),
            millis_since_quorum_ack: metrics.millis_since_quorum_ack,
        }
    }

    /// How long ago this update arrived, as of `now`.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.observed_at)
    }

    /// Silence from a majority as of `now`: the reported silence plus the age of the report
    /// (nothing newer proves that a majority answered since).
    pub fn quorum_silence(&self, now: Instant) -> Option<Duration> {
        self.millis_since_quorum_ack
            .map(|ms| Duration::from_millis(ms).saturating_add(self.age(now)))
    }
}

/// Whether a leader may answer a read from its applied state at `now`, judged from the latest
/// metrics `observation` only.
///
/// Holds if the observation is fresh (a running Raft core publishes metrics at least every
/// tick, so an older one means the core is stuck), says this node leads and has applied an
/// entry of its own term, and a majority acknowledged it less than `lease` before `now`,
/// counting the time since the observation as silence.
pub(crate) fn lease_holds(observation: Option<&Observation>, now: Instant, lease: Duration, max_age: Duration) -> bool {
    let Some(observation) = observation else {
        return false;
    };
    observation.age(now) <= max_age
        && observation.is_leader
        && observation.own_term_applied
        && observation.quorum_silence(now).is_some_and(|silence| silence < lease)
}

/// The latest metrics observation of the current Raft instance; cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct MetricsClock {
    inner: Arc<ClockInner>,
}

#[derive(Default)]
struct ClockInner {
    /// Bumped for every watched Raft instance; a watcher of an older instance stops writing.
    epoch: AtomicU64,
    latest: Mutex<Option<Observation>>,
}

impl MetricsClock {
    /// Starts stamping `raft`'s metrics updates, replacing the watcher of any earlier
    /// instance. The watcher ends when the Raft instance shuts down.
    pub fn watch(&self, raft: &Raft) {
        let epoch = self.inner.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        *self.lock() = None;
        let mut metrics = raft.metrics();
        let clock = self.clone();
        tokio::spawn(async move {
            loop {
                let observation = Observation::of(&metrics.borrow_and_update(), Instant::now());
                {
                    let mut latest = clock.lock();
                    if clock.inner.epoch.load(Ordering::SeqCst) != epoch {
                        return;
                    }
                    *latest = Some(observation);
                }
                if metrics.changed().await.is_err() {
                    // The Raft core stopped: nothing it reported holds any more.
                    let mut latest = clock.lock();
                    if clock.inner.epoch.load(Ordering::SeqCst) == epoch {
                        *latest = None;
                    }
                    return;
                }
            }
        });
    }

    /// The latest observation, if the current Raft instance has published any.
    pub fn latest(&self) -> Option<Observation> {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Observation>> {
        self.inner.latest.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(200);
    const MAX_AGE: Duration = Duration::from_millis(200);

    fn leader(observed_at: Instant, millis_since_quorum_ack: u64) -> Observation {
        Observation {
            observed_at,
            is_leader: true,
            own_term_applied: true,
            millis_since_quorum_ack: Some(millis_since_quorum_ack),
        }
    }

    #[test]
    fn a_fresh_observation_of_a_recent_quorum_ack_holds_the_lease() {
        let t0 = Instant::now();
        let observation = leader(t0, 20);
        assert!(lease_holds(Some(&observation), t0, LEASE, MAX_AGE));
        assert!(lease_holds(
            Some(&observation),
            t0 + Duration::from_millis(100),
            LEASE,
            MAX_AGE
        ));
    }

    /// The metrics of a leader whose Raft core stalled (e.g. in fsync) stop changing: the
    /// reported silence stays at 20 ms. The old decision (`millis_since_quorum_ack < lease`)
    /// would still say yes seconds later, after another node may have been elected.
    #[test]
    fn a_stale_observation_does_not_hold_the_lease() {
        let t0 = Instant::now();
        let observation = leader(t0, 20);
        assert!(
            observation
                .millis_since_quorum_ack
                .is_some_and(|ms| ms < LEASE.as_millis() as u64)
        );
        // The reported silence plus the age of the report reaches the lease.
        assert!(!lease_holds(
            Some(&observation),
            t0 + Duration::from_millis(180),
            LEASE,
            MAX_AGE
        ));
        // Long stalls never hold.
        assert!(!lease_holds(
            Some(&observation),
            t0 + Duration::from_secs(5),
            LEASE,
            MAX_AGE
        ));
        // Even with no reported silence, an observation older than the freshness bound fails.
        let observation = leader(t0, 0);
        let max_age = Duration::from_millis(50);
        assert!(lease_holds(
            Some(&observation),
            t0 + Duration::from_millis(50),
            LEASE,
            max_age
        ));
        assert!(!lease_holds(
            Some(&observation),
            t0 + Duration::from_millis(51),
            LEASE,
            max_age
        ));
    }

    #[test]
    fn the_lease_needs_leadership_an_own_term_entry_and_an_observation() {
        let t0 = Instant::now();
        assert!(!lease_holds(None, t0, LEASE, MAX_AGE));
        let follower = Observation {
            is_leader: false,
            millis_since_quorum_ack: None,
            ..leader(t0, 0)
        };
        assert!(!lease_holds(Some(&follower), t0, LEASE, MAX_AGE));
        let new_leader = Observation {
            own_term_applied: false,
            ..leader(t0, 0)
        };
        assert!(!lease_holds(Some(&new_leader), t0, LEASE, MAX_AGE));
        let quiet = leader(t0, LEASE.as_millis() as u64);
        assert!(!lease_holds(Some(&quiet), t0, LEASE, MAX_AGE));
    }

    #[test]
    fn quorum_silence_counts_the_age_of_the_report() {
        let t0 = Instant::now();
        let observation = leader(t0, 30);
        assert_eq!(
            observation.quorum_silence(t0 + Duration::from_millis(1000)),
            Some(Duration::from_millis(1030))
        );
        // A clock read taken just before the observation arrived counts as age zero.
        assert_eq!(
            observation.quorum_silence(t0 - Duration::from_millis(5)),
            Some(Duration::from_millis(30))
        );
    }
}
