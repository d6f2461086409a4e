//! What an attempt's effects do: pinning the deployment, journal entries the SDK sent (and what
//! each command means), notifications appended to the journal, suspension, ending and pausing.

use super::*;

impl StateMachine {
    pub(super) fn effect(
        &self,
        txn: &mut Txn<'_>,
        id: InvocationId,
        epoch: u32,
        effect: Effect,
        now: u64,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        let Some(mut status) = get_status(txn, &id)? else {
            return Ok(());
        };
        if status.phase != Phase::Invoked || status.epoch != epoch {
            // A late effect of an attempt that no longer counts (suspended, paused, or paused
            // and resumed since it started).
            return Ok(());
        }
        if let Effect::End { commands } | Effect::Suspend { commands, .. } = &effect
            && *commands != status.commands
        {
            // The attempt sent commands that are not in the journal: ending or suspending now
            // would leave the invocation without them.
            tracing::warn!(
                partition = self.partition_id, invocation = %id, commands, stored = status.commands,
                "an attempt's end does not follow the invocation's journal; dropped"
            );
            return Ok(());
        }
        match effect {
            Effect::Pin {
                deployment_id,
                protocol_version,
            } => {
                if status.pinned.is_none() {
                    status.pinned = Some(PinnedDeployment {
                        deployment_id,
                        protocol_version,
                    });
                    store_status(txn, &id, &status, true);
                }
            }
            Effect::Entry {
                command_index,
                message_type,
                payload,
                call,
            } => {
                let follows = match MessageType::from_code(message_type) {
                    ty if ty.is_command() => command_index == Some(status.commands),
                    // The only notification an SDK proposes; once per completion id.
                    MessageType::RunCompletionNotification if command_index.is_none() => {
                        match proto::RunCompletionNotificationMessage::decode(payload.as_slice()) {
                            Ok(run) => !txn.contains(&completion_key(&id, run.completion_id))?,
                            Err(_) => false,
                        }
                    }
                    _ => false,
                };
                if !follows {
                    // A duplicate of a stored entry, or one whose predecessor never reached the
                    // log: storing it would put a foreign entry into the journal.
                    tracing::warn!(
                        partition = self.partition_id, invocation = %id, ?command_index,
                        commands = status.commands, message_type,
                        "a journal entry does not follow the invocation's journal; dropped"
                    );
                    return Ok(());
                }
                self.entry(
                    txn,
                    id,
                    &mut status,
                    message_type,
                    Bytes::from(payload),
                    call,
                    now,
                    actions,
                )?;
                store_status(txn, &id, &status, true);
            }
            Effect::Suspend {
                commands: _,
                completions,
                signals,
                named_signals,
                future,
            } => {
                let phase = Phase::Suspended {
                    completions,
                    signals,
                    named_signals,
                    future,
                };
                if crate::state_machine::awaiting::resolved(txn, &id, &phase)? {
                    actions.push(Action::Invoke(id));
                } else {
                    status.phase = phase;
                }
                store_status(txn, &id, &status, true);
            }
            Effect::End { .. } => {
                let result = status
                    .output
                    .clone()
                    .unwrap_or(InvocationResult::failure(571, "the handler ended without an output"));
                self.complete(txn, id, status, result, now, actions)?;
            }
            Effect::AttemptFailed { attempt, code, message } => {
                status.last_failure = Some(LastFailure {
                    at: now,
                    attempt,
                    code,
                    message,
                });
                store_status(txn, &id, &status, true);
            }
            Effect::Pause => {
                status.phase = Phase::Paused;
                status.epoch += 1;
                store_status(txn, &id, &status, true);
                actions.push(Action::Abort(id));
            }
            Effect::Fail { code, message } => {
                actions.push(Action::Abort(id));
                self.complete(txn, id, status, InvocationResult::failure(code, message), now, actions)?;
            }
        }
        Ok(())
    }

