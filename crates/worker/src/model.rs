//! The partition's data model lives in the partition API (the ingress and admin API build
//! requests from it); the worker adds what only it uses.

pub use restate_partition_api::model::*;

/// The retry policy of one handler: config defaults with the manifest's overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub initial_interval: std::time::Duration,
    pub factor: f64,
    pub max_interval: std::time::Duration,
    /// Attempts in all; `None` = unlimited.
    pub max_attempts: Option<u32>,
    /// End the invocation (instead of pausing it) when the attempts are used up.
    pub kill_on_max_attempts: bool,
}
