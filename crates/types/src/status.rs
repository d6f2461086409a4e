use std::fmt;

use serde::{Deserialize, Serialize};

/// Whole-node health, as reported by `/health` and `GetIdent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeStatus {
    StartingUp,
    Alive,
    ShuttingDown,
}

impl NodeStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeStatus::StartingUp => "STARTING_UP",
            NodeStatus::Alive => "ALIVE",
            NodeStatus::ShuttingDown => "SHUTTING_DOWN",
        }
    }
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Health of one role on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RoleStatus {
    /// Configured, not started yet.
    Pending,
    StartingUp,
    /// Waiting for the cluster to be provisioned before it can do anything.
    AwaitingProvisioning,
    Ready,
    Stopping,
    Stopped,
    Failed,
}

impl RoleStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            RoleStatus::Pending => "PENDING",
            RoleStatus::StartingUp => "STARTING_UP",
            RoleStatus::AwaitingProvisioning => "AWAITING_PROVISIONING",
            RoleStatus::Ready => "READY",
            RoleStatus::Stopping => "STOPPING",
            RoleStatus::Stopped => "STOPPED",
            RoleStatus::Failed => "FAILED",
        }
    }
}

impl fmt::Display for RoleStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
