//! The lifecycle part of the state machine: timers, results reaching their callers, signals,
//! cancel and kill, and completion.

use super::*;
use proto::signal_notification_message::SignalId;
use restate_types::manifest::ServiceType;

impl StateMachine {
    pub(super) fn fire_timer(
        &self,
        txn: &mut Txn<'_>,
        wake_up: u64,
        seq: u64,
        now: u64,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        let key = timer_key(wake_up, seq);
        let Some(timer) = txn.get::<Timer>(&key)? else {
            return Ok(());
        };
        txn.delete(key);
        let (Timer::Invoke(owner) | Timer::Sleep { id: owner, .. }) = timer;
        txn.delete(invocation_timer_key(&owner, wake_up, seq));
        match timer {
            Timer::Invoke(id) => {
                if let Some(mut status) = get_status(txn, &id)?
                    && status.phase == Phase::Scheduled
                {
                    self.start_or_inbox(txn, id, &mut status, None, actions)?;
                }
            }
            Timer::Sleep { id, completion_id } => {
                let notification = proto::SleepCompletionNotificationMessage {
                    completion_id,
                    void: Some(proto::Void {}),
                };
                let note = Note::new(MessageType::SleepCompletionNotification, &notification, completion_id);
                self.notify_stored(txn, id, note, now, actions)?;
            }
        }
        Ok(())
    }

    /// Cancels or kills an invocation. One that has not started is removed at once either way;
    /// a running one is killed at once or asked to cancel through signal 1 (which also resumes
    /// a suspended or paused one, so the SDK can run its compensations).
    pub(super) fn terminate(
        &self,
        txn: &mut Txn<'_>,
        id: InvocationId,
        kill: bool,
        now: u64,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        let Some(mut status) = get_status(txn, &id)? else {
            return Ok(());
        };
        let reason = if kill { "killed" } else { "canceled" };
        let failure = InvocationResult::failure(409, reason);
        match status.phase.clone() {
            Phase::Completed { .. } => Ok(()),
            // One that never started is forgotten, as if it had never been sent: whoever waits
            // hears it was cancelled, nothing of it is kept, and its idempotency key is free
            // for a new send (a job scheduler cancels and sends again under the same key).
            Phase::Scheduled | Phase::Inboxed { .. } => {
                if let Phase::Inboxed { seq } = status.phase {
                    let key = status.target.key.clone().unwrap_or_default();
                    txn.delete(inbox_prefix(&status.target.service, &key).u64(seq));
                }
                status.retention = crate::model::Retention::default();
                self.complete(txn, id, status, failure, now, actions)
            }
            _ if kill => {
                actions.push(Action::Abort(id));
                self.kill_callees(txn, id, &status, actions)?;
                self.complete(txn, id, status, failure, now, actions)
            }
            phase => {
                if txn.contains(&signal_key(&id, CANCEL_SIGNAL))? {
                    return Ok(());
                }
                let resume = phase == Phase::Paused;
                self.notify(
                    txn,
                    id,
                    &mut status,
                    Note::signal(SignalId::Idx(CANCEL_SIGNAL), SignalResult::Void),
                    now,
                    actions,
                )?;
                if resume {
                    status.phase = Phase::Invoked;
                    actions.push(Action::Invoke(id));
                }
                put_status(txn, &id, &status)?;
                Ok(())
            }
        }
    }

    /// Adds a caller waiting for the result, answering at once when the invocation completed.
    pub(super) fn attach(
        &self,
        txn: &mut Txn<'_>,
        id: InvocationId,
        sink: ResponseSink,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        let Some(mut status) = get_status(txn, &id)? else {
            if let ResponseSink::Ingress { request_id } = sink {
                actions.push(Action::IngressNotFound { request_id });
            }
            return Ok(());
        };
        if let (Phase::Completed { .. }, Some(result)) = (&status.phase, status.output.take()) {
            return self.answer(txn, id, &sink, &Arc::new(result), actions);
        }
        if status.sinks.contains(&sink) {
            return Ok(());
        }
        if matches!(sink, ResponseSink::Ingress { .. }) {
            let ingress = |s: &ResponseSink| matches!(s, ResponseSink::Ingress { .. });
            if status.sinks.iter().filter(|s| ingress(s)).count() >= MAX_INGRESS_SINKS
                && let Some(oldest) = status.sinks.iter().position(ingress)
                && let ResponseSink::Ingress { request_id } = status.sinks.remove(oldest)
            {
                actions.push(Action::IngressEvicted { request_id });
            }
        }
        status.sinks.push(sink);
        put_status(txn, &id, &status)
    }

    /// Sends an invocation's result to one waiting caller.
    pub(super) fn answer(
        &self,
        txn: &mut Txn<'_>,
        id: InvocationId,
        sink: &ResponseSink,
        result: &Arc<InvocationResult>,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        match sink {
            ResponseSink::Ingress { request_id } => {
                actions.push(Action::IngressResponse {
                    request_id: *request_id,
                    id,
                    result: result.clone(),
                });
                Ok(())
            }
            ResponseSink::Invocation { caller, completion_id } => {
                let command = Command::InvocationResponse {
                    id: *caller,
                    completion_id: *completion_id,
                    result: InvocationResult::clone(result),
                };
                self.route(txn, caller.partition_key, command, actions)
            }
            ResponseSink::Attached { caller, completion_id } => {
                let command = Command::OutputResponse {
                    id: *caller,
                    completion_id: *completion_id,
                    wait: true,
                    result: Some(InvocationResult::clone(result)),
                };
                self.route(txn, caller.partition_key, command, actions)
            }
        }
    }

