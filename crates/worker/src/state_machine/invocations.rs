//! The parts of the state machine that reach across invocations: kill propagation to callees,
//! results for other invocations' `AttachInvocation` and `GetInvocationOutput`, restart as new,
//! purges, and state edits from the admin API queued behind a key's lock.

use restate_partition_store::read_u64;
use restate_types::{InvocationSeed, partition_key_of};

use super::*;
use crate::model::{InboxEntry, InvocationTarget, LockHolder};

/// The failure a caller sees when the invocation it attaches to does not exist (any more).
fn not_found() -> InvocationResult {
    InvocationResult::failure(404, "invocation not found")
}

/// The invocation an `AttachInvocation`/`GetInvocationOutput` names: by id, by idempotency key
/// or by workflow key (both ids are derived the same way as when the invocation was created).
fn resolve_target(
    by_id: Option<&str>,
    idempotent: Option<&proto::IdempotentRequestTarget>,
    workflow: Option<&proto::WorkflowTarget>,
) -> Option<InvocationId> {
    if let Some(id) = by_id {
        return id.parse().ok();
    }
    if let Some(target) = idempotent {
        let partition_key = partition_key_of(
            target
                .service_key
                .as_deref()
                .unwrap_or(&target.idempotency_key)
                .as_bytes(),
        );
        return Some(InvocationId::deterministic(
            partition_key,
            &InvocationSeed::Idempotent {
                scope: None,
                service: &target.service_name,
                key: target.service_key.as_deref(),
                handler: &target.handler_name,
                idempotency_key: &target.idempotency_key,
            },
        ));
    }
    workflow.map(|target| {
        InvocationId::deterministic(
            partition_key_of(target.workflow_key.as_bytes()),
            &InvocationSeed::Workflow {
                scope: None,
                service: &target.workflow_name,
                key: &target.workflow_key,
            },
        )
    })
}

