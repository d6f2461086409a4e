use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ClusterFingerprint, GenerationalNodeId, PlainNodeId, Role};

/// Every node of the cluster; key `nodes_config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodesConfiguration {
    pub cluster_name: String,
    pub cluster_fingerprint: ClusterFingerprint,
    /// Nodes by plain id.
    pub nodes: BTreeMap<PlainNodeId, NodeConfig>,
}

/// One node as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    pub id: PlainNodeId,
    /// Bumped on every restart of the node.
    pub generation: u32,
    pub name: String,
    /// Fabric URL of the node.
    pub address: String,
    pub roles: Vec<Role>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub log_server_state: StorageState,
    #[serde(default)]
    pub binary_version: String,
}

/// Storage state of a log-server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageState {
    /// Not yet ready to take records.
    #[default]
    Provisioning,
    ReadWrite,
    ReadOnly,
    /// The node lost records it had acknowledged.
    DataLoss,
    Disabled,
    /// Retired for good by an operator; never used again.
    Gone,
}

impl StorageState {
    /// Every state, for listing what an operator may type.
    pub const ALL: [StorageState; 6] = [
        StorageState::Provisioning,
        StorageState::ReadWrite,
        StorageState::ReadOnly,
        StorageState::DataLoss,
        StorageState::Disabled,
        StorageState::Gone,
    ];

    /// The kebab-case name used in configs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageState::Provisioning => "provisioning",
            StorageState::ReadWrite => "read-write",
            StorageState::ReadOnly => "read-only",
            StorageState::DataLoss => "data-loss",
            StorageState::Disabled => "disabled",
            StorageState::Gone => "gone",
        }
    }
}

impl std::fmt::Display for StorageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StorageState {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        StorageState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = StorageState::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown storage state `{text}`; expected one of: {}", names.join(", "))
            })
    }
}

impl NodesConfiguration {
    pub fn new(cluster_name: &str, cluster_fingerprint: ClusterFingerprint) -> Self {
        Self {
            cluster_name: cluster_name.to_owned(),
            cluster_fingerprint,
            nodes: BTreeMap::new(),
        }
    }

    pub fn find_by_name(&self, name: &str) -> Option<&NodeConfig> {
        self.nodes.values().find(|node| node.name == name)
    }

    /// The id a new node gets: the highest id + 1 (ids start at 1).
    pub fn next_free_id(&self) -> PlainNodeId {
        PlainNodeId(self.nodes.keys().map(|id| id.0).max().unwrap_or(0) + 1)
    }

    pub fn with_role(&self, role: Role) -> impl Iterator<Item = &NodeConfig> {
        self.nodes.values().filter(move |node| node.roles.contains(&role))
    }
}

impl NodeConfig {
    pub fn generational_id(&self) -> GenerationalNodeId {
        self.id.with_generation(self.generation)
    }
}
