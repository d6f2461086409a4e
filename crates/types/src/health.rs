use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;

use crate::{GenerationalNodeId, NodeStatus, Role, RoleStatus};

/// The live health of this node, shared by the role scheduler (which writes it) and every
/// endpoint that reports it (`/health` on each port, `GetIdent`, `/metrics`).
#[derive(Clone)]
pub struct NodeHealth {
    inner: Arc<Mutex<HealthState>>,
    started_at: Instant,
}

/// A consistent copy of the node's health at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct HealthState {
    pub node_name: String,
    pub cluster_name: String,
    pub status: NodeStatus,
    /// Set once the node has joined its cluster.
    pub node_id: Option<GenerationalNodeId>,
    pub roles: BTreeMap<Role, RoleState>,
    /// Version of the nodes configuration this node last saw (0 = none yet).
    pub nodes_config_version: u32,
    /// Why the node is not ALIVE, if it is not.
    pub detail: String,
    pub advertised_address: String,
    /// Started with `--metadata-migration-mode`: only admin and metadata-server run.
    pub metadata_migration_mode: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoleState {
    pub status: RoleStatus,
    pub detail: String,
}

impl NodeHealth {
    pub fn new(node_name: &str, cluster_name: &str, advertised_address: &str, roles: &[Role]) -> Self {
        let roles = roles
            .iter()
            .map(|role| {
                (
                    *role,
                    RoleState {
                        status: RoleStatus::Pending,
                        detail: String::new(),
                    },
                )
            })
            .collect();
        Self {
            inner: Arc::new(Mutex::new(HealthState {
                node_name: node_name.to_owned(),
                cluster_name: cluster_name.to_owned(),
                status: NodeStatus::StartingUp,
                node_id: None,
                roles,
                nodes_config_version: 0,
                detail: "starting".to_owned(),
                advertised_address: advertised_address.to_owned(),
                metadata_migration_mode: false,
            })),
            started_at: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HealthState> {
        // A panic while holding this lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn snapshot(&self) -> HealthState {
        self.lock().clone()
    }

    pub fn age_seconds(&self) -> u64 {
        self.started_at.elapsed().as_secs()
    }

    pub fn set_role(&self, role: Role, status: RoleStatus, detail: impl Into<String>) {
        let mut state = self.lock();
        state.roles.insert(
            role,
            RoleState {
                status,
                detail: detail.into(),
            },
        );
    }

    pub fn set_status(&self, status: NodeStatus, detail: impl Into<String>) {
        let mut state = self.lock();
        state.status = status;
        state.detail = detail.into();
    }

    pub fn set_node_id(&self, node_id: GenerationalNodeId) {
        self.lock().node_id = Some(node_id);
    }

    pub fn set_nodes_config_version(&self, version: u32) {
        let mut state = self.lock();
        state.nodes_config_version = state.nodes_config_version.max(version);
    }

    pub fn set_metadata_migration_mode(&self, enabled: bool) {
        self.lock().metadata_migration_mode = enabled;
    }

    pub fn status(&self) -> NodeStatus {
        self.lock().status
    }

    /// The node's `/health` answer, the same on every port.
    pub fn to_json(&self) -> serde_json::Value {
        let state = self.snapshot();
        let roles: Vec<&str> = state.roles.keys().map(Role::as_str).collect();
        let role_states: serde_json::Map<String, serde_json::Value> = state
            .roles
            .iter()
            .map(|(role, s)| {
                (
                    role.as_str().to_owned(),
                    serde_json::json!({ "status": s.status, "detail": s.detail }),
                )
            })
            .collect();
        serde_json::json!({
            "node_name": state.node_name,
            "cluster_name": state.cluster_name,
            "node_id": state.node_id.map(|id| id.to_string()),
            "status": state.status,
            "detail": state.detail,
            "roles": roles,
            "role_status": role_states,
            "nodes_config_version": state.nodes_config_version,
            "advertised_address": state.advertised_address,
            "metadata_migration_mode": state.metadata_migration_mode,
            "age_s": self.age_seconds(),
            "version": crate::BINARY_VERSION,
        })
    }
}
