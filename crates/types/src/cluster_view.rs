use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
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
}

impl ClusterView {
    pub fn new(thresholds: LivenessThresholds) -> Self {
        Self {
            inner: Arc::default(),
            thresholds,
            created: Instant::now(),
        }
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
    pub fn heard_from(
        &self,
        node_id: GenerationalNodeId,
        uptime_s: u64,
        status: &str,
        role_status: BTreeMap<String, String>,
    ) {
        let mut peers = self.lock();
        if let Some(entry) = peers.get_mut(&node_id.id) {
            if node_id.generation < entry.node_id.generation {
                return; // an answer from an older incarnation
            }
            entry.node_id = node_id;
            entry.last_seen = Some(Instant::now());
            entry.uptime_s = uptime_s;
            entry.status = status.to_owned();
            entry.role_status = role_status;
        }
    }

    /// Every known node with its liveness, by id.
    pub fn peers(&self) -> Vec<PeerState> {
        let now = Instant::now();
        // Until the detector has run for a while, silence proves nothing.
        let warming_up = now.duration_since(self.created) < self.thresholds.suspect_after;
        self.lock()
            .values()
            .map(|entry| {
                let silence = entry.last_seen.map(|seen| now.duration_since(seen));
                let liveness = match silence {
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
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        view.heard_from(n1, 1, "ALIVE", BTreeMap::new());
        view.heard_from(n2, 1, "ALIVE", BTreeMap::new());
        assert_eq!(view.active_controller(), Some(PlainNodeId(1)));
        std::thread::sleep(Duration::from_millis(120));
        view.heard_from(n2, 2, "ALIVE", BTreeMap::new());
        let peers = view.peers();
        assert_eq!(peers[0].liveness, Liveness::Dead);
        assert_eq!(peers[1].liveness, Liveness::Alive);
        assert_eq!(view.active_controller(), Some(PlainNodeId(2)));
        // A restart shows as a higher generation; answers of the old one are ignored.
        view.heard_from(PlainNodeId(1).with_generation(2), 0, "ALIVE", BTreeMap::new());
        view.heard_from(n1, 99, "ALIVE", BTreeMap::new());
        assert_eq!(view.peers()[0].node_id.generation, 2);
        assert_eq!(view.peers()[0].uptime_s, 0);
    }
}
