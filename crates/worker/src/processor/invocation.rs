//! The leader's side of one attempt: loads what the attempt replays, runs it on the invoker
//! and turns what the SDK did into effects proposed to the log, in order. Nothing here changes
//! state; the processor learns the outcome when the attempt ends and the effects are durable.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt as _;
use prost::Message as _;
use restate_invoker::{Attempt, AttemptError, AttemptEvent, AttemptOutcome, ErrorBehavior, JournalFrame, run_attempt};
use restate_partition_store::{PartitionStore, PartitionStoreError};
use restate_service_protocol::{Encoder, Message, MessageType, ServiceProtocolVersion, proto};
use restate_types::InvocationId;
use restate_types::manifest::ServiceType;
use restate_types::metadata::Lsn;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::appender::Proposal;
use crate::handle::PartitionState;
use crate::model::{InvocationStatus, InvocationTarget, Phase, RetryPolicy};
use crate::processor::{Control, PreparedAttempt, ProcessorCtx};
use crate::state_machine::{decode_entry, journal_prefix, state_prefix, status_key};
use crate::wal::{Command, Effect, Envelope, ResolvedCall, now_ms};

/// Effects one record carries at most (what the SDK sent at once, e.g. `Output` and `End`).
const MAX_EFFECTS_PER_RECORD: usize = 64;

/// What an attempt driver needs from its processor.
pub(crate) struct AttemptDriver {
    pub ctx: Arc<ProcessorCtx>,
    pub store: PartitionStore,
    pub appender: super::appender::Appender,
    pub control: mpsc::UnboundedSender<Control>,
    pub state: PartitionState,
    pub id: InvocationId,
    pub token: u64,
    pub leader_epoch: u64,
    /// Failed attempts since the invocation last stored a command.
    pub retry_count: u32,
    pub terminal: Arc<AtomicBool>,
    pub cancel: CancellationToken,
}

/// A notification the state machine appended while the attempt may be running, for live
/// delivery (the attempt drops what its replay already holds).
pub(crate) struct LiveNotification {
    pub index: u32,
    pub message_type: u16,
    pub payload: Bytes,
}

/// How a finished attempt ended, as the processor needs it.
pub(crate) struct AttemptReport {
    pub outcome: AttemptOutcome,
    /// LSN of the attempt's last durable proposal (0 if none).
    pub last_lsn: Lsn,
    /// Whether the attempt stored a journal entry (progress resets the retry count).
    pub made_progress: bool,
}

/// What an attempt replays, read from one snapshot of the store.
struct Loaded {
    status: InvocationStatus,
    journal: Vec<JournalFrame>,
    state: Option<Vec<(Bytes, Bytes)>>,
    prepared: PreparedAttempt,
}

impl AttemptDriver {
    fn envelope(&self, epoch: u32, effects: Vec<Effect>) -> Envelope {
        Envelope {
            timestamp: now_ms(),
            leader_epoch: Some(self.leader_epoch),
            dedup: None,
            command: Command::InvokerEffect {
                id: self.id,
                epoch,
                effects,
            },
        }
    }

