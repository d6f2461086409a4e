//! Identities and small shared types of a restate-rs cluster.
//!
//! Kept deliberately small: every crate depends on it, so anything heavy here would
//! make every change rebuild the whole workspace.

mod cluster_view;
pub mod durations;
mod health;
mod identifiers;
mod ids;
pub mod manifest;
pub mod metadata;
mod replication;
mod roles;
pub mod schema;
mod status;

pub use cluster_view::{ClusterView, Liveness, LivenessThresholds, PeerState};
pub use health::{HealthState, NodeHealth, RoleState};
pub use identifiers::{
    AwakeableId, DeploymentId, IdParseError, InvocationId, InvocationSeed, PartitionKey, partition_key_of,
};
pub use ids::{ClusterFingerprint, GenerationalNodeId, PlainNodeId};
pub use replication::{ReplicationProperty, ReplicationPropertyError};
pub use roles::{ParseRoleError, Role};
pub use status::{NodeStatus, RoleStatus};

/// Version string reported in `/health`, `GetIdent` and `--version`.
pub const BINARY_VERSION: &str = env!("CARGO_PKG_VERSION");
