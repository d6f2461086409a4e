//! The partition state machine: applies one log record to the partition store.
//!
//! Pure: its inputs are the record and the store, its outputs are writes (into the [`Txn`])
//! and [`Action`]s for the leader. No clock, randomness or I/O: two replicas that apply the
//! same records end with the same bytes.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use restate_partition_store::{Key, PartitionStoreError, TableKind, Txn, read_u64};
use restate_service_protocol::{MessageType, proto};
use restate_types::manifest::HandlerType;
use restate_types::metadata::Lsn;
use restate_types::{AwakeableId, InvocationId};

use crate::model::{
    Caller, InvocationResult, InvocationStatus, InvokeRequest, LastFailure, LockHolder, Phase, PinnedDeployment,
    PromiseState, ResponseSink, SignalResult, Timer,
};
use crate::wal::{Command, Effect, Envelope, OutboxMessage, ResolvedCall};

/// Keys of the fsm table.
pub mod fsm {
    pub const APPLIED_LSN: u8 = 0;
    pub const LEADER_EPOCH: u8 = 1;
    pub const NEXT_INBOX_SEQ: u8 = 2;
    pub const NEXT_TIMER_SEQ: u8 = 3;
    pub const NEXT_OUTBOX_SEQ: u8 = 4;
    /// Outbox messages up to this sequence number were delivered and deleted.
    pub const OUTBOX_TRUNCATED: u8 = 5;
    /// The node that announced `LEADER_EPOCH`.
    pub const LEADER_NODE: u8 = 6;
}

/// What the leader does after a record is applied (followers ignore all of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start an attempt of this invocation.
    Invoke(InvocationId),
    /// A notification was appended: deliver it live to a running attempt.
    Notify {
        id: InvocationId,
        index: u32,
        message_type: u16,
        payload: Bytes,
    },
    /// Stop the running attempt (the invocation ended or paused).
    Abort(InvocationId),
    RegisterTimer {
        wake_up: u64,
        seq: u64,
    },
    /// A timer was deleted before it came due (its invocation ended).
    CancelTimer {
        wake_up: u64,
        seq: u64,
    },
    /// A message is waiting in the outbox.
    Outbox {
        seq: u64,
    },
    /// The result for an ingress request; shared, not copied, however many wait for it.
    IngressResponse {
        request_id: u128,
        id: InvocationId,
        result: Arc<InvocationResult>,
    },
    /// An ingress request's sink was dropped to make room for newer ones (see
    /// [`MAX_INGRESS_SINKS`]): it should attach again.
    IngressEvicted {
        request_id: u128,
    },
    /// An ingress request attached to an invocation that does not exist.
    IngressNotFound {
        request_id: u128,
    },
    /// An ingress send learns whether it created the invocation (`new`) or found it.
    Submitted {
        request_id: u128,
        id: InvocationId,
        new: bool,
    },
    /// A new invocation was stored.
    Created,
    /// An invocation ended (with a failure or not).
    Completed {
        failed: bool,
    },
    /// A leader announced itself with this epoch.
    LeaderAnnounced {
        epoch: u64,
        node: u32,
    },
}

pub type ApplyResult<T> = Result<T, PartitionStoreError>;

/// The state machine of one partition.
pub struct StateMachine {
    pub partition_id: u16,
    pub key_range: RangeInclusive<u64>,
    /// Commands for this partition that the record being applied produced (an answer to a
    /// same-partition caller, a call to a same-partition callee). Each runs after the command
    /// before it is fully stored, exactly as if it were the next record of the log: applying
    /// it in the middle would let it read (and then overwrite) a half-updated invocation.
    inline: RefCell<VecDeque<Command>>,
}

/// Response sinks of ingress requests one invocation keeps at most; a newer one replaces the
/// oldest, whose request is told to attach again. Bounds what every status write carries.
pub const MAX_INGRESS_SINKS: usize = 128;

/// The built-in signal that asks an invocation to cancel itself.
const CANCEL_SIGNAL: u32 = 1;

fn fsm_key(id: u8) -> Key {
    Key::new(TableKind::Fsm).u8(id)
}

pub fn status_key(id: &InvocationId) -> Key {
    Key::new(TableKind::InvocationStatus).invocation(id)
}

