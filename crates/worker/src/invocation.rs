//! The leader's side of one attempt: runs it on the invoker and turns what the SDK did into
//! effects proposed to the log, in order. Nothing here changes state; the processor learns the
//! outcome when the attempt ends and the effects are durable.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use restate_invoker::{Attempt, AttemptError, AttemptEvent, AttemptOutcome, ErrorBehavior, run_attempt};
use restate_service_protocol::{Message, MessageType, proto};
use restate_types::manifest::ServiceType;
use restate_types::metadata::Lsn;
use restate_types::{InvocationId, partition_key_of};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::appender::Proposal;
use crate::model::{InvocationTarget, RetryPolicy};
use crate::processor::{Control, ProcessorCtx};
use crate::wal::{Command, Effect, Envelope, ResolvedCall, now_ms};

/// What an attempt driver needs from its processor.
pub(crate) struct AttemptDriver {
    pub ctx: Arc<ProcessorCtx>,
    pub appender: crate::appender::Appender,
    pub control: mpsc::UnboundedSender<Control>,
    pub id: InvocationId,
    pub token: u64,
    pub epoch: u64,
    pub target: InvocationTarget,
    pub pin: Option<Effect>,
    /// The journal already holds an `Output` (from an earlier attempt).
    pub has_output: bool,
    pub terminal: Arc<AtomicBool>,
    pub acks: Arc<Mutex<HashSet<u32>>>,
    pub cancel: CancellationToken,
}

/// How a finished attempt ended, as the processor needs it.
pub(crate) struct AttemptReport {
    pub outcome: AttemptOutcome,
    /// LSN of the attempt's last durable proposal (0 if none).
    pub last_lsn: Lsn,
    /// Whether the attempt stored a new command (progress resets the retry count).
    pub made_progress: bool,
}

impl AttemptDriver {
    fn envelope(&self, effect: Effect) -> Envelope {
        Envelope {
            timestamp: now_ms(),
            leader_epoch: Some(self.epoch),
            dedup: None,
            command: Command::InvokerEffect { id: self.id, effect },
        }
    }

    pub(crate) async fn run(self, attempt: Attempt, notifications: mpsc::UnboundedReceiver<Bytes>) {
        let report = self.drive(attempt, notifications).await;
        let _ = self.control.send(Control::AttemptFinished {
            id: self.id,
            token: self.token,
            report,
        });
    }