    /// Runs the attempt holding `permit` (one of the node's concurrent invocations), then
    /// reports to the processor.
    pub(crate) async fn run(
        self,
        permit: OwnedSemaphorePermit,
        notifications: mpsc::UnboundedReceiver<LiveNotification>,
    ) {
        // A panic must still report the attempt finished, or the invocation would wait forever
        // for an attempt that is gone; it is retried like any failed attempt.
        let report = match AssertUnwindSafe(self.drive(notifications)).catch_unwind().await {
            Ok(report) => report,
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                tracing::error!(invocation = %self.id, message, "an attempt panicked; it is retried");
                AttemptReport {
                    outcome: AttemptOutcome::Failed(AttemptError {
                        code: restate_invoker::codes::INTERNAL,
                        message: format!("the attempt panicked: {message}"),
                        retry_after: None,
                        behavior: ErrorBehavior::Retry,
                    }),
                    last_lsn: 0,
                    made_progress: false,
                }
            }
        };
        drop(permit);
        let _ = self.control.send(Control::AttemptFinished {
            id: self.id,
            token: self.token,
            report,
        });
    }

    /// Reads the status, journal and (eager) state: only now, with the permit held, so waiting
    /// attempts hold no journal in memory. The reads need no snapshot: the first
    /// `journal_length` entries of a journal never change once written (later ones are what
    /// the processor applied meanwhile, which reach the attempt live), and no one else writes
    /// the state of a key while its exclusive handler is to run. A running invocation's journal
    /// is in RocksDB's memtable or block cache, so this reads in place.
    fn load(&self) -> Result<Option<Loaded>, AttemptError> {
        let read = || -> Result<Result<Option<Loaded>, AttemptError>, PartitionStoreError> {
            let Some(status) = self.store.get::<InvocationStatus>(&status_key(&self.id))? else {
                return Ok(Ok(None));
            };
            if status.phase != Phase::Invoked {
                return Ok(Ok(None));
            }
            let prepared = match self.ctx.settings.prepare(&self.ctx.schema.get(), &status) {
                Ok(prepared) => prepared,
                Err(error) => return Ok(Err(error)),
            };
            let journal = read_journal(&self.store, &self.id, status.journal_length)?;
            let state = match (
                &status.target.key,
                status.target.can_read_state() && !prepared.lazy_state,
            ) {
                (Some(key), true) => Some(read_state(&self.store, &status.target.service, key)?),
                _ => None,
            };
            Ok(Ok(Some(Loaded {
                status,
                journal,
                state,
                prepared,
            })))
        };
        match read() {
            Ok(loaded) => loaded,
            Err(error) => Err(AttemptError {
                code: restate_invoker::codes::INTERNAL,
                message: format!("cannot read the invocation from the partition store: {error}"),
                retry_after: None,
                behavior: ErrorBehavior::Retry,
            }),
        }
    }

    async fn drive(&self, mut notifications: mpsc::UnboundedReceiver<LiveNotification>) -> AttemptReport {
        let mut report = AttemptReport {
            outcome: AttemptOutcome::Cancelled,
            last_lsn: 0,
            made_progress: false,
        };
        if self.cancel.is_cancelled() {
            return report;
        }
        let loaded = self.load();
        let Loaded {
            status,
            journal,
            state,
            prepared,
        } = match loaded {
            Ok(Some(loaded)) => loaded,
            // It ended, paused or suspended meanwhile: nothing to run.
            Ok(None) => return report,
            Err(error) => {
                report.outcome = AttemptOutcome::Failed(error);
                return report;
            }
        };
        if self.cancel.is_cancelled() {
            return report;
        }
        self.state.attempt(self.id, |info| {
            info.in_flight = true;
            info.retry_count = self.retry_count;
            info.last_start_at = Some(now_ms());
            info.next_retry_at = None;
            info.deployment_id = Some(prepared.deployment_id);
            info.server = prepared.server.clone();
        });
        let replayed = status.journal_length;
        let epoch = status.epoch;
        let mut next_command = status.commands;
        let mut has_output = status.output.is_some();
        let version = prepared.version;
        let attempt = Attempt {
            invocation_id: self.id,
            service: status.target.service.clone(),
            handler: status.target.handler.clone(),
            key: status.target.key.clone(),
            deployment: prepared.deployment,
            version,
            journal,
            state,
            retry_count_since_last_stored_entry: self.retry_count,
            duration_since_last_stored_entry: Duration::from_millis(
                now_ms().saturating_sub(status.journal_modified_at),
            ),
            random_seed: random_seed(&self.id),
            inactivity_timeout: prepared.inactivity_timeout,
            abort_timeout: prepared.abort_timeout,
            message_size_limit: self.ctx.settings.message_size_limit,
        };
        let target = status.target;
        let mut proposals: Vec<Proposal> = Vec::new();
        // The deployment is pinned with the first effects (in their record, not one more).
        let mut pin = prepared.pin;
        // Run completions the SDK wants acknowledged (V7) instead of echoed.
        let mut acks = HashSet::new();
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (live_tx, live_rx) = mpsc::unbounded_channel();
        let attempt_cancel = self.cancel.child_token();
        let run = run_attempt(&self.ctx.client, attempt, events_tx, live_rx, attempt_cancel.clone());
        tokio::pin!(run);
        let mut forced: Option<AttemptError> = None;
        let mut outcome = None;
        let mut batch: Vec<Effect> = Vec::new();
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    // Nothing more is proposed once the attempt was stopped from outside.
                    Some(first) if forced.is_none() && !self.cancel.is_cancelled() => {
                        let mut next = Some(first);
                        while let Some(event) = next.take() {
                            if let AttemptEvent::Command { message_type, .. } = &event {
                                has_output |= *message_type == MessageType::OutputCommand.code();
                            }
                            if event == AttemptEvent::End && !has_output {
                                // A protocol violation: retried like any failed attempt.
                                forced = Some(AttemptError {
                                    code: restate_invoker::codes::PROTOCOL_VIOLATION,
                                    message: "the SDK ended the invocation without an Output".into(),
                                    retry_after: None,
                                    behavior: ErrorBehavior::Retry,
                                });
                                attempt_cancel.cancel();
                                break;
                            }
                            if let AttemptEvent::ProposeRunCompletion { completion_id, ack: true, .. } = &event {
                                acks.insert(*completion_id);
                            }
                            match self.effect_of(&target, event, &mut next_command).await {
                                Ok(Some(effect)) => {
                                    report.made_progress |= matches!(effect, Effect::Entry { .. });
                                    batch.extend(pin.take());
                                    batch.push(effect);
                                }
                                Ok(None) => {}
                                Err(error) => {
                                    forced = Some(error);
                                    attempt_cancel.cancel();
                                    break;
                                }
                            }
                            // Whatever else the SDK already sent goes into the same record.
                            if batch.len() < MAX_EFFECTS_PER_RECORD && !self.cancel.is_cancelled() {
                                next = events.try_recv().ok();
                            }
                        }
                        if !batch.is_empty() && !self.cancel.is_cancelled() {
                            let effects = std::mem::take(&mut batch);
                            let mut proposal = self.appender.propose(&self.envelope(epoch, effects));
                            // A receiver that answered here is spent: it is never awaited again.
                            match proposal.try_recv() {
                                Err(oneshot::error::TryRecvError::Empty) => proposals.push(proposal),
                                Ok(Ok(lsn)) => report.last_lsn = report.last_lsn.max(lsn),
                                Ok(Err(error)) => {
                                    // Refused at once (the log is not keeping up): nothing after
                                    // it may be proposed, or the journal would have a hole.
                                    forced = Some(AttemptError {
                                        code: restate_invoker::codes::UNAVAILABLE,
                                        message: format!("cannot store the attempt's effects: {error}"),
                                        retry_after: None,
                                        behavior: ErrorBehavior::Retry,
                                    });
                                    attempt_cancel.cancel();
                                }
                                // The appender is gone (the partition is shutting down).
                                Err(oneshot::error::TryRecvError::Closed) => {}
                            }
                        }
                    }
                    Some(_) => {}
                    None => {
                        if outcome.is_some() { break; }
                        // The attempt dropped its sender only by ending; wait for its outcome.
                        outcome = Some((&mut run).await);
                        break;
                    }
                },
                note = notifications.recv() => {
                    if let Some(note) = note
                        && note.index >= replayed
                        && let Some(frame) = live_frame(version, &acks, note)
                    {
                        let _ = live_tx.send(frame);
                    }
                }
                result = &mut run, if outcome.is_none() => {
                    outcome = Some(result);
                }
            }
        }
        let mut outcome = outcome.unwrap_or(AttemptOutcome::Cancelled);
        if let Some(error) = forced {
            outcome = AttemptOutcome::Failed(error);
        }
        for proposal in proposals {
            match proposal.await {
                Ok(Ok(lsn)) => report.last_lsn = report.last_lsn.max(lsn),
                Ok(Err(error)) => {
                    outcome = AttemptOutcome::Failed(AttemptError {
                        code: restate_invoker::codes::INTERNAL,
                        message: format!("cannot store the attempt's effects: {error}"),
                        retry_after: None,
                        behavior: ErrorBehavior::Retry,
                    });
                }
                Err(_) => {}
            }
        }
        report.outcome = outcome;
        report
    }

    /// The effect to propose for an event; `Err` fails the attempt.
    async fn effect_of(
        &self,
        target: &InvocationTarget,
        event: AttemptEvent,
        next_command: &mut u32,
    ) -> Result<Option<Effect>, AttemptError> {
        match event {
            AttemptEvent::Command {
                message_type,
                payload,
                message,
            } => {
                let call = self.check_command(target, &message).await?;
                let command_index = *next_command;
                *next_command += 1;
                Ok(Some(Effect::Entry {
                    command_index: Some(command_index),
                    message_type,
                    payload: payload.to_vec(),
                    call,
                }))
            }
            AttemptEvent::ProposeRunCompletion {
                completion_id, result, ..
            } => {
                let result = match result {
                    Ok(value) => {
                        proto::run_completion_notification_message::Result::Value(proto::Value { content: value })
                    }
                    Err(failure) => proto::run_completion_notification_message::Result::Failure(failure),
                };
                let notification = proto::RunCompletionNotificationMessage {
                    completion_id,
                    result: Some(result),
                };
                Ok(Some(Effect::Entry {
                    command_index: None,
                    message_type: MessageType::RunCompletionNotification.code(),
                    payload: notification.encode_to_vec(),
                    call: None,
                }))
            }
            AttemptEvent::Suspended {
                completions,
                signals,
                named_signals,
                future,
            } => {
                self.terminal.store(true, Ordering::Release);
                Ok(Some(Effect::Suspend {
                    commands: *next_command,
                    completions,
                    signals,
                    named_signals,
                    future: future.map(|f| f.to_vec()),
                }))
            }
            AttemptEvent::End => {
                self.terminal.store(true, Ordering::Release);
                Ok(Some(Effect::End {
                    commands: *next_command,
                }))
            }
        }
    }

    /// Checks a command against what the handler may do, and resolves call targets from the
    /// latest schema (a failure is retryable: the service may be registered meanwhile).
    async fn check_command(
        &self,
        target: &InvocationTarget,
        message: &Message,
    ) -> Result<Option<ResolvedCall>, AttemptError> {
        let refuse = |what: &str| AttemptError {
            code: 500,
            message: what.to_owned(),
            retry_after: None,
            behavior: ErrorBehavior::Retry,
        };
        match message {
            Message::SetStateCommand(_) | Message::ClearStateCommand(_) | Message::ClearAllStateCommand(_)
                if !target.can_write_state() =>
            {
                Err(refuse(&format!(
                    "handler {}/{} may not write state (only exclusive handlers of virtual objects may)",
                    target.service, target.handler
                )))
            }
            Message::GetLazyStateCommand(_)
            | Message::GetLazyStateKeysCommand(_)
            | Message::GetEagerStateCommand(_)
            | Message::GetEagerStateKeysCommand(_)
                if !target.can_read_state() =>
            {
                Err(refuse(&format!(
                    "handler {}/{} may not read state (plain services have none)",
                    target.service, target.handler
                )))
            }
            Message::CallCommand(call) => self
                .resolve(
                    &call.service_name,
                    &call.handler_name,
                    &call.key,
                    call.idempotency_key.as_deref(),
                )
                .await
                .map(Some),
            Message::OneWayCallCommand(call) => self
                .resolve(
                    &call.service_name,
                    &call.handler_name,
                    &call.key,
                    call.idempotency_key.as_deref(),
                )
                .await
                .map(Some),
            Message::CompleteAwakeableCommand(command) => {
                // Also refuses the reserved signal indices (cancel, 2-16).
                match command.awakeable_id.parse::<restate_types::AwakeableId>() {
                    Ok(_) => Ok(None),
                    Err(error) => Err(refuse(&format!("CompleteAwakeable with a bad awakeable id: {error}"))),
                }
            }
            Message::SendSignalCommand(command) => {
                if let Err(error) = command.target_invocation_id.parse::<InvocationId>() {
                    return Err(refuse(&format!("SendSignal to a bad invocation id: {error}")));
                }
                match command.signal_id {
                    Some(_) => Ok(None),
                    None => Err(refuse("SendSignal without a signal index or name")),
                }
            }
            Message::GetPromiseCommand(_) | Message::PeekPromiseCommand(_) | Message::CompletePromiseCommand(_)
                if target.service_type != ServiceType::Workflow =>
            {
                Err(refuse(&format!(
                    "{} is only for workflows; {} is not one",
                    message.message_type().name(),
                    target.service
                )))
            }
            Message::AttachInvocationCommand(restate_service_protocol::proto::AttachInvocationCommandMessage {
                target:
                    Some(restate_service_protocol::proto::attach_invocation_command_message::Target::InvocationId(id)),
                ..
            })
            | Message::GetInvocationOutputCommand(
                restate_service_protocol::proto::GetInvocationOutputCommandMessage {
                    target:
                        Some(restate_service_protocol::proto::get_invocation_output_command_message::Target::InvocationId(
                            id,
                        )),
                    ..
                },
            ) if id.parse::<InvocationId>().is_err() => Err(refuse(&format!(
                "{} names a bad invocation id '{id}'",
                message.message_type().name()
            ))),
            _ => Ok(None),
        }
    }

    async fn resolve(
        &self,
        service: &str,
        handler: &str,
        key: &str,
        idempotency_key: Option<&str>,
    ) -> Result<ResolvedCall, AttemptError> {
        let mut schema = self.ctx.schema.get();
        if schema.active_service(service).is_none() {
            schema = self.ctx.schema.refresh().await;
        }
        let not_found = |message: String| AttemptError {
            code: 404,
            message,
            retry_after: None,
            behavior: ErrorBehavior::Retry,
        };
        let Some((_, registered)) = schema.active_service(service) else {
            return Err(not_found(format!(
                "the call target service '{service}' is not registered"
            )));
        };
        let manifest = registered.effective_manifest();
        let Some(handler_manifest) = manifest.handlers.iter().find(|h| h.name == handler) else {
            return Err(not_found(format!(
                "the call target service '{service}' has no handler '{handler}'"
            )));
        };
        let handler_type = manifest
            .ty
            .handler_type(handler_manifest.ty)
            .ok_or_else(|| not_found(format!("the handler '{service}/{handler}' has an invalid type")))?;
        let keyed = manifest.ty != ServiceType::Service;
        let target = InvocationTarget {
            service: service.to_owned(),
            handler: handler.to_owned(),
            key: keyed.then(|| key.to_owned()),
            service_type: manifest.ty,
            handler_type,
        };
        if idempotency_key == Some("") {
            return Err(not_found("a call's idempotency key must not be empty".into()));
        }
        let retention = self
            .ctx
            .settings
            .retention
            .retention_of(registered, &target, idempotency_key);
        Ok(ResolvedCall {
            callee: restate_partition_api::invocation_id_of(&target, idempotency_key),
            target,
            idempotency_key: idempotency_key.map(str::to_owned),
            retention,
        })
    }
}

