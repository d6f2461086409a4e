//! When a replica claims leadership of its partition.
//!
//! Each replica decides alone, every tick, from the same inputs every replica has: the leader
//! the log announced last, and the failure detector's view of the worker nodes. Replicas rank
//! the worker nodes the same way per partition ([`preference`]: sorted by id, rotated by the
//! partition id, so leaders spread evenly), and a partition whose leader is gone is claimed by
//! the first responsive node in that order. Two replicas that claim at once are harmless: the
//! epochs are unique (compare-and-swap) and the log orders the announcements.

use std::time::Duration;

use restate_types::{ClusterView, PlainNodeId, Role};
use tokio::time::Instant;

/// A leader node that is alive but has not said it leads the partition for this long (it
/// restarted, or lost its leadership) leaves the partition to the others.
pub(crate) const LEAD_GRACE: Duration = Duration::from_secs(2);

/// The preferred node of a partition takes leadership back once its replica has run this
/// long (so a node that comes back gets its share of leaders without a flap while it starts).
pub(crate) const REBALANCE_AFTER: Duration = Duration::from_secs(5);

/// The share of the failover silence after which a leader that has heard from none of the
/// other worker nodes stops leading. The others replace a leader only after the whole silence,
/// so a leader cut off from them has stopped its invocations before a new one starts them.
pub(crate) fn lease(failover_silence: Duration) -> Duration {
    failover_silence * 3 / 5
}

/// A claim that neither failed nor led to an applied announcement this long is given up.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);

/// What a replica knows of the other nodes.
pub(crate) trait Peers {
    /// The nodes with the worker role.
    fn workers(&self) -> Vec<u32>;
    /// The nodes that may lead the partition: its replica set once placed, else every worker.
    fn replicas(&self) -> Vec<u32> {
        self.workers()
    }
    /// Whether [`replicas`](Self::replicas) is the partition's placed replica set (else every
    /// worker, as far as the view knows them yet).
    fn placed(&self) -> bool {
        false
    }
    /// Heard from recently, and no connection to it was refused since.
    fn responsive(&self, node: u32) -> bool;
    /// Its last heartbeat said it leads `partition`.
    fn leads(&self, node: u32, partition: u16) -> bool;
    /// Heard from within the leader's lease (see [`lease`]).
    fn heard_within_lease(&self, node: u32) -> bool;
}

/// The failure detector's view, with the silence after which a leader counts as gone.
pub(crate) struct ViewPeers<'a> {
    pub view: &'a ClusterView,
    pub silence: Duration,
    pub lease: Duration,
    /// The partition's replica set, once placed: only its members lead it.
    pub replicas: Option<Vec<u32>>,
}

impl Peers for ViewPeers<'_> {
    fn workers(&self) -> Vec<u32> {
        self.view
            .nodes_with_role(Role::Worker)
            .into_iter()
            .map(|n| n.0)
            .collect()
    }

    fn replicas(&self) -> Vec<u32> {
        self.replicas.clone().unwrap_or_else(|| self.workers())
    }

    fn placed(&self) -> bool {
        self.replicas.is_some()
    }

    fn responsive(&self, node: u32) -> bool {
        self.view.responsive(PlainNodeId(node), self.silence)
    }

    fn leads(&self, node: u32, partition: u16) -> bool {
        self.view.leads(PlainNodeId(node), partition)
    }

    fn heard_within_lease(&self, node: u32) -> bool {
        self.view.responsive(PlainNodeId(node), self.lease)
    }
}

/// The order in which worker nodes lead `partition`: sorted by id, rotated by the partition id.
pub fn preference(partition: u16, mut workers: Vec<u32>) -> Vec<u32> {
    workers.sort_unstable();
    workers.dedup();
    if !workers.is_empty() {
        let shift = usize::from(partition) % workers.len();
        workers.rotate_left(shift);
    }
    workers
}

/// Why a replica claims leadership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// No leader was ever announced.
    NoLeader,
    /// This node was the leader before (it restarted, or lost its leadership).
    WasLeader,
    /// The leader's node stopped answering (or refuses connections).
    LeaderGone,
    /// The leader's node answers but does not lead the partition.
    LeaderIdle,
    /// This node is the partition's preferred leader and takes it back.
    Rebalance,
    /// The placement moved the leader's replica to other nodes.
    LeaderMoved,
}

impl Claim {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Claim::NoLeader => "no leader was announced yet",
            Claim::WasLeader => "this node led the partition before",
            Claim::LeaderGone => "the leader's node stopped answering",
            Claim::LeaderIdle => "the leader's node does not lead the partition",
            Claim::Rebalance => "this node is the partition's preferred leader",
            Claim::LeaderMoved => "the placement moved the leader's replica to other nodes",
        }
    }
}

