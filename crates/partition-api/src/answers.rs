//! What a partition answers: the outcomes of requests and the errors that say whether sending
//! a request again is safe. They cross the fabric between nodes, so they are serializable.

use restate_types::InvocationId;
use serde::{Deserialize, Serialize};

use crate::model::InvocationResult;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum SubmitError {
    /// No replica of the partition could be asked (this node runs none, and none of the nodes
    /// that do answered): nothing reached the log.
    #[error("{0}; retrying is safe")]
    Unreachable(String),
    /// Nothing reached the log: sending the same request again cannot run it twice.
    #[error("partition {partition} did not take the request: {reason}; retrying is safe")]
    Refused { partition: u16, reason: String },
    /// The append failed in a way that leaves open whether the request was stored.
    #[error(
        "it is unknown whether partition {partition} stored the request ({reason}); sending it again could run \
         it twice unless it carries an idempotency key"
    )]
    Unknown { partition: u16, reason: String },
    /// The partition cannot apply its log (see its `failure`).
    #[error("partition {partition} is failed: {reason}")]
    Failed { partition: u16, reason: String },
    #[error("partition {0} stopped before the invocation completed")]
    Stopped(u16),
    /// Too many requests wait for this invocation; newer ones took this one's place.
    #[error("too many requests wait for this invocation's result; attach again")]
    Evicted,
    /// The request is stored (it will take effect), but its answer cannot come now: sending it
    /// again would run it twice.
    #[error(
        "partition {partition} stored the request as invocation {id}, but cannot answer it now ({reason}); \
         do not send it again: GET /restate/invocation/{id}/attach gives its result"
    )]
    Unanswered {
        partition: u16,
        id: InvocationId,
        reason: String,
    },
}

impl SubmitError {
    /// Whether the same request may be sent again without running anything twice.
    pub fn retry_is_safe(&self) -> bool {
        !matches!(self, SubmitError::Unknown { .. } | SubmitError::Unanswered { .. })
    }
}

/// Operations on one invocation through the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Management {
    Pause,
    Resume,
    Purge,
    /// Delete the journal of a completed invocation, keep its result.
    PurgeJournal,
}

/// What restarting an ended invocation as a new one did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Restarted {
    Started(InvocationId),
    NotFound,
    /// It has not ended: kill or cancel it first.
    StillRunning,
    /// It is scheduled or inboxed: there is nothing to restart yet.
    NotStarted,
    /// Its journal (with the input) is no longer kept.
    JournalGone,
    /// Workflows run once per key, so they cannot be restarted under a new id.
    Workflow,
}

/// What a pause, resume or purge did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Managed {
    Done,
    NotFound,
    /// Not in a state that allows it, and why.
    Refused(String),
}

/// What a cancel or kill did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Terminated {
    /// Ended (killed, or canceled before it started).
    Done,
    /// A running invocation was asked to cancel; it ends once its SDK handled the signal.
    Requested,
    NotFound,
    AlreadyCompleted,
}

/// An invocation's output as `GET …/output` sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    NotFound,
    NotReady,
    Completed(InvocationResult),
}

/// What a processor reports about itself (for `restatectl` and `/metrics`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PartitionSnapshot {
    pub partition_id: u16,
    pub applied_lsn: u64,
    /// Records up to here are applied and flushed to disk: a crash of the machine loses
    /// nothing below it, so the log below it is not needed by this replica again.
    pub durable_lsn: u64,
    /// The oldest snapshot in the repository starts after this LSN: a replica that loses
    /// its disk needs the log above it only. `None` without a repository or a snapshot.
    pub archived_lsn: Option<u64>,
    /// The partition's log holds no records below this LSN (as of this replica's last check).
    pub trim_point: Option<u64>,
    pub is_leader: bool,
    pub leader_epoch: Option<u64>,
    /// Why the partition cannot apply its log (it is held at a record, or its store fails);
    /// while set, requests for it are refused at once.
    pub failure: Option<String>,
    /// Why its log could not be read for a while (it keeps trying).
    pub log_problem: Option<String>,
    /// Why its leader cannot deliver the outbox on (messages stay until they can be).
    pub outbox_problem: Option<String>,
}

/// What the leader's invoker knows about an invocation it runs or retries: the in-memory part
/// of `sys_invocation_state` (what the log holds is in the invocation status).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptInfo {
    /// An attempt is running now.
    pub in_flight: bool,
    /// Failed attempts since the journal last grew.
    pub retry_count: u32,
    pub last_start_at: Option<u64>,
    /// When the next attempt starts, while backing off.
    pub next_retry_at: Option<u64>,
    pub deployment_id: Option<restate_types::DeploymentId>,
    /// The SDK the deployment reported.
    pub server: Option<String>,
    /// Code and message of the last failed attempt.
    pub last_failure: Option<(u16, String)>,
}
