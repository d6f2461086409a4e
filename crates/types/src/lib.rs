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
mod state_version;
mod status;

pub use cluster_view::{ClusterView, Heartbeat, Liveness, LivenessThresholds, PeerState};
pub use health::{HealthState, NodeHealth, RoleState};
pub use identifiers::{
    AwakeableId, DeploymentId, IdParseError, InvocationId, InvocationSeed, PartitionKey, partition_key_of,
};
pub use ids::{ClusterFingerprint, GenerationalNodeId, PlainNodeId};
pub use replication::{ReplicationProperty, ReplicationPropertyError};
pub use roles::{ParseRoleError, Role};
pub use state_version::state_version;
pub use status::{NodeStatus, RoleStatus};

/// Version string reported in `/health`, `GetIdent` and `--version`.
pub const BINARY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The Restate release whose admin API, SQL tables and service protocol this build serves.
/// Clients gate features on the version they are told (the web UI picks its SQL by it), so
/// `/version` names that release, with this build's own version as semver build metadata.
pub const COMPATIBLE_RESTATE_VERSION: &str = "1.7.12";

/// `1.7.12+restate-rs.0.1.0`: what `/version` reports.
pub fn reported_version() -> String {
    format!("{COMPATIBLE_RESTATE_VERSION}+restate-rs.{BINARY_VERSION}")
}

/// An error with its causes, for messages that must say why ("error sending request:
/// connection refused"); a cause already contained in the text is not repeated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