/// What a panic said, as far as it said it in text.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// The first `length` entries of the journal (those its status counted when it was read),
/// checked to be all there.
fn read_journal(
    store: &PartitionStore,
    id: &InvocationId,
    length: u32,
) -> Result<Vec<JournalFrame>, PartitionStoreError> {
    let frames: Vec<JournalFrame> = store
        .scan_raw(journal_prefix(id).as_bytes())?
        .iter()
        .take(length as usize)
        .filter_map(|(_, value)| decode_entry(value))
        .map(|(message_type, payload)| JournalFrame { message_type, payload })
        .collect();
    if frames.len() != length as usize {
        return Err(PartitionStoreError::Corrupt {
            table: "j2".into(),
            reason: format!("the journal has {} entries, its status says {length}", frames.len()),
        });
    }
    Ok(frames)
}

fn read_state(store: &PartitionStore, service: &str, key: &str) -> Result<Vec<(Bytes, Bytes)>, PartitionStoreError> {
    let prefix = state_prefix(service, key);
    Ok(store
        .scan_raw(prefix.as_bytes())?
        .into_iter()
        .map(|(k, v)| (Bytes::copy_from_slice(&k[prefix.as_bytes().len()..]), Bytes::from(v)))
        .collect())
}

/// The frame to send live for a notification: the notification itself, or, for a run
/// completion the SDK asked to be acknowledged (V7), the acknowledgement in its place.
fn live_frame(version: ServiceProtocolVersion, acks: &HashSet<u32>, note: LiveNotification) -> Option<Bytes> {
    if note.message_type == MessageType::RunCompletionNotification.code()
        && let Ok(notification) = proto::RunCompletionNotificationMessage::decode(note.payload.clone())
        && acks.contains(&notification.completion_id)
    {
        let ack = Message::ProposeRunCompletionAck(proto::ProposeRunCompletionAckMessage {
            completion_id: notification.completion_id,
        });
        return Encoder::new(version).encode(&ack).ok();
    }
    Some(
        JournalFrame {
            message_type: note.message_type,
            payload: note.payload,
        }
        .encode(),
    )
}

