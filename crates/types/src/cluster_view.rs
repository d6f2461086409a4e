use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{GenerationalNodeId, PlainNodeId, Role};

/// Liveness of a peer, as this node's failure detector sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Liveness {
    Alive,
    /// Missed a few heartbeats: maybe gone, maybe slow.
    Suspect,
    Dead,
}

impl Liveness {
    pub fn as_str(&self) -> &'static str {
        match self {
            Liveness::Alive => "ALIVE",
            Liveness::Suspect => "SUSPECT",
            Liveness::Dead => "DEAD",
        }
    }
}

/// What this node knows about one node of the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct PeerState {
    pub node_id: GenerationalNodeId,
    pub name: String,
    pub address: String,
    pub roles: Vec<Role>,
    pub liveness: Liveness,
    /// Milliseconds since the last heartbeat answer (`None`: never heard of it).
    pub last_seen_ms_ago: Option<u64>,
    pub uptime_s: u64,
    /// Status of each role as the peer reported it.
    pub role_status: BTreeMap<String, String>,
    /// The peer's node status (ALIVE, STARTING_UP, …).
    pub status: String,
    /// The partitions the peer said it leads in its last heartbeat.
    pub leading_partitions: Vec<u16>,
}

#[derive(Debug, Clone)]
struct PeerEntry {
    node_id: GenerationalNodeId,
    name: String,
    address: String,
    roles: Vec<Role>,
    last_seen: Option<Instant>,
    uptime_s: u64,
    role_status: BTreeMap<String, String>,
    status: String,
    leading_partitions: Vec<u16>,
    durable_lsns: BTreeMap<u16, u64>,
    /// A connection to it was refused since it was last heard from: on loopback and on a
    /// reachable host that means no process listens, so it is dead without waiting out silence.
    refused: bool,
}

impl PeerEntry {
    /// Refused a connection, or answered before and has been silent for `silence` since.
    fn silent_for(&self, silence: Duration) -> bool {
        self.refused || self.last_seen.is_some_and(|seen| seen.elapsed() >= silence)
    }
}

/// What a heartbeat says about its sender.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub uptime_s: u64,
    /// The sender's node status (ALIVE, STARTING_UP, …).
    pub status: String,
    pub role_status: BTreeMap<String, String>,
    pub leading_partitions: Vec<u16>,
    /// The durable LSN of each partition replica the sender runs: what a leader may trim its
    /// partition's log up to depends on its followers' (see the worker's durability modes).
    pub durable_lsns: BTreeMap<u16, u64>,
}

/// Thresholds of the failure detector.
#[derive(Debug, Clone, Copy)]
pub struct LivenessThresholds {
    pub suspect_after: Duration,
    pub dead_after: Duration,
}

/// This node's view of the cluster: every node of the nodes configuration with its liveness.
/// Written by the failure detector, read by `/health`, the admin API and the cluster
/// controller, so all of them report the same view.
#[derive(Clone)]
pub struct ClusterView {
    inner: Arc<Mutex<BTreeMap<PlainNodeId, PeerEntry>>>,
    thresholds: LivenessThresholds,
    created: Instant,
    own: Arc<OnceLock<PlainNodeId>>,
}

impl ClusterView {
    pub fn new(thresholds: LivenessThresholds) -> Self {
        Self {
            inner: Arc::default(),
            thresholds,
            created: Instant::now(),
            own: Arc::default(),
        }
    }

    /// Names this node in the view. A running node is never silent to itself: its own
    /// heartbeat tick may run late when the node is busy, and a node that took that for
    /// silence would pass over its own metadata server or give up its own partitions.
    pub fn set_own(&self, node: PlainNodeId) {
        let _ = self.own.set(node);
    }

