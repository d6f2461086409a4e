//! What the partition store holds about invocations, timers and messages.

use restate_types::InvocationId;
use restate_types::manifest::{HandlerType, ServiceType};
use serde::{Deserialize, Serialize};

/// The service and handler an invocation runs, resolved from the schema when it was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationTarget {
    pub service: String,
    pub handler: String,
    /// Object or workflow key; `None` for plain services.
    pub key: Option<String>,
    pub service_type: ServiceType,
    pub handler_type: HandlerType,
}

impl InvocationTarget {
    /// An exclusive handler of a virtual object: runs alone per key, behind the key's lock.
    pub fn is_exclusive(&self) -> bool {
        self.service_type == ServiceType::VirtualObject && self.handler_type == HandlerType::Exclusive
    }

    pub fn can_read_state(&self) -> bool {
        self.service_type != ServiceType::Service
    }

    pub fn can_write_state(&self) -> bool {
        match self.service_type {
            ServiceType::Service => false,
            ServiceType::VirtualObject => self.handler_type == HandlerType::Exclusive,
            ServiceType::Workflow => self.handler_type == HandlerType::Workflow,
        }
    }
}

impl std::fmt::Display for InvocationTarget {
    /// `service/handler`, or `service/key/handler` for objects and workflows.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}/{}/{}", self.service, key, self.handler),
            None => write!(f, "{}/{}", self.service, self.handler),
        }
    }
}

/// The invocation whose call or send created another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub id: InvocationId,
    /// Its target, as `service[/key]/handler`.
    pub target: String,
}

/// Who waits for the result of an invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseSink {
    /// An ingress request waiting on this node (the id is random per request).
    Ingress { request_id: u128 },
    /// Another invocation's `Call`, completed through a `CallCompletion` notification.
    Invocation { caller: InvocationId, completion_id: u32 },
    /// Another invocation's `AttachInvocation`, completed through an `AttachInvocationCompletion`.
    Attached { caller: InvocationId, completion_id: u32 },
}

/// What waits behind the lock of a virtual object key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InboxEntry {
    Invocation(InvocationId),
    /// A state replacement from the admin API, applied when the lock is free.
    StatePatch {
        state: Vec<(Vec<u8>, Vec<u8>)>,
        expected_version: Option<String>,
    },
}

/// The result of a finished invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvocationResult {
    Success(Vec<u8>),
    /// `metadata`: the key/value pairs a terminal error carried (protocol V6+).
    Failure {
        code: u16,
        message: String,
        metadata: Vec<(String, String)>,
    },
}

impl InvocationResult {
    /// A failure without metadata.
    pub fn failure(code: u16, message: impl Into<String>) -> Self {
        Self::Failure {
            code,
            message: message.into(),
            metadata: Vec::new(),
        }
    }
}

/// What a signal (an awakeable's completion, or `SendSignal` of another invocation) carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignalResult {
    Void,
    Value(Vec<u8>),
    Failure { code: u16, message: String },
}

/// How long (ms; 0 = not at all) an ended invocation keeps its status and result, and its
/// journal; fixed when it is created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub completion: u64,
    pub journal: u64,
}

/// A new invocation, as the ingress or a calling invocation asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvokeRequest {
    pub id: InvocationId,
    pub target: InvocationTarget,
    pub argument: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// Start no earlier than this (ms since the epoch): a delayed send.
    pub execution_time: Option<u64>,
    pub response_sink: Option<ResponseSink>,
    /// The `idempotency-key` the id was derived from (the same key gives the same invocation).
    pub idempotency_key: Option<String>,
    pub retention: Retention,
    /// The ended invocation an operator restarted as this one.
    pub restarted_from: Option<InvocationId>,
    /// The invocation that called or sent it (`None`: the ingress, or a restart).
    pub invoked_by: Option<Caller>,
    /// An ingress request waiting to learn whether this created the invocation (a send).
    pub submit_notification: Option<u128>,
}

/// Where an invocation is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Waits for its execution time.
    Scheduled,
    /// Waits for the lock of its virtual object key.
    Inboxed { seq: u64 },
    /// Runs (or is about to run) on the leader's invoker.
    Invoked,
    /// Waits for one of these completions or signals.
    Suspended {
        completions: Vec<u32>,
        signals: Vec<u32>,
        named_signals: Vec<String>,
        /// The V7 future tree (encoded `Future`): resumes when it resolves.
        future: Option<Vec<u8>>,
    },
    /// Stopped after its retries ran out; needs a manual resume.
    Paused,
    /// Finished; kept (with `output` holding the result) until its retention expires.
    Completed { at: u64 },
}

impl Phase {
    /// Started and not finished: it has a journal that notifications may extend.
    pub fn is_in_flight(&self) -> bool {
        matches!(self, Phase::Invoked | Phase::Suspended { .. } | Phase::Paused)
    }
}

/// The deployment and protocol version an invocation stays on for all its attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedDeployment {
    pub deployment_id: u128,
    pub protocol_version: u32,
}

/// The last failed attempt, kept so operators can see why an invocation is retrying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastFailure {
    pub at: u64,
    pub attempt: u32,
    pub code: u16,
    pub message: String,
}

/// One invocation that has not finished yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationStatus {
    pub target: InvocationTarget,
    pub phase: Phase,
    pub sinks: Vec<ResponseSink>,
    /// Entries (commands and notifications) in the journal.
    pub journal_length: u32,
    /// Commands among them.
    pub commands: u32,
    pub pinned: Option<PinnedDeployment>,
    pub created_at: u64,
    /// When the journal last grew (ms), for `duration_since_last_stored_entry`.
    pub journal_modified_at: u64,
    pub execution_time: Option<u64>,
    /// The last `Output` command: the result once the SDK ends.
    pub output: Option<InvocationResult>,
    pub last_failure: Option<LastFailure>,
    pub idempotency_key: Option<String>,
    pub retention: Retention,
    /// Where it came from when an operator restarted an ended invocation as new.
    pub restarted_from: Option<InvocationId>,
    pub invoked_by: Option<Caller>,
    /// Bumped when an operator pauses it: effects of attempts started before carry the old
    /// epoch and are dropped, so a paused attempt's late proposals never reach a later journal.
    pub epoch: u32,
}

/// Who holds the lock of a virtual object key, and where the search for the next in its inbox
/// starts (every entry of the key below it was taken or removed, so the search never wades
/// through their deletions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    pub id: InvocationId,
    pub inbox_from: u64,
}

/// A workflow's durable promise: its result once completed, and who waits for it meanwhile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromiseState {
    pub result: Option<InvocationResult>,
    /// (invocation, completion id) of each `GetPromise` waiting.
    pub listeners: Vec<(InvocationId, u32)>,
}

/// A durable timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timer {
    /// Start a delayed invocation.
    Invoke(InvocationId),
    /// Complete a `Sleep` command.
    Sleep { id: InvocationId, completion_id: u32 },
}