pub fn journal_prefix(id: &InvocationId) -> Key {
    Key::new(TableKind::Journal).invocation(id)
}

pub fn journal_key(id: &InvocationId, index: u32) -> Key {
    journal_prefix(id).u32(index)
}

pub(crate) fn completion_key(id: &InvocationId, completion_id: u32) -> Key {
    Key::new(TableKind::JournalNotification)
        .invocation(id)
        .u8(b'c')
        .u32(completion_id)
}

pub(crate) fn signal_key(id: &InvocationId, signal: u32) -> Key {
    Key::new(TableKind::JournalNotification)
        .invocation(id)
        .u8(b's')
        .u32(signal)
}

pub(crate) fn named_signal_key(id: &InvocationId, name: &str) -> Key {
    Key::new(TableKind::JournalNotification)
        .invocation(id)
        .u8(b'n')
        .str(name)
}

pub fn state_prefix(service: &str, key: &str) -> Key {
    Key::new(TableKind::State).str(service).str(key)
}

fn promise_prefix(service: &str, key: &str) -> Key {
    Key::new(TableKind::Promise).str(service).str(key)
}

fn lock_key(service: &str, key: &str) -> Key {
    Key::new(TableKind::ServiceLock).str(service).str(key)
}

fn inbox_prefix(service: &str, key: &str) -> Key {
    Key::new(TableKind::Inbox).str(service).str(key)
}

pub fn timer_key(wake_up: u64, seq: u64) -> Key {
    Key::new(TableKind::Timer).u64(wake_up).u64(seq)
}

fn invoked_key(id: &InvocationId) -> Key {
    Key::new(TableKind::Invoked).invocation(id)
}

fn invocation_timer_key(id: &InvocationId, wake_up: u64, seq: u64) -> Key {
    Key::new(TableKind::InvocationTimer)
        .invocation(id)
        .u64(wake_up)
        .u64(seq)
}

pub fn outbox_key(seq: u64) -> Key {
    Key::new(TableKind::Outbox).u64(seq)
}

/// A stored journal entry: type code (big-endian) then the protobuf payload.
/// A journal entry as stored: its message type, when it was appended (ms, the record's
/// timestamp: shown as `appended_at`), then the protocol payload.
pub fn encode_entry(message_type: u16, appended_at: u64, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(ENTRY_HEADER + payload.len());
    bytes.extend_from_slice(&message_type.to_be_bytes());
    bytes.extend_from_slice(&appended_at.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

const ENTRY_HEADER: usize = 2 + 8;

/// The message type and payload of a stored journal entry.
pub fn decode_entry(bytes: &[u8]) -> Option<(u16, Bytes)> {
    let ty = u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?);
    Some((ty, Bytes::copy_from_slice(bytes.get(ENTRY_HEADER..)?)))
}

/// When a stored journal entry was appended (ms since the epoch).
pub fn entry_appended_at(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(2..ENTRY_HEADER)?.try_into().ok()?))
}

/// The applied LSN as stored.
pub fn applied_lsn(txn: &Txn<'_>) -> ApplyResult<Lsn> {
    Ok(txn.get::<u64>(&fsm_key(fsm::APPLIED_LSN))?.unwrap_or(0))
}

pub fn leader_epoch(txn: &Txn<'_>) -> ApplyResult<u64> {
    Ok(txn.get::<u64>(&fsm_key(fsm::LEADER_EPOCH))?.unwrap_or(0))
}

fn next_seq(txn: &mut Txn<'_>, counter: u8) -> ApplyResult<u64> {
    let seq = txn.get::<u64>(&fsm_key(counter))?.unwrap_or(1);
    txn.put(fsm_key(counter), &(seq + 1));
    Ok(seq)
}

impl StateMachine {
    pub fn new(partition_id: u16, key_range: RangeInclusive<u64>) -> Self {
        Self {
            partition_id,
            key_range,
            inline: RefCell::default(),
        }
    }

    /// Passes over the record at `lsn` without applying it (an operator skipped it).
    pub fn skip(&self, txn: &mut Txn<'_>, lsn: Lsn) {
        txn.put(fsm_key(fsm::APPLIED_LSN), &lsn);
    }