    async fn drive(&self, attempt: Attempt, notifications: mpsc::UnboundedReceiver<Bytes>) -> AttemptReport {
        let cancelled = AttemptReport {
            outcome: AttemptOutcome::Cancelled,
            last_lsn: 0,
            made_progress: false,
        };
        let permit = tokio::select! {
            _ = self.cancel.cancelled() => return cancelled,
            permit = self.ctx.concurrency.clone().acquire_owned() => permit,
        };
        let Ok(_permit) = permit else { return cancelled };
        let mut proposals: Vec<Proposal> = Vec::new();
        // The deployment is pinned with the first entry (one append with it, not one more).
        let mut pin = self.pin.clone();
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let attempt_cancel = self.cancel.child_token();
        let run = run_attempt(
            &self.ctx.client,
            attempt,
            events_tx,
            notifications,
            attempt_cancel.clone(),
        );
        tokio::pin!(run);
        let mut forced: Option<AttemptError> = None;
        let mut made_progress = false;
        let mut has_output = self.has_output;
        let mut outcome = None;
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    // Nothing more is proposed once the attempt was stopped from outside.
                    Some(event) if forced.is_none() && !self.cancel.is_cancelled() => {
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
                            continue;
                        }
                        match self.effect_of(event).await {
                            Ok(Some(effect)) => {
                                if let Some(pin) = pin.take() {
                                    proposals.push(self.appender.propose(&self.envelope(pin)));
                                }
                                made_progress |= matches!(effect, Effect::Entry { .. });
                                proposals.push(self.appender.propose(&self.envelope(effect)));
                            }
                            Ok(None) => {}
                            Err(error) => {
                                forced = Some(error);
                                attempt_cancel.cancel();
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
                result = &mut run, if outcome.is_none() => {
                    outcome = Some(result);
                }
            }
        }
        let mut outcome = outcome.unwrap_or(AttemptOutcome::Cancelled);
        if let Some(error) = forced {
            outcome = AttemptOutcome::Failed(error);
        }
        let mut last_lsn = 0;
        for proposal in proposals {
            match proposal.await {
                Ok(Ok(lsn)) => last_lsn = last_lsn.max(lsn),
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
        AttemptReport {
            outcome,
            last_lsn,
            made_progress,
        }
    }

    /// The effect to propose for an event; `Err` fails the attempt.
    async fn effect_of(&self, event: AttemptEvent) -> Result<Option<Effect>, AttemptError> {
        match event {
            AttemptEvent::Command {
                message_type,
                payload,
                message,
            } => {
                let call = self.check_command(&message).await?;
                Ok(Some(Effect::Entry {
                    message_type,
                    payload: payload.to_vec(),
                    call,
                }))
            }
            AttemptEvent::ProposeRunCompletion {
                completion_id,
                result,
                ack,
            } => {
                if ack && let Ok(mut acks) = self.acks.lock() {
                    acks.insert(completion_id);
                }
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
                    completions,
                    signals,
                    named_signals,
                    future: future.map(|f| f.to_vec()),
                }))
            }
            AttemptEvent::End => {
                self.terminal.store(true, Ordering::Release);
                Ok(Some(Effect::End))
            }
        }
    }

    /// Checks a command against what the handler may do, and resolves call targets from the
    /// latest schema (a failure is retryable: the service may be registered meanwhile).
    async fn check_command(&self, message: &Message) -> Result<Option<ResolvedCall>, AttemptError> {
        let refuse = |what: &str| AttemptError {
            code: 500,
            message: what.to_owned(),
            retry_after: None,
            behavior: ErrorBehavior::Retry,
        };
        match message {
            Message::SetStateCommand(_) | Message::ClearStateCommand(_) | Message::ClearAllStateCommand(_)
                if !self.target.can_write_state() =>
            {
                Err(refuse(&format!(
                    "handler {}/{} may not write state (only exclusive handlers of virtual objects may)",
                    self.target.service, self.target.handler
                )))
            }
            Message::GetLazyStateCommand(_)
            | Message::GetLazyStateKeysCommand(_)
            | Message::GetEagerStateCommand(_)
            | Message::GetEagerStateKeysCommand(_)
                if !self.target.can_read_state() =>
            {
                Err(refuse(&format!(
                    "handler {}/{} may not read state (plain services have none)",
                    self.target.service, self.target.handler
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
                if self.target.service_type != ServiceType::Workflow =>
            {
                Err(refuse(&format!(
                    "{} is only for workflows; {} is not one",
                    message.message_type().name(),
                    self.target.service
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
        let retention = self.ctx.settings.retention_of(registered, &target, idempotency_key);
        Ok(ResolvedCall {
            callee: invocation_id_of(&target, idempotency_key),
            target,
            idempotency_key: idempotency_key.map(str::to_owned),
            retention,
        })
    }
}

/// The id of a new invocation of `target`: derived from the idempotency key when there is
/// one (the same key names the same invocation), else time-ordered and random. Keyed targets
/// live in their key's partition; idempotent calls of plain services in the key's.
pub fn invocation_id_of(target: &InvocationTarget, idempotency_key: Option<&str>) -> InvocationId {
    let partition_key = match (&target.key, idempotency_key) {
        (Some(key), _) => partition_key_of(key.as_bytes()),
        (None, Some(idempotency_key)) => partition_key_of(idempotency_key.as_bytes()),
        (None, None) => rand::random(),
    };
    if target.handler_type == restate_types::manifest::HandlerType::Workflow {
        // One `run` per workflow key: its id names the workflow instance.
        return InvocationId::deterministic(
            partition_key,
            &restate_types::InvocationSeed::Workflow {
                scope: None,
                service: &target.service,
                key: target.key.as_deref().unwrap_or_default(),
            },
        );
    }
    match idempotency_key {
        Some(idempotency_key) => InvocationId::deterministic(
            partition_key,
            &restate_types::InvocationSeed::Idempotent {
                scope: None,
                service: &target.service,
                key: target.key.as_deref(),
                handler: &target.handler,
                idempotency_key,
            },
        ),
        None => InvocationId::generate(partition_key),
    }
}

impl RetryPolicy {
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
    fn a_factor_below_one_or_not_a_number_keeps_the_delay_flat() {
        for factor in [-3.0, 0.5, f64::NAN, f64::INFINITY] {
            let delay = policy(factor).delay(5).as_secs_f64();
            assert!((0.5..=0.67).contains(&delay), "factor {factor}: {delay}");
        }
    }
}