    /// The peers, with this node's own entry heard from just now (see [`Self::set_own`]).
    fn current(&self) -> MutexGuard<'_, BTreeMap<PlainNodeId, PeerEntry>> {
        let mut peers = self.lock();
        if let Some(entry) = self.own.get().and_then(|own| peers.get_mut(own)) {
            entry.last_seen = Some(Instant::now());
            entry.refused = false;
        }
        peers
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<PlainNodeId, PeerEntry>> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the membership from the nodes configuration; keeps what is known of known nodes.
    pub fn set_members(&self, members: impl IntoIterator<Item = (GenerationalNodeId, String, String, Vec<Role>)>) {
        let mut peers = self.lock();
        let mut seen = Vec::new();
        for (node_id, name, address, roles) in members {
            seen.push(node_id.id);
            let entry = peers.entry(node_id.id).or_insert_with(|| PeerEntry {
                node_id,
                name: name.clone(),
                address: address.clone(),
                roles: roles.clone(),
                last_seen: None,
                uptime_s: 0,
                role_status: BTreeMap::new(),
                status: String::new(),
                leading_partitions: Vec::new(),
                durable_lsns: BTreeMap::new(),
                refused: false,
            });
            if node_id.generation > entry.node_id.generation {
                entry.node_id = node_id;
            }
            entry.name = name;
            entry.address = address;
            entry.roles = roles;
        }
        peers.retain(|id, _| seen.contains(id));
    }

    /// Records a heartbeat answer (or this node's own state).
    pub fn heard_from(&self, node_id: GenerationalNodeId, heartbeat: Heartbeat) {
        let mut peers = self.lock();
        if let Some(entry) = peers.get_mut(&node_id.id) {
            if node_id.generation < entry.node_id.generation {
                return; // an answer from an older incarnation
            }
            entry.node_id = node_id;
            entry.last_seen = Some(Instant::now());
            entry.uptime_s = heartbeat.uptime_s;
            entry.status = heartbeat.status;
            entry.role_status = heartbeat.role_status;
            entry.leading_partitions = heartbeat.leading_partitions;
            entry.durable_lsns = heartbeat.durable_lsns;
            entry.refused = false;
        }
    }

    /// Records that a connection to `node` was refused: it counts as dead until it answers again.
    pub fn connection_refused(&self, node: PlainNodeId) {
        if let Some(entry) = self.lock().get_mut(&node) {
            entry.refused = true;
            entry.leading_partitions.clear();
        }
    }

    /// Whether `node` answered within `silence` (and no connection to it was refused since).
    /// Nodes not heard from yet count as responsive while the detector warms up, so a node
    /// that just started waits for its peers' first answers before taking over from them.
    pub fn responsive(&self, node: PlainNodeId, silence: Duration) -> bool {
        let now = Instant::now();
        let warming_up = now.duration_since(self.created) < self.thresholds.suspect_after;
        self.current().get(&node).is_some_and(|entry| match entry.last_seen {
            _ if entry.refused => false,
            Some(seen) => now.duration_since(seen) < silence,
            None => warming_up,
        })
    }

    /// Whether a node refused a connection, or answered before and has been silent for
    /// `silence` since. Nodes never heard from are not silent: nothing is known of them (a node
    /// that just started must still reach its peers). Shorter than `dead_after`, for the paths
    /// that must move on quickly from a node that stopped answering (leaders, sequencers,
    /// copies, the metadata leader).
    pub fn silent(&self, node: PlainNodeId, silence: Duration) -> bool {
        self.current().get(&node).is_some_and(|entry| entry.silent_for(silence))
    }

    /// Whether the node whose advertised address `is_address` accepts is [`silent`](Self::silent):
    /// for clients that know servers by address only (the metadata client).
    pub fn silent_at(&self, is_address: impl Fn(&str) -> bool, silence: Duration) -> bool {
        self.current()
            .values()
            .any(|entry| is_address(&entry.address) && entry.silent_for(silence))
    }

    /// Whether `node`'s last heartbeat said it leads `partition`.
    pub fn leads(&self, node: PlainNodeId, partition: u16) -> bool {
        self.lock()
            .get(&node)
            .is_some_and(|entry| !entry.refused && entry.leading_partitions.contains(&partition))
    }

    /// The durable LSN of `node`'s replica of `partition` as its last heartbeat said (kept
    /// while the node is down: what it made durable stays on its disk). `None` if it never said.
    pub fn durable_lsn(&self, node: PlainNodeId, partition: u16) -> Option<u64> {
        self.lock()
            .get(&node)
            .and_then(|entry| entry.durable_lsns.get(&partition).copied())
    }