/// A replica's election state.
pub(crate) struct Election {
    partition: u16,
    me: u32,
    started: Instant,
    /// The leader announced last (epoch, node) and when this replica applied it.
    announced: Option<(u64, u32, Instant)>,
    /// A claim in flight: when it started and the epoch it obtained, once known.
    claim: Option<(Instant, Option<u64>)>,
    /// The highest epoch a claim of this replica obtained.
    newest_obtained: u64,
}

impl Election {
    pub(crate) fn new(partition: u16, me: u32, announced: Option<(u64, u32)>, now: Instant) -> Self {
        Self {
            partition,
            me,
            started: now,
            announced: announced.map(|(epoch, node)| (epoch, node, now)),
            claim: None,
            newest_obtained: 0,
        }
    }

    /// The leader the log announced last.
    pub(crate) fn leader(&self) -> Option<(u64, u32)> {
        self.announced.map(|(epoch, node, _)| (epoch, node))
    }

    /// The log announced a leader.
    pub(crate) fn announced(&mut self, epoch: u64, node: u32, now: Instant) {
        self.announced = Some((epoch, node, now));
        if self
            .claim
            .is_some_and(|(_, claimed)| claimed.is_none_or(|claimed| claimed <= epoch))
        {
            self.claim = None;
        }
    }

    pub(crate) fn claim_started(&mut self, now: Instant) {
        self.claim = Some((now, None));
    }

    /// The claim obtained `epoch`; it ends when that announcement (or a later one) is applied.
    /// Returns whether `epoch` is the newest a claim of this replica obtained. Two claims can
    /// overlap (after a restart, one before and one after the old leader's announcement is
    /// applied again); when the earlier one ends last, its epoch is one the later one fenced,
    /// and a leader that took it would have every proposal refused.
    pub(crate) fn claim_obtained(&mut self, epoch: u64) -> bool {
        if epoch < self.newest_obtained {
            return false;
        }
        self.newest_obtained = epoch;
        if let Some((started, _)) = self.claim {
            self.claim = Some((started, Some(epoch)));
        }
        if self.announced.is_some_and(|(announced, _, _)| announced >= epoch) {
            self.claim = None;
        }
        true
    }

    pub(crate) fn claim_failed(&mut self) {
        self.claim = None;
    }

    /// Whether this node has heard from none of the other worker nodes within the lease: it is
    /// cut off (or they are all gone), so the others may replace its leaders any moment. A
    /// leader stops leading then, and a replica does not claim. A lone worker is never cut off.
    pub(crate) fn cut_off(&self, peers: &impl Peers) -> bool {
        let mut others = peers.workers().into_iter().filter(|node| *node != self.me).peekable();
        others.peek().is_some() && others.all(|node| !peers.heard_within_lease(node))
    }

