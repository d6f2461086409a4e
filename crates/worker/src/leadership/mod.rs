//! Who leads a partition. Every worker node runs every partition as a replica that applies the
//! log; one of them leads (runs attempts, timers, the outbox). Leadership is an epoch claimed by
//! compare-and-swap in metadata (`pp_epoch_<id>`) and announced through the partition's log; the
//! replica whose announcement the log holds last leads, and records of older epochs are dropped
//! by every replica (`state_machine`), so a deposed leader cannot change anything.
//!
//! When to claim is decided by each replica on its own from what the log announced and what the
//! failure detector says (see [`election`]): no coordinator sits on the path of a failover, so
//! the time from a dead leader to a new one is the detection time plus one metadata write and
//! one append.

pub(crate) mod claim;
pub(crate) mod election;

pub use claim::EpochMetadata;