    /// The nodes with `role`, by id.
    pub fn nodes_with_role(&self, role: Role) -> Vec<PlainNodeId> {
        self.lock()
            .values()
            .filter(|entry| entry.roles.contains(&role))
            .map(|entry| entry.node_id.id)
            .collect()
    }

    /// Every known node with its liveness, by id.
    pub fn peers(&self) -> Vec<PeerState> {
        let now = Instant::now();
        // Until the detector has run for a while, silence proves nothing.
        let warming_up = now.duration_since(self.created) < self.thresholds.suspect_after;
        self.current()
            .values()
            .map(|entry| {
                let silence = entry.last_seen.map(|seen| now.duration_since(seen));
                let liveness = match silence {
                    _ if entry.refused => Liveness::Dead,
                    Some(s) if s < self.thresholds.suspect_after => Liveness::Alive,
                    Some(s) if s < self.thresholds.dead_after => Liveness::Suspect,
                    None if warming_up => Liveness::Suspect,
                    _ => Liveness::Dead,
                };
                PeerState {
                    node_id: entry.node_id,
                    name: entry.name.clone(),
                    address: entry.address.clone(),
                    roles: entry.roles.clone(),
                    liveness,
                    last_seen_ms_ago: silence.map(|s| s.as_millis() as u64),
                    uptime_s: entry.uptime_s,
                    role_status: entry.role_status.clone(),
                    status: entry.status.clone(),
                    leading_partitions: entry.leading_partitions.clone(),
                }
            })
            .collect()
    }

    /// Whether the failure detector holds `node` dead (unknown nodes are not).
    pub fn is_dead(&self, node: PlainNodeId) -> bool {
        self.peers()
            .iter()
            .any(|p| p.node_id.id == node && p.liveness == Liveness::Dead)
    }

    /// The node that runs the cluster controller: the alive admin node with the lowest id.
    pub fn active_controller(&self) -> Option<PlainNodeId> {
        self.peers()
            .into_iter()
            .filter(|p| p.liveness == Liveness::Alive && p.roles.contains(&Role::Admin))
            .map(|p| p.node_id.id)
            .min()
    }

