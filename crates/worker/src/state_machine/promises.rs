//! Workflow promises: `GetPromise` waits for the first completion, `PeekPromise` does not,
//! `CompletePromise` completes once and notifies everyone waiting.

use super::*;

/// The `GetPromiseCompletion` that hands a promise's result to one waiting `GetPromise`.
fn promise_note(completion_id: u32, result: InvocationResult) -> Note {
    use proto::get_promise_completion_notification_message::Result;
    let result = match result {
        InvocationResult::Success(value) => Result::Value(proto::Value {
            content: Bytes::from(value),
        }),
        InvocationResult::Failure {
            code,
            message,
            metadata,
        } => Result::Failure(proto_failure(code, message, metadata)),
    };
    let message = proto::GetPromiseCompletionNotificationMessage {
        completion_id,
        result: Some(result),
    };
    Note::new(MessageType::GetPromiseCompletionNotification, &message, completion_id)
}

impl StateMachine {
    /// Answers at once from a completed promise, or waits for its completion.
    pub(super) fn get_promise(
        &self,
        txn: &mut Txn<'_>,
        id: InvocationId,
        status: &mut InvocationStatus,
        payload: Bytes,
        now: u64,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        if let Ok(get) = proto::GetPromiseCommandMessage::decode(payload) {
            let promise_key = promise_key(status, &get.key);
            let mut promise = txn.get::<PromiseState>(&promise_key)?.unwrap_or_default();
            match promise.result.clone() {
                Some(result) => {
                    let note = promise_note(get.result_completion_id, result);
                    self.notify(txn, id, status, note, now, actions)?;
                }
                None => {
                    promise.listeners.push((id, get.result_completion_id));
                    txn.put(promise_key, &promise);
                }
            }
        }
        Ok(())
    }

    /// The promise's result if it is completed, else void.
    pub(super) fn peek_promise(
        &self,
        txn: &mut Txn<'_>,
        id: InvocationId,
        status: &mut InvocationStatus,
        payload: Bytes,
        now: u64,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        if let Ok(peek) = proto::PeekPromiseCommandMessage::decode(payload) {
            use proto::peek_promise_completion_notification_message::Result;
            let promise = txn.get::<PromiseState>(&promise_key(status, &peek.key))?;
            let result = match promise.and_then(|p| p.result) {
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
            let message = proto::PeekPromiseCompletionNotificationMessage {
                completion_id: peek.result_completion_id,
                result: Some(result),
            };
            let note = Note::new(
                MessageType::PeekPromiseCompletionNotification,
                &message,
                peek.result_completion_id,
            );
            self.notify(txn, id, status, note, now, actions)?;
        }
        Ok(())
    }

    /// The first completion wins and reaches every waiting `GetPromise`; later ones fail with 409.
    pub(super) fn complete_promise(
        &self,
        txn: &mut Txn<'_>,
        id: InvocationId,
        status: &mut InvocationStatus,
        payload: Bytes,
        now: u64,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        if let Ok(complete) = proto::CompletePromiseCommandMessage::decode(payload) {
            use proto::complete_promise_command_message::Completion;
            use proto::complete_promise_completion_notification_message::Result;
            let promise_key = promise_key(status, &complete.key);
            let mut promise = txn.get::<PromiseState>(&promise_key)?.unwrap_or_default();
            let outcome = if promise.result.is_some() {
                Result::Failure(proto::Failure {
                    code: 409,
                    message: "promise was already completed".into(),
                    metadata: Vec::new(),
                })
            } else {
                let result = match complete.completion {
                    Some(Completion::CompletionValue(value)) => InvocationResult::Success(value.content.to_vec()),
                    Some(Completion::CompletionFailure(failure)) => failure_of(failure),
                    None => InvocationResult::Success(Vec::new()),
                };
                let listeners = std::mem::take(&mut promise.listeners);
                promise.result = Some(result.clone());
                txn.put(promise_key, &promise);
                for (listener, completion_id) in listeners {
                    let note = promise_note(completion_id, result.clone());
                    match listener == id {
                        true => self.notify(txn, id, status, note, now, actions)?,
                        false => self.notify_stored(txn, listener, note, now, actions)?,
                    }
                }
                Result::Void(proto::Void {})
            };
            let message = proto::CompletePromiseCompletionNotificationMessage {
                completion_id: complete.result_completion_id,
                result: Some(outcome),
            };
            let note = Note::new(
                MessageType::CompletePromiseCompletionNotification,
                &message,
                complete.result_completion_id,
            );
            self.notify(txn, id, status, note, now, actions)?;
        }
        Ok(())
    }
}

impl StateMachine {
    /// Removes an ended invocation from the promises it still waited for (its `GetPromise`s
    /// without a completion), so a promise completed later does not address it.
    pub(super) fn forget_promise_listeners(
        &self,
        txn: &mut Txn<'_>,
        id: InvocationId,
        status: &InvocationStatus,
    ) -> ApplyResult<()> {
        for (_, raw) in txn.scan_raw(journal_prefix(&id).as_bytes())? {
            let Some((ty, payload)) = decode_entry(&raw) else {
                continue;
            };
            if MessageType::from_code(ty) != MessageType::GetPromiseCommand {
                continue;
            }
            let Ok(get) = proto::GetPromiseCommandMessage::decode(payload) else {
                continue;
            };
            if txn.contains(&completion_key(&id, get.result_completion_id))? {
                continue;
            }
            let promise_key = promise_key(status, &get.key);
            if let Some(mut promise) = txn.get::<PromiseState>(&promise_key)? {
                promise
                    .listeners
                    .retain(|listener| *listener != (id, get.result_completion_id));
                txn.put(promise_key, &promise);
            }
        }
        Ok(())
    }
}

/// The key of promise `name` of the workflow the invocation belongs to.
fn promise_key(status: &InvocationStatus, name: &str) -> Key {
    promise_prefix(&status.target.service, status.target.key.as_deref().unwrap_or_default()).str(name)
}