    /// Delivers a signal once; signals for invocations that ended (or never existed) are dropped.
    pub(super) fn signal(
        &self,
        txn: &mut Txn<'_>,
        id: InvocationId,
        signal: u32,
        result: SignalResult,
        now: u64,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        if signal == CANCEL_SIGNAL {
            // A cancel from another handler (its SDK forwarding one, or `ctx.invocation(id)
            // .cancel()`) is a cancel like the admin API's: one that has not started ends.
            return self.terminate(txn, id, false, now, actions);
        }
        if txn.contains(&signal_key(&id, signal))? {
            return Ok(());
        }
        self.notify_stored(txn, id, Note::signal(SignalId::Idx(signal), result), now, actions)
    }

    /// A named signal, delivered once per name.
    pub(super) fn named_signal(
        &self,
        txn: &mut Txn<'_>,
        id: InvocationId,
        name: String,
        result: SignalResult,
        now: u64,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        if txn.contains(&named_signal_key(&id, &name))? {
            return Ok(());
        }
        self.notify_stored(txn, id, Note::signal(SignalId::Name(name), result), now, actions)
    }

    pub(super) fn call_completed(
        &self,
        txn: &mut Txn<'_>,
        id: InvocationId,
        completion_id: u32,
        result: InvocationResult,
        now: u64,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        if txn.contains(&completion_key(&id, completion_id))? {
            return Ok(());
        }
        let result = match result {
            InvocationResult::Success(value) => {
                proto::call_completion_notification_message::Result::Value(proto::Value {
                    content: Bytes::from(value),
                })
            }
            InvocationResult::Failure {
                code,
                message,
                metadata,
            } => proto::call_completion_notification_message::Result::Failure(proto_failure(code, message, metadata)),
        };
        let notification = proto::CallCompletionNotificationMessage {
            completion_id,
            result: Some(result),
        };
        let note = Note::new(MessageType::CallCompletionNotification, &notification, completion_id);
        self.notify_stored(txn, id, note, now, actions)
    }

    /// [`Self::notify`] for an invocation read from the store (timers, responses of callees).
    pub(super) fn notify_stored(
        &self,
        txn: &mut Txn<'_>,
        id: InvocationId,
        note: Note,
        now: u64,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        let Some(mut status) = get_status(txn, &id)? else {
            return Ok(());
        };
        if !status.phase.is_in_flight() {
            // Completed (nothing awaits it any more), or not started (it has no journal yet).
            return Ok(());
        }
        self.notify(txn, id, &mut status, note, now, actions)?;
        put_status(txn, &id, &status)?;
        Ok(())
    }

    /// Ends the invocation: answers everyone waiting, frees its rows and its lock.
    pub(super) fn complete(
        &self,
        txn: &mut Txn<'_>,
        id: InvocationId,
        mut status: InvocationStatus,
        result: InvocationResult,
        now: u64,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        actions.push(Action::Completed {
            failed: matches!(result, InvocationResult::Failure { .. }),
        });
        // Nothing may fire for it, or wait on its behalf, any more.
        delete_timers(txn, &id, actions)?;
        if status.target.service_type == ServiceType::Workflow {
            self.forget_promise_listeners(txn, id, &status)?;
        }
        let journal_kept = status.retention.journal > 0 && status.retention.completion > 0;
        if !journal_kept {
            delete_journal(txn, &id)?;
        }
        let sinks = std::mem::take(&mut status.sinks);
        let target = status.target.clone();
        let result = Arc::new(result);
        // `status` is still as stored: whether the index of running invocations has it.
        let was_invoked = status.phase == Phase::Invoked;
        match status.retention.completion {
            0 => {
                if was_invoked {
                    txn.delete(invoked_key(&id));
                }
                txn.delete(status_key(&id));
            }
            _ => {
                // Kept for attach/output, idempotent duplicates and introspection until the
                // cleaner purges it.
                let kept = InvocationStatus {
                    phase: Phase::Completed { at: now },
                    output: Some(InvocationResult::clone(&result)),
                    journal_length: if journal_kept { status.journal_length } else { 0 },
                    commands: if journal_kept { status.commands } else { 0 },
                    ..status
                };
                store_status(txn, &id, &kept, was_invoked);
            }
        }
        for sink in &sinks {
            self.answer(txn, id, sink, &result, actions)?;
        }
        self.release_key(txn, &target, id, actions)
    }
}

/// Deletes an invocation's journal with the index of its completions and signals.
pub(super) fn delete_journal(txn: &mut Txn<'_>, id: &InvocationId) -> ApplyResult<()> {
    txn.delete_prefix(journal_prefix(id).as_bytes())?;
    txn.delete_prefix(Key::new(TableKind::JournalNotification).invocation(id).as_bytes())
}
