//! What a partition offers: requests that go through its log ([`PartitionApi`]) and reads of
//! its tables ([`PartitionReader`]).

use std::collections::HashMap;
use std::sync::Arc;

use restate_types::InvocationId;

use crate::answers::{AttemptInfo, Managed, Management, Output, PartitionSnapshot, Restarted, SubmitError, Terminated};
use crate::introspect::{InboxRow, JournalRow, KeyScope, LockRow, Page, Paged, PromiseRow, StateRow};
use crate::model::{InvocationResult, InvocationStatus, InvokeRequest, SignalResult};

/// Requests to one partition. Implemented by the worker's replicas (in-process) and by the
/// fabric client (a replica on another node); callers cannot tell them apart.
#[async_trait::async_trait]
pub trait PartitionApi: Send + Sync {
    fn partition_id(&self) -> u16;

    /// Stores the invocation and waits for its result (at once if an idempotent duplicate
    /// finds it completed).
    async fn call(&self, request: InvokeRequest) -> Result<(InvocationId, Arc<InvocationResult>), SubmitError>;

    /// Stores the invocation; returns whether this created it (`false`: the idempotency key or
    /// id named one that exists).
    async fn send(&self, request: InvokeRequest) -> Result<bool, SubmitError>;

    /// Delivers a signal (e.g. an awakeable's result); returns once it is durable.
    async fn signal(&self, id: InvocationId, signal: u32, result: SignalResult) -> Result<(), SubmitError>;

    /// Pauses, resumes or purges the invocation, if its state allows it.
    async fn manage(&self, id: InvocationId, operation: Management) -> Result<Managed, SubmitError>;

    /// Starts a new invocation with the input of an ended one.
    async fn restart_as_new(&self, id: InvocationId) -> Result<Restarted, SubmitError>;

    /// Replaces the whole state of an object or workflow key; returns once it is durable.
    async fn patch_state(
        &self,
        service: String,
        key: String,
        state: Vec<(Vec<u8>, Vec<u8>)>,
        expected_version: Option<String>,
    ) -> Result<(), SubmitError>;

    /// Cancels (`kill = false`) or kills the invocation.
    async fn terminate(&self, id: InvocationId, kill: bool) -> Result<Terminated, SubmitError>;

    /// Waits for the result of an existing invocation; `None` if there is none.
    async fn attach(&self, id: InvocationId) -> Result<Option<Arc<InvocationResult>>, SubmitError>;

    /// The invocation's result if it completed (and is still kept), without waiting.
    async fn output(&self, id: InvocationId) -> Result<Output, SubmitError>;
}

/// Why a read of a partition's tables failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ReadError(pub String);

/// Reads of one local replica's tables (RocksDB reads that never wait for the processor), for
/// SQL introspection.
pub trait PartitionReader: Send + Sync {
    /// What the replica reports about itself (leader, applied LSN, failure).
    fn snapshot(&self) -> PartitionSnapshot;

    /// The invocations the leader runs or retries now (empty on a follower).
    fn attempts(&self) -> HashMap<InvocationId, AttemptInfo>;

    /// The status of one invocation of this partition, if it has one.
    fn invocation_status(&self, id: &InvocationId) -> Result<Option<InvocationStatus>, ReadError>;

    /// Invocation statuses, a page at a time (rows that do not decode are skipped).
    fn invocation_statuses(&self, page: Page<'_>) -> Result<Paged<(InvocationId, InvocationStatus)>, ReadError>;

    /// The journal of one invocation, in order.
    fn journal(&self, id: &InvocationId) -> Result<Vec<JournalRow>, ReadError>;

    /// State entries of objects and workflows in `scope`, a page at a time.
    fn state(&self, scope: KeyScope<'_>, page: Page<'_>) -> Result<Paged<StateRow>, ReadError>;

    /// Inbox entries of object keys in `scope`, in order per key, a page at a time.
    fn inbox(&self, scope: KeyScope<'_>, page: Page<'_>) -> Result<Paged<InboxRow>, ReadError>;

    /// Locked object keys in `scope` and who holds each, a page at a time.
    fn locks(&self, scope: KeyScope<'_>, page: Page<'_>) -> Result<Paged<LockRow>, ReadError>;

    /// Durable promises of workflows in `scope`, a page at a time.
    fn promises(&self, scope: KeyScope<'_>, page: Page<'_>) -> Result<Paged<PromiseRow>, ReadError>;
}