    /// The view as JSON, the same in `/health` and the admin API's `/cluster-health`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "controller": self.active_controller().map(|id| id.to_string()),
            "nodes": self.peers().iter().map(|p| serde_json::json!({
                "node_id": p.node_id.to_string(),
                "name": p.name,
                "address": p.address,
                "roles": p.roles,
                "liveness": p.liveness,
                "status": p.status,
                "last_seen_ms_ago": p.last_seen_ms_ago,
                "uptime_s": p.uptime_s,
                "role_status": p.role_status,
                "leading_partitions": p.leading_partitions,
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(uptime_s: u64) -> Heartbeat {
        Heartbeat {
            uptime_s,
            status: "ALIVE".into(),
            ..Heartbeat::default()
        }
    }

    #[test]
    fn a_node_is_never_silent_to_itself_however_late_its_own_tick() {
        let view = ClusterView::new(LivenessThresholds {
            suspect_after: Duration::from_millis(50),
            dead_after: Duration::from_millis(100),
        });
        let (me, peer) = (PlainNodeId(1).with_generation(1), PlainNodeId(2).with_generation(1));
        view.set_members([
            (me, "me".into(), "http://me/".into(), vec![Role::MetadataServer]),
            (peer, "peer".into(), "http://peer/".into(), vec![Role::MetadataServer]),
        ]);
        view.set_own(me.id);
        view.heard_from(me, beat(1));
        view.heard_from(peer, beat(1));
        view.connection_refused(me.id);
        std::thread::sleep(Duration::from_millis(120));
        let silence = Duration::from_millis(20);
        assert!(!view.silent(me.id, silence));
        assert!(!view.silent_at(|address| address == "http://me/", silence));
        assert!(view.responsive(me.id, silence));
        assert!(view.silent(peer.id, silence));
        assert!(view.silent_at(|address| address == "http://peer/", silence));
        let liveness: Vec<_> = view.peers().iter().map(|p| (p.node_id.id, p.liveness)).collect();
        assert_eq!(liveness, vec![(me.id, Liveness::Alive), (peer.id, Liveness::Dead)]);
    }

    #[test]
    fn a_refused_connection_makes_a_node_dead_until_it_answers_again() {
        let view = ClusterView::new(LivenessThresholds {
            suspect_after: Duration::from_secs(10),
            dead_after: Duration::from_secs(20),
        });
        let n1 = PlainNodeId(1).with_generation(1);
        view.set_members([(n1, "a".into(), "http://a/".into(), vec![Role::Worker])]);
        view.heard_from(
            n1,
            Heartbeat {
                leading_partitions: vec![3],
                ..beat(1)
            },
        );
        assert!(view.responsive(n1.id, Duration::from_secs(1)));
        assert!(view.leads(n1.id, 3));
        view.connection_refused(n1.id);
        assert!(view.is_dead(n1.id));
        assert!(!view.responsive(n1.id, Duration::from_secs(1)));
        assert!(!view.leads(n1.id, 3), "a node that refuses connections leads nothing");
        assert!(view.silent(n1.id, Duration::from_secs(1)));
        assert!(
            !view.silent(PlainNodeId(9), Duration::from_secs(1)),
            "unknown nodes are not silent"
        );
        view.heard_from(PlainNodeId(1).with_generation(2), beat(0));
        assert!(!view.is_dead(n1.id));
        assert_eq!(view.nodes_with_role(Role::Worker), vec![n1.id]);
    }

    #[test]
    fn a_node_never_heard_from_is_not_silent() {
        let view = ClusterView::new(LivenessThresholds {
            suspect_after: Duration::from_millis(1),
            dead_after: Duration::from_millis(2),
        });
        let n1 = PlainNodeId(1).with_generation(1);
        view.set_members([(n1, "a".into(), "http://a/".into(), vec![Role::MetadataServer])]);
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            !view.silent(n1.id, Duration::from_millis(5)),
            "nothing is known of it yet"
        );
        view.heard_from(n1, beat(1));
        std::thread::sleep(Duration::from_millis(20));
        assert!(view.silent(n1.id, Duration::from_millis(5)));
    }

    #[test]
    fn liveness_follows_heartbeats_and_generations() {
        let view = ClusterView::new(LivenessThresholds {
            suspect_after: Duration::from_millis(50),
            dead_after: Duration::from_millis(100),
        });
        let n1 = PlainNodeId(1).with_generation(1);
        let n2 = PlainNodeId(2).with_generation(1);
        view.set_members([
            (n1, "a".into(), "http://a/".into(), vec![Role::Admin]),
            (n2, "b".into(), "http://b/".into(), vec![Role::Admin]),
        ]);
        view.heard_from(n1, beat(1));
        view.heard_from(n2, beat(1));
        assert_eq!(view.active_controller(), Some(PlainNodeId(1)));
        std::thread::sleep(Duration::from_millis(120));
        view.heard_from(n2, beat(2));
        let peers = view.peers();
        assert_eq!(peers[0].liveness, Liveness::Dead);
        assert_eq!(peers[1].liveness, Liveness::Alive);
        assert_eq!(view.active_controller(), Some(PlainNodeId(2)));
        // A restart shows as a higher generation; answers of the old one are ignored.
        view.heard_from(PlainNodeId(1).with_generation(2), beat(0));
        view.heard_from(n1, beat(99));
        assert_eq!(view.peers()[0].node_id.generation, 2);
        assert_eq!(view.peers()[0].uptime_s, 0);
    }

    #[test]
    fn a_durable_lsn_outlives_the_node_that_reported_it() {
        let view = ClusterView::new(LivenessThresholds {
            suspect_after: Duration::from_secs(10),
            dead_after: Duration::from_secs(20),
        });
        let n1 = PlainNodeId(1).with_generation(1);
        view.set_members([(n1, "a".into(), "http://a/".into(), vec![Role::Worker])]);
        assert_eq!(view.durable_lsn(n1.id, 0), None, "nothing heard yet");
        view.heard_from(
            n1,
            Heartbeat {
                durable_lsns: BTreeMap::from([(0, 42)]),
                ..beat(1)
            },
        );
        view.connection_refused(n1.id);
        // What it flushed is still on its disk when it comes back.
        assert_eq!(view.durable_lsn(n1.id, 0), Some(42));
        assert_eq!(view.durable_lsn(n1.id, 1), None);
    }
}
