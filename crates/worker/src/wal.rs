//! Log records of a partition: an envelope (when, which leader, dedup) around a command.
//! Every change of partition state is one of these, applied by the state machine.

use restate_types::InvocationId;
use serde::{Deserialize, Serialize};

use crate::model::{InvocationResult, InvocationTarget, InvokeRequest, ResponseSink, Retention, SignalResult};

/// Bumped when the record layout changes incompatibly; a processor refuses newer records.
pub const RECORD_FORMAT: u8 = 3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Time the proposer stamped (ms since the epoch): the state machine's only clock.
    pub timestamp: u64,
    /// Set on what a leader proposes; records of an older leader than the current are dropped.
    pub leader_epoch: Option<u64>,
    /// Set on messages from other partitions: applied once per (producer, sequence number).
    pub dedup: Option<Dedup>,
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dedup {
    pub producer: u16,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// A processor became leader with this epoch (from `pp_epoch_<id>` in metadata).
    AnnounceLeader {
        epoch: u64,
        node: u32,
    },
    Invoke(Box<InvokeRequest>),
    /// What an attempt of the leader's invoker produced, in order (what the SDK sent at once
    /// shares one record).
    InvokerEffect {
        id: InvocationId,
        /// The invocation's epoch when the attempt started ([`InvocationStatus::epoch`]): the
        /// late effects of an attempt that was paused (and perhaps resumed since) are dropped.
        ///
        /// [`InvocationStatus::epoch`]: crate::model::InvocationStatus::epoch
        epoch: u32,
        effects: Vec<Effect>,
    },
    /// A due timer, by its key.
    FireTimer {
        wake_up: u64,
        seq: u64,
    },
    /// The result of a call, for the caller's `CallCompletion`.
    InvocationResponse {
        id: InvocationId,
        completion_id: u32,
        result: InvocationResult,
    },
    /// A signal for an invocation (index 1 = cancel; 17 and up: awakeables).
    NotifySignal {
        id: InvocationId,
        signal: u32,
        result: SignalResult,
    },
    /// Another caller waits for the invocation's result (answered at once if it completed).
    Attach {
        id: InvocationId,
        sink: ResponseSink,
    },
    /// Cancel (signal 1 to a running invocation; the SDK ends it with 409 "canceled") or kill
    /// (end at once with 409 "killed") an invocation.
    Terminate {
        id: InvocationId,
        kill: bool,
    },
    /// Stop running a started invocation until it is resumed (its timers and results still
    /// arrive).
    Pause {
        id: InvocationId,
    },
    /// Run a paused invocation again.
    Resume {
        id: InvocationId,
    },
    /// A completed invocation's retention expired: delete what is kept of it.
    Purge {
        id: InvocationId,
    },
    /// An ingress request that waited for the invocation's result went away (its client
    /// disconnected): its response sink is removed.
    Detach {
        id: InvocationId,
        request_id: u128,
    },
    /// Outbox messages up to and including this sequence number were delivered.
    TruncateOutbox {
        up_to: u64,
    },
    /// A completed invocation's journal retention expired (or an operator asked): delete its
    /// journal, keep its result.
    PurgeJournal {
        id: InvocationId,
    },
    /// Start `new_id` (chosen by the proposer, in the same partition) with the input of the
    /// ended invocation `id`.
    RestartAsNew {
        id: InvocationId,
        new_id: InvocationId,
    },
    /// Replace the whole state of an object or workflow key (the admin API's state edit). With
    /// `expected_version`, only if the current state still has that version.
    PatchState {
        service: String,
        key: String,
        state: Vec<(Vec<u8>, Vec<u8>)>,
        expected_version: Option<String>,
    },
    /// `caller` asks for the result of `id`: its `AttachInvocation` (`wait`: answered when `id`
    /// ends) or `GetInvocationOutput` (answered at once, "not ready" while it runs).
    GetOutput {
        id: InvocationId,
        caller: InvocationId,
        completion_id: u32,
        wait: bool,
    },
    /// A named signal for an invocation (`ctx.invocation(id).signal(name)` of another handler).
    NotifyNamedSignal {
        id: InvocationId,
        name: String,
        result: SignalResult,
    },
    /// The answer to [`Command::GetOutput`] for the caller `id`; `None` = not finished yet.
    OutputResponse {
        id: InvocationId,
        completion_id: u32,
        wait: bool,
        result: Option<InvocationResult>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Effect {
    /// The deployment and protocol version all attempts use (proposed before the first entry).
    Pin { deployment_id: u128, protocol_version: u32 },
    /// A journal entry the SDK sent: a command, or a run completion it proposed.
    Entry {
        /// For a command: its position among the invocation's commands (the input is 0). It
        /// must be the next one, else the record is a duplicate or follows a lost one and is
        /// dropped. `None` for run completions, which are deduplicated by completion id.
        command_index: Option<u32>,
        message_type: u16,
        payload: Vec<u8>,
        /// For `Call` and `OneWayCall`: the callee, resolved by the leader from the schema.
        call: Option<ResolvedCall>,
    },
    /// `future`: the V7 future tree (encoded); without it, any listed id resumes.
    Suspend {
        /// The commands the attempt's journal holds (see [`Effect::End`]).
        commands: u32,
        completions: Vec<u32>,
        signals: Vec<u32>,
        named_signals: Vec<String>,
        future: Option<Vec<u8>>,
    },
    /// The SDK ended the invocation. `commands`: the commands the attempt's journal holds; an
    /// end (or a suspension) is applied only when the journal holds all of them, so one that
    /// follows a lost entry cannot end the invocation without it.
    End { commands: u32 },
    /// An attempt failed and will be retried (recorded for visibility).
    AttemptFailed { attempt: u32, code: u16, message: String },
    /// Retries are exhausted (or the SDK asked): stop until resumed.
    Pause,
    /// End the invocation with this failure.
    Fail { code: u16, message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedCall {
    pub callee: InvocationId,
    pub target: InvocationTarget,
    /// Set when the call carried an idempotency key (the callee id derives from it).
    pub idempotency_key: Option<String>,
    pub retention: Retention,
}

/// A message for another partition, kept in the outbox until delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxMessage {
    pub partition_key: u64,
    pub command: Command,
}

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![RECORD_FORMAT];
        // Our own types always serialize.
        bytes.extend(postcard::to_stdvec(self).unwrap_or_default());
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&RECORD_FORMAT, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
            Some((format, _)) => Err(format!(
                "record format {format} is not known to this version (it reads format {RECORD_FORMAT})"
            )),
            None => Err("empty record".into()),
        }
    }
}

/// Milliseconds since the Unix epoch, for stamping proposals.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