    /// Applies the record at `lsn`; the applied LSN is written into the same transaction.
    pub fn apply(&self, txn: &mut Txn<'_>, lsn: Lsn, envelope: Envelope, actions: &mut Vec<Action>) -> ApplyResult<()> {
        txn.put(fsm_key(fsm::APPLIED_LSN), &lsn);
        if let Some(epoch) = envelope.leader_epoch
            && epoch < leader_epoch(txn)?
        {
            // A deposed leader's proposal: the current leader redoes whatever it was about.
            return Ok(());
        }
        if let Some(dedup) = envelope.dedup {
            let key = Key::new(TableKind::Dedup).u16(dedup.producer);
            if txn.get::<u64>(&key)?.is_some_and(|last| dedup.seq <= last) {
                return Ok(());
            }
            txn.put(key, &dedup.seq);
        }
        let now = envelope.timestamp;
        // Nothing of an earlier record that failed (or panicked) halfway may run with this one.
        self.inline.borrow_mut().clear();
        let mut applied = self.dispatch(txn, envelope.command, now, actions);
        while applied.is_ok() {
            let Some(next) = self.inline.borrow_mut().pop_front() else {
                break;
            };
            applied = self.dispatch(txn, next, now, actions);
        }
        self.inline.borrow_mut().clear();
        applied
    }

    fn dispatch(&self, txn: &mut Txn<'_>, command: Command, now: u64, actions: &mut Vec<Action>) -> ApplyResult<()> {
        match command {
            Command::AnnounceLeader { epoch, node } => {
                if epoch > leader_epoch(txn)? {
                    txn.put(fsm_key(fsm::LEADER_EPOCH), &epoch);
                    txn.put(fsm_key(fsm::LEADER_NODE), &node);
                    actions.push(Action::LeaderAnnounced { epoch, node });
                }
            }
            Command::Invoke(request) => self.invoke(txn, *request, now, actions)?,
            Command::InvokerEffect { id, epoch, effects } => {
                for effect in effects {
                    self.effect(txn, id, epoch, effect, now, actions)?;
                }
            }
            Command::FireTimer { wake_up, seq } => self.fire_timer(txn, wake_up, seq, now, actions)?,
            Command::InvocationResponse {
                id,
                completion_id,
                result,
            } => self.call_completed(txn, id, completion_id, result, now, actions)?,
            Command::NotifySignal { id, signal, result } => self.signal(txn, id, signal, result, now, actions)?,
            Command::NotifyNamedSignal { id, name, result } => {
                self.named_signal(txn, id, name, result, now, actions)?
            }
            Command::Attach { id, sink } => self.attach(txn, id, sink, actions)?,
            Command::Detach { id, request_id } => {
                if let Some(mut status) = get_status(txn, &id)? {
                    let before = status.sinks.len();
                    status
                        .sinks
                        .retain(|sink| *sink != ResponseSink::Ingress { request_id });
                    if status.sinks.len() != before {
                        put_status(txn, &id, &status)?;
                    }
                }
            }
            Command::Terminate { id, kill } => self.terminate(txn, id, kill, now, actions)?,
            Command::Pause { id } => {
                if let Some(mut status) = get_status(txn, &id)?
                    && matches!(status.phase, Phase::Invoked | Phase::Suspended { .. })
                {
                    status.phase = Phase::Paused;
                    // The running attempt may still propose what it was doing: drop it.
                    status.epoch += 1;
                    put_status(txn, &id, &status)?;
                    actions.push(Action::Abort(id));
                }
            }
            Command::Resume { id } => {
                if let Some(mut status) = get_status(txn, &id)?
                    && status.phase == Phase::Paused
                {
                    status.phase = Phase::Invoked;
                    put_status(txn, &id, &status)?;
                    actions.push(Action::Invoke(id));
                }
            }
            Command::Purge { id } => self.purge(txn, id)?,
            Command::PurgeJournal { id } => {
                if let Some(mut status) = get_status(txn, &id)?
                    && matches!(status.phase, Phase::Completed { .. })
                {
                    lifecycle::delete_journal(txn, &id)?;
                    status.journal_length = 0;
                    status.commands = 0;
                    put_status(txn, &id, &status)?;
                }
            }
            Command::RestartAsNew { id, new_id } => self.restart_as_new(txn, id, new_id, now, actions)?,
            Command::PatchState {
                service,
                key,
                state,
                expected_version,
            } => self.patch_state(txn, &service, &key, state, expected_version)?,
            Command::GetOutput {
                id,
                caller,
                completion_id,
                wait,
            } => self.get_output(txn, id, caller, completion_id, wait, actions)?,
            Command::OutputResponse {
                id,
                completion_id,
                wait,
                result,
            } => self.output_response(txn, id, completion_id, wait, result, now, actions)?,
            Command::TruncateOutbox { up_to } => {
                // Messages are delivered and truncated in order: delete each once, by key.
                let truncated = txn.get::<u64>(&fsm_key(fsm::OUTBOX_TRUNCATED))?.unwrap_or(0);
                let last_queued = txn.get::<u64>(&fsm_key(fsm::NEXT_OUTBOX_SEQ))?.unwrap_or(1) - 1;
                let up_to = up_to.min(last_queued);
                if up_to > truncated {
                    for seq in truncated + 1..=up_to {
                        txn.delete(outbox_key(seq));
                    }
                    txn.put(fsm_key(fsm::OUTBOX_TRUNCATED), &up_to);
                }
            }
        }
        Ok(())
    }