/// The seed SDKs derive randomness from: the same for every attempt of an invocation.
fn random_seed(id: &InvocationId) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&id.to_raw())
}

impl RetryPolicy {
    /// The delay before the next attempt after `attempts` failed ones: what the SDK or the
    /// deployment asked for (`next_retry_delay`, `Retry-After`) if anything, else the policy's,
    /// and never more than the policy's longest interval (an absurd request would park the
    /// invocation for good).
    pub fn next_delay(&self, attempts: u32, requested: Option<Duration>) -> Duration {
        requested.unwrap_or_else(|| self.delay(attempts)).min(self.max_interval)
    }

    /// Delay before attempt `attempt + 1` after `attempt` failed ones, with up to a third of
    /// jitter on top.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        // A manifest may declare any factor; below 1 (or not a number) the delay stays flat.
        let factor = if self.factor.is_finite() {
            self.factor.max(1.0)
        } else {
            1.0
        };
        let base = self.initial_interval.as_secs_f64() * factor.powi(exponent);
        let capped = base.min(self.max_interval.as_secs_f64()).max(0.0);
        let jitter = capped * rand::random::<f64>() / 3.0;
        Duration::from_secs_f64(capped + jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(factor: f64) -> RetryPolicy {
        RetryPolicy {
            initial_interval: Duration::from_millis(500),
            factor,
            max_interval: Duration::from_secs(60),
            max_attempts: Some(70),
            kill_on_max_attempts: false,
        }
    }

    #[test]
    fn delays_grow_exponentially_up_to_the_cap_with_a_third_of_jitter() {
        let policy = policy(2.0);
        for (attempt, base) in [(1, 0.5), (2, 1.0), (3, 2.0), (10, 60.0), (70, 60.0)] {
            let delay = policy.delay(attempt).as_secs_f64();
            assert!(
                delay >= base && delay <= base * 4.0 / 3.0 + 1e-9,
                "attempt {attempt}: {delay}"
            );
        }
    }

    #[test]
    fn a_requested_delay_is_honoured_up_to_the_longest_interval() {
        let policy = policy(2.0);
        assert_eq!(
            policy.next_delay(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            policy.next_delay(1, Some(Duration::from_secs(u64::MAX))),
            Duration::from_secs(60)
        );
        assert!(policy.next_delay(1, None) <= Duration::from_secs(60));
    }

    #[test]
    fn a_factor_below_one_or_not_a_number_keeps_the_delay_flat() {
        for factor in [-3.0, 0.5, f64::NAN, f64::INFINITY] {
            let delay = policy(factor).delay(5).as_secs_f64();
            assert!((0.5..=0.67).contains(&delay), "factor {factor}: {delay}");
        }
    }
}
