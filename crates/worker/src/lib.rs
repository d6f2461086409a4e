//! The `worker` role: partition processors that run invocations.

/// Logged once when the role starts, so operators know what this build does not do yet.
pub const LIMITATION: &str = "the worker role does not run partition processors yet: no invocation is executed";