    fn invoke(
        &self,
        txn: &mut Txn<'_>,
        request: InvokeRequest,
        now: u64,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        let id = request.id;
        let known = txn.contains(&status_key(&id))?;
        if let Some(request_id) = request.submit_notification {
            actions.push(Action::Submitted {
                request_id,
                id,
                new: !known,
            });
        }
        if known {
            let Some(sink) = request.response_sink else {
                return Ok(());
            };
            if request.target.handler_type == HandlerType::Workflow {
                // A workflow runs once per key: a second call is refused, a send finds it.
                let refused = InvocationResult::failure(409, "the workflow method was already invoked");
                return self.answer(txn, id, &sink, &Arc::new(refused), actions);
            }
            // The same invocation again (an idempotency key, a retried delivery): it answers
            // like the one that exists.
            return self.attach(txn, id, sink, actions);
        }
        actions.push(Action::Created);
        let input = proto::InputCommandMessage {
            headers: request
                .headers
                .iter()
                .map(|(key, value)| proto::Header {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            value: Some(proto::Value {
                content: Bytes::from(request.argument),
            }),
            name: String::new(),
        };
        txn.put_raw(
            journal_key(&id, 0),
            encode_entry(MessageType::InputCommand.code(), now, &input.encode_to_vec()),
        );
        let mut status = InvocationStatus {
            target: request.target,
            phase: Phase::Scheduled,
            sinks: request.response_sink.into_iter().collect(),
            journal_length: 1,
            commands: 1,
            pinned: None,
            created_at: now,
            journal_modified_at: now,
            execution_time: request.execution_time,
            output: None,
            last_failure: None,
            idempotency_key: request.idempotency_key,
            retention: request.retention,
            restarted_from: request.restarted_from,
            invoked_by: request.invoked_by,
            epoch: 0,
        };
        match request.execution_time {
            Some(at) if at > now => {
                add_timer(txn, at, Timer::Invoke(id), actions)?;
                store_status(txn, &id, &status, false);
            }
            _ => self.start_or_inbox(txn, id, &mut status, None, actions)?,
        }
        Ok(())
    }

    /// Runs the invocation, or queues it behind the lock of its virtual object key.
    /// `taken_from_inbox`: the inbox sequence number it was queued under, when the lock is
    /// handed to it from the key's inbox.
    fn start_or_inbox(
        &self,
        txn: &mut Txn<'_>,
        id: InvocationId,
        status: &mut InvocationStatus,
        taken_from_inbox: Option<u64>,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        if status.target.is_exclusive() {
            let key = status.target.key.clone().unwrap_or_default();
            let lock = lock_key(&status.target.service, &key);
            if txn.contains(&lock)? {
                let seq = next_seq(txn, fsm::NEXT_INBOX_SEQ)?;
                txn.put(
                    inbox_prefix(&status.target.service, &key).u64(seq),
                    &crate::model::InboxEntry::Invocation(id),
                );
                status.phase = Phase::Inboxed { seq };
                store_status(txn, &id, status, false);
                return Ok(());
            }
            // A free lock means an empty inbox: whatever queues from now on gets a higher
            // sequence number than the counter holds now.
            let inbox_from = match taken_from_inbox {
                Some(seq) => seq + 1,
                None => txn.get::<u64>(&fsm_key(fsm::NEXT_INBOX_SEQ))?.unwrap_or(1),
            };
            txn.put(lock, &LockHolder { id, inbox_from });
        }
        status.phase = Phase::Invoked;
        store_status(txn, &id, status, false);
        actions.push(Action::Invoke(id));
        Ok(())
    }

    /// Applies a command here when the key is ours (after the current one is stored, see
    /// [`StateMachine::inline`]), else queues it in the outbox.
    fn route(
        &self,
        txn: &mut Txn<'_>,
        partition_key: u64,
        command: Command,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        if self.key_range.contains(&partition_key) {
            self.inline.borrow_mut().push_back(command);
            return Ok(());
        }
        let seq = next_seq(txn, fsm::NEXT_OUTBOX_SEQ)?;
        txn.put(outbox_key(seq), &OutboxMessage { partition_key, command });
        actions.push(Action::Outbox { seq });
        Ok(())
    }
}

/// An invocation's status.
pub(crate) fn get_status(txn: &Txn<'_>, id: &InvocationId) -> ApplyResult<Option<InvocationStatus>> {
    txn.get(&status_key(id))
}

/// Stores an invocation's status, keeping the index of running invocations in step.
fn put_status(txn: &mut Txn<'_>, id: &InvocationId, status: &InvocationStatus) -> ApplyResult<()> {
    let invoked = invoked_key(id);
    match status.phase == Phase::Invoked {
        true if !txn.contains(&invoked)? => txn.put_raw(invoked, Vec::new()),
        false if txn.contains(&invoked)? => txn.delete(invoked),
        _ => {}
    }
    txn.put(status_key(id), status);
    Ok(())
}

/// [`put_status`] for a status whose stored phase is known (`was_invoked`: it was `Invoked`,
/// so the index has it): the hot paths (a new invocation, an attempt's effects) skip a read.
fn store_status(txn: &mut Txn<'_>, id: &InvocationId, status: &InvocationStatus, was_invoked: bool) {
    match (was_invoked, status.phase == Phase::Invoked) {
        (false, true) => txn.put_raw(invoked_key(id), Vec::new()),
        (true, false) => txn.delete(invoked_key(id)),
        _ => {}
    }
    txn.put(status_key(id), status);
}

fn delete_status(txn: &mut Txn<'_>, id: &InvocationId) -> ApplyResult<()> {
    let invoked = invoked_key(id);
    if txn.contains(&invoked)? {
        txn.delete(invoked);
    }
    txn.delete(status_key(id));
    Ok(())
}

/// Stores a timer (indexed by its invocation, so it goes when the invocation ends) and tells
/// the leader about it.
fn add_timer(txn: &mut Txn<'_>, wake_up: u64, timer: Timer, actions: &mut Vec<Action>) -> ApplyResult<()> {
    let seq = next_seq(txn, fsm::NEXT_TIMER_SEQ)?;
    let owner = match &timer {
        Timer::Invoke(id) | Timer::Sleep { id, .. } => *id,
    };
    txn.put_raw(invocation_timer_key(&owner, wake_up, seq), Vec::new());
    txn.put(timer_key(wake_up, seq), &timer);
    actions.push(Action::RegisterTimer { wake_up, seq });
    Ok(())
}

/// Deletes the timers an invocation still has (it ended: nothing may fire for it any more).
fn delete_timers(txn: &mut Txn<'_>, id: &InvocationId, actions: &mut Vec<Action>) -> ApplyResult<()> {
    let prefix = Key::new(TableKind::InvocationTimer).invocation(id);
    for (key, _) in txn.scan_raw(prefix.as_bytes())? {
        let at = prefix.as_bytes().len();
        if let (Some(wake_up), Some(seq)) = (read_u64(&key, at), read_u64(&key, at + 8)) {
            txn.delete(timer_key(wake_up, seq));
            actions.push(Action::CancelTimer { wake_up, seq });
        }
        txn.delete(Key::new(TableKind::InvocationTimer).raw(&key[2..]));
    }
    Ok(())
}

pub(crate) mod awaiting;
mod effects;
mod note;
use note::{Note, failure_of, proto_failure};
mod invocations;
mod lifecycle;
mod promises;

#[cfg(test)]
mod tests;