    /// Whether this replica should claim leadership now, and why.
    pub(crate) fn decide(&mut self, now: Instant, leading: bool, peers: &impl Peers) -> Option<Claim> {
        if leading || self.cut_off(peers) {
            return None;
        }
        if let Some((started, _)) = self.claim {
            if now.duration_since(started) < CLAIM_TIMEOUT {
                return None;
            }
            self.claim = None;
        }
        let mut order = preference(self.partition, peers.replicas());
        if order.is_empty() {
            order.push(self.me);
        }
        let responsive = |node: u32| node == self.me || peers.responsive(node);
        let first_responsive =
            |except: Option<u32>| order.iter().copied().find(|n| Some(*n) != except && responsive(*n));
        let Some((_, leader, announced_at)) = self.announced else {
            return (first_responsive(None) == Some(self.me)).then_some(Claim::NoLeader);
        };
        if leader == self.me {
            // Unless another node took over meanwhile (this node was cut off, or restarted
            // slowly): preempting it would stop its invocations mid-step; rebalancing hands the
            // partition back later.
            let taken_over = order
                .iter()
                .any(|node| *node != self.me && responsive(*node) && peers.leads(*node, self.partition));
            return (!taken_over).then_some(Claim::WasLeader);
        }
        if peers.placed() && !order.contains(&leader) {
            // Its replica runs elsewhere now: the first replica takes over without waiting for
            // the leader to look idle.
            return (first_responsive(Some(leader)) == Some(self.me)).then_some(Claim::LeaderMoved);
        }
        let gone = !responsive(leader);
        let idle = !gone
            && !peers.leads(leader, self.partition)
            && now.duration_since(announced_at.max(self.started)) >= LEAD_GRACE;
        if gone || idle {
            let why = if gone { Claim::LeaderGone } else { Claim::LeaderIdle };
            return (first_responsive(Some(leader)) == Some(self.me)).then_some(why);
        }
        let preferred = order.first() == Some(&self.me);
        (preferred && now.duration_since(self.started) >= REBALANCE_AFTER).then_some(Claim::Rebalance)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    #[derive(Default)]
    struct FakePeers {
        workers: Vec<u32>,
        /// The partition's replica set, when placed.
        replicas: Option<Vec<u32>>,
        down: HashSet<u32>,
        leading: HashMap<u32, u16>,
    }

    impl Peers for FakePeers {
        fn workers(&self) -> Vec<u32> {
            self.workers.clone()
        }
        fn replicas(&self) -> Vec<u32> {
            self.replicas.clone().unwrap_or_else(|| self.workers())
        }
        fn placed(&self) -> bool {
            self.replicas.is_some()
        }
        fn responsive(&self, node: u32) -> bool {
            !self.down.contains(&node)
        }
        fn leads(&self, node: u32, partition: u16) -> bool {
            self.leading.get(&node) == Some(&partition)
        }
        fn heard_within_lease(&self, node: u32) -> bool {
            !self.down.contains(&node)
        }
    }

    fn three() -> FakePeers {
        FakePeers {
            workers: vec![3, 1, 2],
            ..FakePeers::default()
        }
    }

    #[test]
    fn preference_spreads_partitions_over_the_workers() {
        assert_eq!(preference(0, vec![3, 1, 2]), vec![1, 2, 3]);
        assert_eq!(preference(1, vec![3, 1, 2]), vec![2, 3, 1]);
        assert_eq!(preference(5, vec![3, 1, 2]), vec![3, 1, 2]);
        assert!(preference(4, Vec::new()).is_empty());
    }

    #[test]
    fn without_a_leader_only_the_first_responsive_node_claims() {
        let start = Instant::now();
        let mut peers = three();
        let (mut on1, mut on2) = (Election::new(0, 1, None, start), Election::new(0, 2, None, start));
        assert_eq!(on1.decide(start, false, &peers), Some(Claim::NoLeader));
        assert_eq!(on2.decide(start, false, &peers), None);
        peers.down.insert(1);
        assert_eq!(on2.decide(start, false, &peers), Some(Claim::NoLeader));
        // A single node without a view yet still leads.
        let mut alone = Election::new(0, 7, None, start);
        assert_eq!(alone.decide(start, false, &FakePeers::default()), Some(Claim::NoLeader));
    }

    #[test]
    fn a_gone_leader_is_replaced_by_the_next_responsive_node_in_order() {
        let start = Instant::now();
        let mut peers = three();
        peers.leading.insert(1, 0);
        let mut on2 = Election::new(0, 2, Some((4, 1)), start);
        let mut on3 = Election::new(0, 3, Some((4, 1)), start);
        assert_eq!(on2.decide(start, false, &peers), None, "the leader is fine");
        peers.down.insert(1);
        assert_eq!(on2.decide(start, false, &peers), Some(Claim::LeaderGone));
        assert_eq!(on3.decide(start, false, &peers), None, "node 2 comes first");
        // With both others silent, node 3 may be the one cut off: it does not claim.
        peers.down.insert(2);
        assert!(on3.cut_off(&peers));
        assert_eq!(on3.decide(start, false, &peers), None);
    }

    #[test]
    fn a_placed_partition_is_led_only_by_its_replicas_and_its_last_live_replica_takes_over() {
        let start = Instant::now();
        // Partition 0 runs on nodes 1 and 3; node 2 is a worker without a replica of it.
        let mut peers = FakePeers {
            replicas: Some(vec![3, 1]),
            ..three()
        };
        let (mut on1, mut on2) = (Election::new(0, 1, None, start), Election::new(0, 2, None, start));
        assert_eq!(on1.decide(start, false, &peers), Some(Claim::NoLeader));
        assert_eq!(on2.decide(start, false, &peers), None, "not a replica");
        peers.leading.insert(1, 0);
        let mut on3 = Election::new(0, 3, Some((4, 1)), start);
        peers.down.insert(1);
        // Node 3 hears from node 2 although node 2 runs no replica: it is not cut off.
        assert!(!on3.cut_off(&peers));
        assert_eq!(on3.decide(start, false, &peers), Some(Claim::LeaderGone));
    }

    #[test]
    fn a_leader_whose_replica_was_moved_away_is_replaced_at_once() {
        let start = Instant::now();
        // Node 2 led partition 0 and still answers, but the placement moved its replica to 3.
        let mut peers = FakePeers {
            replicas: Some(vec![1, 3]),
            ..three()
        };
        peers.leading.insert(2, 0);
        let mut on1 = Election::new(0, 1, Some((4, 2)), start);
        let mut on3 = Election::new(0, 3, Some((4, 2)), start);
        assert_eq!(on1.decide(start, false, &peers), Some(Claim::LeaderMoved));
        assert_eq!(on3.decide(start, false, &peers), None, "node 1 comes first");
    }

    #[test]
    fn a_leader_that_hears_from_no_other_worker_is_cut_off() {
        let start = Instant::now();
        let mut peers = three();
        let on1 = Election::new(0, 1, Some((4, 1)), start);
        assert!(!on1.cut_off(&peers));
        peers.down.insert(2);
        assert!(!on1.cut_off(&peers), "one other worker still answers");
        peers.down.insert(3);
        assert!(on1.cut_off(&peers));
        // A single worker, or one that knows no other yet, is never cut off.
        let alone = FakePeers {
            workers: vec![1],
            down: [1].into(),
            ..FakePeers::default()
        };
        assert!(!on1.cut_off(&alone));
        assert!(!on1.cut_off(&FakePeers::default()));
        assert_eq!(lease(Duration::from_secs(1)), Duration::from_millis(600));
    }

    #[test]
    fn a_claim_in_flight_is_not_repeated_until_it_ends_or_times_out() {
        let start = Instant::now();
        let mut peers = three();
        peers.down.insert(1);
        let mut on2 = Election::new(0, 2, Some((4, 1)), start);
        assert!(on2.decide(start, false, &peers).is_some());
        on2.claim_started(start);
        assert_eq!(on2.decide(start, false, &peers), None);
        on2.claim_obtained(5);
        assert_eq!(on2.decide(start, false, &peers), None);
        on2.announced(5, 2, start);
        assert_eq!(on2.leader(), Some((5, 2)));
        assert_eq!(on2.decide(start, true, &peers), None, "leading");
        on2.claim_started(start);
        assert_eq!(on2.decide(start + CLAIM_TIMEOUT, false, &peers), Some(Claim::WasLeader));
    }

    #[test]
    fn a_claim_that_ends_after_a_later_one_does_not_bring_back_its_epoch() {
        let start = Instant::now();
        let mut election = Election::new(0, 1, None, start);
        election.claim_started(start);
        // The restarted replica applies its old leader's announcement and claims again.
        election.announced(1, 1, start);
        election.claim_started(start);
        assert!(election.claim_obtained(3), "the later claim");
        assert!(!election.claim_obtained(2), "the earlier claim, ending last");
        assert!(election.claim_obtained(4), "a claim after both");
    }

    #[test]
    fn a_restarted_leader_claims_again_and_others_wait_for_it() {
        let start = Instant::now();
        let mut peers = three();
        let mut on1 = Election::new(0, 1, Some((4, 1)), start);
        assert_eq!(on1.decide(start, false, &peers), Some(Claim::WasLeader));
        // Node 1 answers but leads nothing: the others give it the grace period first, then
        // the next node in order takes over.
        let mut on2 = Election::new(0, 2, Some((4, 1)), start);
        let mut on3 = Election::new(0, 3, Some((4, 1)), start);
        assert_eq!(on2.decide(start, false, &peers), None);
        assert_eq!(on2.decide(start + LEAD_GRACE, false, &peers), Some(Claim::LeaderIdle));
        assert_eq!(on3.decide(start + LEAD_GRACE, false, &peers), None);
        // Once node 2 leads, node 1 (back from a cut, or restarted late) does not preempt it.
        peers.leading.insert(2, 0);
        assert_eq!(on1.decide(start + LEAD_GRACE, false, &peers), None);
    }

    #[test]
    fn the_preferred_node_takes_leadership_back_after_running_a_while() {
        let start = Instant::now();
        let mut peers = three();
        peers.leading.insert(2, 0);
        let mut on1 = Election::new(0, 1, Some((6, 2)), start);
        assert_eq!(on1.decide(start, false, &peers), None);
        assert_eq!(
            on1.decide(start + REBALANCE_AFTER, false, &peers),
            Some(Claim::Rebalance)
        );
        let mut on3 = Election::new(0, 3, Some((6, 2)), start);
        assert_eq!(
            on3.decide(start + REBALANCE_AFTER, false, &peers),
            None,
            "not preferred"
        );
    }
}