impl StateMachine {
    /// `AttachInvocation` (`wait`) or `GetInvocationOutput` from a handler: asks the target's
    /// partition for its result. A target that cannot be named answers "not found" at once.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ask_output(
        &self,
        txn: &mut Txn<'_>,
        id: InvocationId,
        status: &mut InvocationStatus,
        payload: Bytes,
        wait: bool,
        now: u64,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        use proto::attach_invocation_command_message::Target as AttachTarget;
        use proto::get_invocation_output_command_message::Target as OutputTarget;
        let (target, completion_id) = if wait {
            let Ok(command) = proto::AttachInvocationCommandMessage::decode(payload) else {
                return Ok(());
            };
            let target = match &command.target {
                Some(AttachTarget::InvocationId(by_id)) => resolve_target(Some(by_id), None, None),
                Some(AttachTarget::IdempotentRequestTarget(t)) => resolve_target(None, Some(t), None),
                Some(AttachTarget::WorkflowTarget(t)) => resolve_target(None, None, Some(t)),
                None => None,
            };
            (target, command.result_completion_id)
        } else {
            let Ok(command) = proto::GetInvocationOutputCommandMessage::decode(payload) else {
                return Ok(());
            };
            let target = match &command.target {
                Some(OutputTarget::InvocationId(by_id)) => resolve_target(Some(by_id), None, None),
                Some(OutputTarget::IdempotentRequestTarget(t)) => resolve_target(None, Some(t), None),
                Some(OutputTarget::WorkflowTarget(t)) => resolve_target(None, None, Some(t)),
                None => None,
            };
            (target, command.result_completion_id)
        };
        let Some(target) = target else {
            let note = output_note(completion_id, wait, Some(not_found()));
            return self.notify(txn, id, status, note, now, actions);
        };
        let command = Command::GetOutput {
            id: target,
            caller: id,
            completion_id,
            wait,
        };
        self.route(txn, target.partition_key, command, actions)
    }

    /// Answers another invocation's question about `id`'s result, or registers it to be
    /// answered when `id` ends.
    pub(super) fn get_output(
        &self,
        txn: &mut Txn<'_>,
        id: InvocationId,
        caller: InvocationId,
        completion_id: u32,
        wait: bool,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        let status = get_status(txn, &id)?;
        let result = match &status {
            None => Some(not_found()),
            Some(status) => match (&status.phase, &status.output) {
                (Phase::Completed { .. }, Some(result)) => Some(result.clone()),
                _ => None,
            },
        };
        if result.is_none() && wait {
            return self.attach(txn, id, ResponseSink::Attached { caller, completion_id }, actions);
        }
        let command = Command::OutputResponse {
            id: caller,
            completion_id,
            wait,
            result,
        };
        self.route(txn, caller.partition_key, command, actions)
    }

    /// Completes the caller's `AttachInvocation`/`GetInvocationOutput`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn output_response(
        &self,
        txn: &mut Txn<'_>,
        id: InvocationId,
        completion_id: u32,
        wait: bool,
        result: Option<InvocationResult>,
        now: u64,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        if txn.contains(&completion_key(&id, completion_id))? {
            return Ok(());
        }
        self.notify_stored(txn, id, output_note(completion_id, wait, result), now, actions)
    }

    /// Kills the callees of `id`'s calls that have not answered yet: a killed call tree leaves
    /// nothing running (and no virtual object locked) behind it.
    pub(super) fn kill_callees(
        &self,
        txn: &mut Txn<'_>,
        id: InvocationId,
        status: &InvocationStatus,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        let mut pending_calls = Vec::new();
        let mut callees = std::collections::HashMap::new();
        for index in 0..status.journal_length {
            let Some(raw) = txn.get_raw(journal_key(&id, index).as_bytes())? else {
                continue;
            };
            let Some((ty, payload)) = decode_entry(&raw) else {
                continue;
            };
            match MessageType::from_code(ty) {
                MessageType::CallCommand => {
                    if let Ok(call) = proto::CallCommandMessage::decode(payload) {
                        pending_calls.push((call.invocation_id_notification_idx, call.result_completion_id));
                    }
                }
                MessageType::CallInvocationIdCompletionNotification => {
                    if let Ok(note) = proto::CallInvocationIdCompletionNotificationMessage::decode(payload)
                        && let Ok(callee) = note.invocation_id.parse::<InvocationId>()
                    {
                        callees.insert(note.completion_id, callee);
                    }
                }
                _ => {}
            }
        }
        for (id_completion, result_completion) in pending_calls {
            if txn.contains(&completion_key(&id, result_completion))? {
                continue;
            }
            if let Some(callee) = callees.get(&id_completion) {
                let command = Command::Terminate {
                    id: *callee,
                    kill: true,
                };
                self.route(txn, callee.partition_key, command, actions)?;
            }
        }
        Ok(())
    }

    /// Starts `new_id` with the input of the ended invocation `id` (its journal's first entry).
    pub(super) fn restart_as_new(
        &self,
        txn: &mut Txn<'_>,
        id: InvocationId,
        new_id: InvocationId,
        now: u64,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        let Some(status) = get_status(txn, &id)? else {
            return Ok(());
        };
        let input = match txn.get_raw(journal_key(&id, 0).as_bytes())? {
            Some(raw) => decode_entry(&raw).and_then(|(_, payload)| proto::InputCommandMessage::decode(payload).ok()),
            None => None,
        };
        let (Phase::Completed { .. }, Some(input)) = (&status.phase, input) else {
            return Ok(());
        };
        if txn.contains(&status_key(&new_id))? {
            return Ok(());
        }
        let request = InvokeRequest {
            id: new_id,
            target: status.target.clone(),
            argument: input.value.map(|v| v.content.to_vec()).unwrap_or_default(),
            headers: input.headers.into_iter().map(|h| (h.key, h.value)).collect(),
            execution_time: None,
            response_sink: None,
            idempotency_key: None,
            retention: crate::model::Retention {
                completion: status.retention.journal.max(status.retention.completion),
                journal: status.retention.journal.max(status.retention.completion),
            },
            restarted_from: Some(id),
            invoked_by: None,
            submit_notification: None,
        };
        self.invoke(txn, request, now, actions)
    }

    /// Deletes what is kept of a completed invocation; a workflow's state and promises go with
    /// its run.
    pub(super) fn purge(&self, txn: &mut Txn<'_>, id: InvocationId) -> ApplyResult<()> {
        let Some(status) = get_status(txn, &id)? else {
            return Ok(());
        };
        if !matches!(status.phase, Phase::Completed { .. }) {
            return Ok(());
        }
        delete_status(txn, &id)?;
        lifecycle::delete_journal(txn, &id)?;
        if status.target.handler_type == HandlerType::Workflow {
            let key = status.target.key.clone().unwrap_or_default();
            txn.delete_prefix(state_prefix(&status.target.service, &key).as_bytes())?;
            txn.delete_prefix(promise_prefix(&status.target.service, &key).as_bytes())?;
        }
        Ok(())
    }

    /// The admin API's state replacement: applied now when nothing runs on the key, else
    /// queued in the key's inbox so it lands between two invocations (behind an exclusive
    /// handler, or after a workflow's run), never inside one.
    pub(super) fn patch_state(
        &self,
        txn: &mut Txn<'_>,
        service: &str,
        key: &str,
        state: Vec<(Vec<u8>, Vec<u8>)>,
        expected_version: Option<String>,
    ) -> ApplyResult<()> {
        let run = workflow_run_id(service, key);
        let busy = txn.contains(&lock_key(service, key))?
            || get_status(txn, &run)?.is_some_and(|status| status.phase.is_in_flight());
        if busy {
            let seq = next_seq(txn, fsm::NEXT_INBOX_SEQ)?;
            let entry = InboxEntry::StatePatch {
                state,
                expected_version,
            };
            txn.put(inbox_prefix(service, key).u64(seq), &entry);
            return Ok(());
        }
        apply_state_patch(txn, service, key, state, expected_version.as_deref())
    }

    /// What an ended invocation held on its key is handed on: an exclusive handler's lock
    /// goes to what waits in the key's inbox (state patches are applied in order, the first
    /// invocation takes the lock); after a workflow's run, the state patches that waited for
    /// it are applied.
    pub(super) fn release_key(
        &self,
        txn: &mut Txn<'_>,
        target: &InvocationTarget,
        id: InvocationId,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        let key = target.key.clone().unwrap_or_default();
        let mut inbox_from = 0;
        if target.is_exclusive() {
            let lock = lock_key(&target.service, &key);
            match txn.get::<LockHolder>(&lock)? {
                Some(holder) if holder.id == id => inbox_from = holder.inbox_from,
                _ => return Ok(()),
            }
            txn.delete(lock);
        } else if target.handler_type != HandlerType::Workflow {
            return Ok(());
        }
        let inbox = inbox_prefix(&target.service, &key);
        while let Some((entry_key, entry)) =
            txn.first_from(inbox.as_bytes(), inbox.clone().u64(inbox_from).as_bytes())?
        {
            let corrupt = |reason: String| PartitionStoreError::Corrupt {
                table: "ib".into(),
                reason,
            };
            let seq = read_u64(&entry_key, inbox.as_bytes().len())
                .ok_or_else(|| corrupt("a key without a sequence number".into()))?;
            txn.delete(Key::new(TableKind::Inbox).raw(&entry_key[2..]));
            inbox_from = seq + 1;
            let entry: InboxEntry = postcard::from_bytes(&entry).map_err(|e| corrupt(e.to_string()))?;
            match entry {
                InboxEntry::StatePatch {
                    state,
                    expected_version,
                } => apply_state_patch(txn, &target.service, &key, state, expected_version.as_deref())?,
                InboxEntry::Invocation(next) => {
                    if let Some(mut next_status) = get_status(txn, &next)? {
                        return self.start_or_inbox(txn, next, &mut next_status, Some(seq), actions);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The id of the `run` of workflow `service` with key `key` (one per key).
fn workflow_run_id(service: &str, key: &str) -> InvocationId {
    InvocationId::deterministic(
        partition_key_of(key.as_bytes()),
        &InvocationSeed::Workflow {
            scope: None,
            service,
            key,
        },
    )
}

/// Replaces a key's state, unless `expected_version` no longer matches it.
fn apply_state_patch(
    txn: &mut Txn<'_>,
    service: &str,
    key: &str,
    state: Vec<(Vec<u8>, Vec<u8>)>,
    expected_version: Option<&str>,
) -> ApplyResult<()> {
    let prefix = state_prefix(service, key);
    if let Some(expected) = expected_version {
        let current: Vec<(Vec<u8>, Vec<u8>)> = txn
            .scan_raw(prefix.as_bytes())?
            .into_iter()
            .map(|(k, v)| (k[prefix.as_bytes().len()..].to_vec(), v))
            .collect();
        if restate_types::state_version(&current) != expected {
            tracing::info!(
                service,
                key,
                "state edit dropped: the state changed since its version was read"
            );
            return Ok(());
        }
    }
    txn.delete_prefix(prefix.as_bytes())?;
    for (name, value) in state {
        txn.put_raw(prefix.clone().raw(&name), value);
    }
    Ok(())
}

/// The notification completing an `AttachInvocation` (`wait`) or a `GetInvocationOutput`.
fn output_note(completion_id: u32, wait: bool, result: Option<InvocationResult>) -> Note {
    if wait {
        use proto::attach_invocation_completion_notification_message::Result;
        let result = match result.unwrap_or_else(not_found) {
            InvocationResult::Success(value) => Result::Value(proto::Value {
                content: Bytes::from(value),
            }),
            InvocationResult::Failure {
                code,
                message,
                metadata,
            } => Result::Failure(proto_failure(code, message, metadata)),
        };
        let message = proto::AttachInvocationCompletionNotificationMessage {
            completion_id,
            result: Some(result),
        };
        return Note::new(
            MessageType::AttachInvocationCompletionNotification,
            &message,
            completion_id,
        );
    }
    use proto::get_invocation_output_completion_notification_message::Result;
    let result = match result {
        None => Result::Void(proto::Void {}),
        Some(InvocationResult::Success(value)) => Result::Value(proto::Value {
            content: Bytes::from(value),
        }),
        Some(InvocationResult::Failure {
            code,
            message,
            metadata,
        }) => Result::Failure(proto_failure(code, message, metadata)),
    };
    let message = proto::GetInvocationOutputCompletionNotificationMessage {
        completion_id,
        result: Some(result),
    };
    Note::new(
        MessageType::GetInvocationOutputCompletionNotification,
        &message,
        completion_id,
    )
}