    /// Appends a journal entry the SDK sent and applies what it means.
    #[allow(clippy::too_many_arguments)]
    fn entry(
        &self,
        txn: &mut Txn<'_>,
        id: InvocationId,
        status: &mut InvocationStatus,
        message_type: u16,
        payload: Bytes,
        call: Option<ResolvedCall>,
        now: u64,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        let ty = MessageType::from_code(message_type);
        let index = status.journal_length;
        txn.put_raw(journal_key(&id, index), encode_entry(message_type, now, &payload));
        status.journal_length += 1;
        status.journal_modified_at = now;
        if ty.is_command() {
            status.commands += 1;
        }
        let state_of = |status: &InvocationStatus| {
            (
                status.target.service.clone(),
                status.target.key.clone().unwrap_or_default(),
            )
        };
        match ty {
            MessageType::OutputCommand => {
                if let Ok(output) = proto::OutputCommandMessage::decode(payload) {
                    status.output = Some(match output.result {
                        Some(proto::output_command_message::Result::Value(value)) => {
                            InvocationResult::Success(value.content.to_vec())
                        }
                        Some(proto::output_command_message::Result::Failure(failure)) => failure_of(failure),
                        None => InvocationResult::Success(Vec::new()),
                    });
                }
            }
            MessageType::SetStateCommand if status.target.can_write_state() => {
                if let Ok(set) = proto::SetStateCommandMessage::decode(payload) {
                    let (service, key) = state_of(status);
                    let value = set.value.map(|v| v.content.to_vec()).unwrap_or_default();
                    txn.put_raw(state_prefix(&service, &key).raw(&set.key), value);
                }
            }
            MessageType::ClearStateCommand if status.target.can_write_state() => {
                if let Ok(clear) = proto::ClearStateCommandMessage::decode(payload) {
                    let (service, key) = state_of(status);
                    txn.delete(state_prefix(&service, &key).raw(&clear.key));
                }
            }
            MessageType::ClearAllStateCommand if status.target.can_write_state() => {
                let (service, key) = state_of(status);
                txn.delete_prefix(state_prefix(&service, &key).as_bytes())?;
            }
            MessageType::GetLazyStateCommand => {
                if let Ok(get) = proto::GetLazyStateCommandMessage::decode(payload) {
                    let (service, key) = state_of(status);
                    let value = match status.target.can_read_state() {
                        true => txn.get_raw(state_prefix(&service, &key).raw(&get.key).as_bytes())?,
                        false => None,
                    };
                    let result = match value {
                        Some(value) => {
                            proto::get_lazy_state_completion_notification_message::Result::Value(proto::Value {
                                content: Bytes::from(value),
                            })
                        }
                        None => proto::get_lazy_state_completion_notification_message::Result::Void(proto::Void {}),
                    };
                    let notification = proto::GetLazyStateCompletionNotificationMessage {
                        completion_id: get.result_completion_id,
                        result: Some(result),
                    };
                    self.notify(
                        txn,
                        id,
                        status,
                        Note::new(
                            MessageType::GetLazyStateCompletionNotification,
                            &notification,
                            get.result_completion_id,
                        ),
                        now,
                        actions,
                    )?;
                }
            }
            MessageType::GetLazyStateKeysCommand => {
                if let Ok(get) = proto::GetLazyStateKeysCommandMessage::decode(payload) {
                    let (service, key) = state_of(status);
                    let prefix = state_prefix(&service, &key);
                    let keys = match status.target.can_read_state() {
                        true => txn
                            .scan_raw(prefix.as_bytes())?
                            .into_iter()
                            .map(|(k, _)| Bytes::copy_from_slice(&k[prefix.as_bytes().len()..]))
                            .collect(),
                        false => Vec::new(),
                    };
                    let notification = proto::GetLazyStateKeysCompletionNotificationMessage {
                        completion_id: get.result_completion_id,
                        state_keys: Some(proto::StateKeys { keys }),
                    };
                    self.notify(
                        txn,
                        id,
                        status,
                        Note::new(
                            MessageType::GetLazyStateKeysCompletionNotification,
                            &notification,
                            get.result_completion_id,
                        ),
                        now,
                        actions,
                    )?;
                }
            }
            MessageType::SleepCommand => {
                if let Ok(sleep) = proto::SleepCommandMessage::decode(payload) {
                    let timer = Timer::Sleep {
                        id,
                        completion_id: sleep.result_completion_id,
                    };
                    add_timer(txn, sleep.wake_up_time, timer, actions)?;
                }
            }
            MessageType::CallCommand => {
                if let (Ok(command), Some(call)) = (proto::CallCommandMessage::decode(payload), call) {
                    let note = Note::call_id(command.invocation_id_notification_idx, &call);
                    self.notify(txn, id, status, note, now, actions)?;
                    let sink = ResponseSink::Invocation {
                        caller: id,
                        completion_id: command.result_completion_id,
                    };
                    let request = call_request(id, status, call, &command.parameter, command.headers, None, Some(sink));
                    self.route(
                        txn,
                        request.id.partition_key,
                        Command::Invoke(Box::new(request)),
                        actions,
                    )?;
                }
            }
            MessageType::OneWayCallCommand => {
                if let (Ok(command), Some(call)) = (proto::OneWayCallCommandMessage::decode(payload), call) {
                    let note = Note::call_id(command.invocation_id_notification_idx, &call);
                    self.notify(txn, id, status, note, now, actions)?;
                    let at = (command.invoke_time > now).then_some(command.invoke_time);
                    let request = call_request(id, status, call, &command.parameter, command.headers, at, None);
                    self.route(
                        txn,
                        request.id.partition_key,
                        Command::Invoke(Box::new(request)),
                        actions,
                    )?;
                }
            }
            MessageType::AttachInvocationCommand => self.ask_output(txn, id, status, payload, true, now, actions)?,
            MessageType::GetInvocationOutputCommand => {
                self.ask_output(txn, id, status, payload, false, now, actions)?
            }
            MessageType::GetPromiseCommand => self.get_promise(txn, id, status, payload, now, actions)?,
            MessageType::PeekPromiseCommand => self.peek_promise(txn, id, status, payload, now, actions)?,
            MessageType::CompletePromiseCommand => self.complete_promise(txn, id, status, payload, now, actions)?,
            MessageType::CompleteAwakeableCommand => {
                if let Ok(command) = proto::CompleteAwakeableCommandMessage::decode(payload)
                    && let Ok(awakeable) = command.awakeable_id.parse::<AwakeableId>()
                {
                    use proto::complete_awakeable_command_message::Result;
                    let result = match command.result {
                        Some(Result::Value(value)) => SignalResult::Value(value.content.to_vec()),
                        Some(Result::Failure(failure)) => SignalResult::Failure {
                            code: u16::try_from(failure.code).unwrap_or(500),
                            message: failure.message,
                        },
                        None => SignalResult::Void,
                    };
                    let target = awakeable.invocation;
                    let command = Command::NotifySignal {
                        id: target,
                        signal: awakeable.signal_index,
                        result,
                    };
                    self.route(txn, target.partition_key, command, actions)?;
                }
            }
            MessageType::SendSignalCommand => {
                if let Ok(command) = proto::SendSignalCommandMessage::decode(payload)
                    && let Ok(target) = command.target_invocation_id.parse::<InvocationId>()
                    && let Some(signal_id) = command.signal_id
                {
                    use proto::send_signal_command_message::Result;
                    let result = match command.result {
                        Some(Result::Value(value)) => SignalResult::Value(value.content.to_vec()),
                        Some(Result::Failure(failure)) => SignalResult::Failure {
                            code: u16::try_from(failure.code).unwrap_or(500),
                            message: failure.message,
                        },
                        Some(Result::Void(_)) | None => SignalResult::Void,
                    };
                    let command = match signal_id {
                        proto::send_signal_command_message::SignalId::Idx(signal) => Command::NotifySignal {
                            id: target,
                            signal,
                            result,
                        },
                        proto::send_signal_command_message::SignalId::Name(name) => Command::NotifyNamedSignal {
                            id: target,
                            name,
                            result,
                        },
                    };
                    self.route(txn, target.partition_key, command, actions)?;
                }
            }
            MessageType::RunCompletionNotification => {
                if let Ok(completion) = proto::RunCompletionNotificationMessage::decode(payload.clone()) {
                    txn.put(completion_key(&id, completion.completion_id), &index);
                    actions.push(Action::Notify {
                        id,
                        index,
                        message_type,
                        payload,
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Appends a notification to the journal, delivers it live and resumes a suspended
    /// invocation that waits for it.
    pub(super) fn notify(
        &self,
        txn: &mut Txn<'_>,
        id: InvocationId,
        status: &mut InvocationStatus,
        note: Note,
        now: u64,
        actions: &mut Vec<Action>,
    ) -> ApplyResult<()> {
        let Note {
            ty,
            payload,
            completion_id,
            signal,
        } = note;
        // One notification per completion id, signal index and signal name: a second one
        // (a record applied twice, a race of two answers) would shadow the first on replay.
        let seen = match (&completion_id, &signal) {
            (Some(completion_id), _) => txn.contains(&completion_key(&id, *completion_id))?,
            (None, Some(proto::signal_notification_message::SignalId::Idx(signal))) => {
                txn.contains(&signal_key(&id, *signal))?
            }
            (None, Some(proto::signal_notification_message::SignalId::Name(name))) => {
                txn.contains(&named_signal_key(&id, name))?
            }
            (None, None) => false,
        };
        if seen {
            return Ok(());
        }
        let index = status.journal_length;
        txn.put_raw(journal_key(&id, index), encode_entry(ty.code(), now, &payload));
        status.journal_length += 1;
        status.journal_modified_at = now;
        if let Some(completion_id) = completion_id {
            txn.put(completion_key(&id, completion_id), &index);
        }
        match signal {
            Some(proto::signal_notification_message::SignalId::Idx(signal)) => txn.put(signal_key(&id, signal), &index),
            Some(proto::signal_notification_message::SignalId::Name(name)) => {
                txn.put(named_signal_key(&id, &name), &index)
            }
            None => {}
        }
        actions.push(Action::Notify {
            id,
            index,
            message_type: ty.code(),
            payload: Bytes::from(payload),
        });
        if matches!(status.phase, Phase::Suspended { .. })
            && crate::state_machine::awaiting::resolved(txn, &id, &status.phase)?
        {
            status.phase = Phase::Invoked;
            actions.push(Action::Invoke(id));
        }
        Ok(())
    }
}

/// The invocation a `Call` or `OneWayCall` command of `caller` starts.
fn call_request(
    caller: InvocationId,
    status: &InvocationStatus,
    call: ResolvedCall,
    parameter: &[u8],
    headers: Vec<proto::Header>,
    execution_time: Option<u64>,
    response_sink: Option<ResponseSink>,
) -> InvokeRequest {
    InvokeRequest {
        id: call.callee,
        target: call.target,
        argument: parameter.to_vec(),
        headers: headers.into_iter().map(|h| (h.key, h.value)).collect(),
        execution_time,
        response_sink,
        idempotency_key: call.idempotency_key,
        retention: call.retention,
        restarted_from: None,
        invoked_by: Some(Caller {
            id: caller,
            target: status.target.to_string(),
        }),
        submit_notification: None,
    }
}
