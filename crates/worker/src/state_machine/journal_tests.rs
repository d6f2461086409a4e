//! Journals stay exact: answers produced while applying never overwrite the command that
//! asked for them, and records that arrive twice, late or out of order add nothing foreign.

use super::*;
use crate::model::{InvocationStatus, Retention};

/// Every entry of an invocation's journal: (message type, payload), in order.
fn journal(store: &PartitionStore, id: &InvocationId) -> Vec<(MessageType, Bytes)> {
    store
        .scan_raw(journal_prefix(id).as_bytes())
        .unwrap()
        .iter()
        .map(|(_, raw)| {
            let (ty, payload) = decode_entry(raw).unwrap();
            (MessageType::from_code(ty), payload)
        })
        .collect()
}

fn types(store: &PartitionStore, id: &InvocationId) -> Vec<MessageType> {
    journal(store, id).into_iter().map(|(ty, _)| ty).collect()
}

fn status(store: &PartitionStore, id: &InvocationId) -> InvocationStatus {
    store.get(&status_key(id)).unwrap().unwrap()
}

/// The journal, the counters of the status and the index that point into it agree.
fn assert_consistent(store: &PartitionStore, id: &InvocationId) {
    let entries = journal(store, id);
    let status = status(store, id);
    assert_eq!(status.journal_length as usize, entries.len(), "journal length of {id}");
    let commands = entries.iter().filter(|(ty, _)| ty.is_command()).count();
    assert_eq!(status.commands as usize, commands, "commands of {id}");
}

fn idempotent(target: InvocationTarget, key: &str) -> (InvocationId, Envelope) {
    let id = crate::invocation_id_of(&target, Some(key));
    let mut envelope = invoke(id, target, 50);
    if let Command::Invoke(request) = &mut envelope.command {
        request.idempotency_key = Some(key.to_owned());
        request.retention = Retention {
            completion: 60_000,
            journal: 60_000,
        };
    }
    (id, envelope)
}

fn call_entry(
    caller: InvocationId,
    index: u32,
    callee: InvocationId,
    target: InvocationTarget,
    idempotency_key: Option<&str>,
) -> Envelope {
    effect(
        2_000,
        caller,
        Effect::Entry {
            command_index: Some(index),
            message_type: MessageType::CallCommand.code(),
            payload: proto::CallCommandMessage {
                service_name: target.service.clone(),
                handler_name: target.handler.clone(),
                key: target.key.clone().unwrap_or_default(),
                idempotency_key: idempotency_key.map(str::to_owned),
                invocation_id_notification_idx: 1,
                result_completion_id: 2,
                ..Default::default()
            }
            .encode_to_vec(),
            call: Some(ResolvedCall {
                callee,
                target,
                idempotency_key: idempotency_key.map(str::to_owned),
                retention: Retention {
                    completion: 60_000,
                    journal: 60_000,
                },
            }),
        },
    )
}

fn workflow_run(key: &str) -> InvocationTarget {
    InvocationTarget {
        service: "Signup".into(),
        handler: "run".into(),
        key: Some(key.into()),
        service_type: ServiceType::Workflow,
        handler_type: HandlerType::Workflow,
    }
}

#[test]
fn an_idempotent_call_to_a_completed_callee_keeps_the_call_in_the_journal() {
    let (_dir, store) = open();
    // Same partition as the caller: the answer is produced while the call is applied.
    let (callee, first) = idempotent(greeter(), "K");
    let caller = id(1, "x");
    apply_all(
        &store,
        &[
            first,
            output(callee, 1, b"\"x\""),
            end(callee, 2),
            invoke(caller, greeter(), 2),
            call_entry(caller, 1, callee, greeter(), Some("K")),
        ],
    );
    assert_eq!(
        types(&store, &caller),
        vec![
            MessageType::InputCommand,
            MessageType::CallCommand,
            MessageType::CallInvocationIdCompletionNotification,
            MessageType::CallCompletionNotification,
        ]
    );
    assert_consistent(&store, &caller);
}

#[test]
fn a_second_call_of_a_workflow_run_keeps_the_call_in_the_journal() {
    let (_dir, store) = open();
    let run = crate::invocation_id_of(&workflow_run("w1"), None);
    let caller = id(1, "x");
    apply_all(
        &store,
        &[
            invoke(run, workflow_run("w1"), 1),
            invoke(caller, greeter(), 2),
            call_entry(caller, 1, run, workflow_run("w1"), None),
        ],
    );
    let entries = journal(&store, &caller);
    assert_eq!(entries[1].0, MessageType::CallCommand);
    assert_eq!(entries[3].0, MessageType::CallCompletionNotification);
    let refused = proto::CallCompletionNotificationMessage::decode(entries[3].1.clone()).unwrap();
    assert!(matches!(
        refused.result,
        Some(proto::call_completion_notification_message::Result::Failure(f)) if f.code == 409
    ));
    assert_consistent(&store, &caller);
}

#[test]
fn output_and_attach_answered_at_once_keep_their_commands_in_the_journal() {
    let (_dir, store) = open();
    let (caller, target) = (id(1, "x"), id(2, "y"));
    apply_all(
        &store,
        &[
            invoke(target, greeter(), 1),
            output(target, 1, b"1"),
            end(target, 2),
            invoke(caller, greeter(), 2),
        ],
    );
    // The target ended without retention: both answer "not found" at once.
    let get_output = effect(
        2_000,
        caller,
        Effect::Entry {
            command_index: Some(1),
            message_type: MessageType::GetInvocationOutputCommand.code(),
            payload: proto::GetInvocationOutputCommandMessage {
                target: Some(proto::get_invocation_output_command_message::Target::InvocationId(
                    target.to_string(),
                )),
                result_completion_id: 1,
                name: String::new(),
            }
            .encode_to_vec(),
            call: None,
        },
    );
    let attach = effect(
        2_000,
        caller,
        Effect::Entry {
            command_index: Some(2),
            message_type: MessageType::AttachInvocationCommand.code(),
            payload: proto::AttachInvocationCommandMessage {
                target: Some(proto::attach_invocation_command_message::Target::InvocationId(
                    target.to_string(),
                )),
                result_completion_id: 2,
                name: String::new(),
            }
            .encode_to_vec(),
            call: None,
        },
    );
    apply_all(&store, &[get_output, attach]);
    assert_eq!(
        types(&store, &caller),
        vec![
            MessageType::InputCommand,
            MessageType::GetInvocationOutputCommand,
            MessageType::GetInvocationOutputCompletionNotification,
            MessageType::AttachInvocationCommand,
            MessageType::AttachInvocationCompletionNotification,
        ]
    );
    assert_consistent(&store, &caller);
}

#[test]
fn a_signal_or_awakeable_to_oneself_follows_the_command_that_sent_it() {
    let (_dir, store) = open();
    let me = id(1, "x");
    let awakeable = restate_types::AwakeableId {
        invocation: me,
        signal_index: 17,
    };
    apply_all(
        &store,
        &[
            invoke(me, greeter(), 1),
            entry(
                me,
                1,
                MessageType::SendSignalCommand,
                proto::SendSignalCommandMessage {
                    target_invocation_id: me.to_string(),
                    signal_id: Some(proto::send_signal_command_message::SignalId::Name("self".into())),
                    result: Some(proto::send_signal_command_message::Result::Void(proto::Void {})),
                    ..Default::default()
                },
            ),
            entry(
                me,
                2,
                MessageType::CompleteAwakeableCommand,
                proto::CompleteAwakeableCommandMessage {
                    awakeable_id: awakeable.to_string(),
                    result: Some(proto::complete_awakeable_command_message::Result::Value(proto::Value {
                        content: Bytes::from_static(b"1"),
                    })),
                    ..Default::default()
                },
            ),
        ],
    );
    assert_eq!(
        types(&store, &me),
        vec![
            MessageType::InputCommand,
            MessageType::SendSignalCommand,
            MessageType::SignalNotification,
            MessageType::CompleteAwakeableCommand,
            MessageType::SignalNotification,
        ]
    );
    assert_consistent(&store, &me);
}

/// Commands and a run completion of one attempt, as the driver proposes them.
fn attempt(g: InvocationId, callee: InvocationId) -> Vec<Envelope> {
    let run = proto::RunCompletionNotificationMessage {
        completion_id: 5,
        result: Some(proto::run_completion_notification_message::Result::Value(
            proto::Value {
                content: Bytes::from_static(b"42"),
            },
        )),
    };
    vec![
        call_entry(g, 1, callee, greeter(), None),
        entry(
            g,
            2,
            MessageType::RunCommand,
            proto::RunCommandMessage {
                result_completion_id: 5,
                name: String::new(),
            },
        ),
        effect(
            2_500,
            g,
            Effect::Entry {
                command_index: None,
                message_type: MessageType::RunCompletionNotification.code(),
                payload: run.encode_to_vec(),
                call: None,
            },
        ),
        output(g, 3, b"\"ok\""),
    ]
}

#[test]
fn every_effect_applied_twice_changes_nothing_the_second_time() {
    let (g, callee) = (id(3, "x"), id(4, "y"));
    let records: Vec<Envelope> = std::iter::once(invoke(g, greeter(), 1))
        .chain(attempt(g, callee))
        .collect();
    let doubled: Vec<Envelope> = records.iter().flat_map(|r| [r.clone(), r.clone()]).collect();
    let (_d1, once) = open();
    let (_d2, twice) = open();
    apply_all(&once, &records);
    apply_all(&twice, &doubled);
    for store in [&once, &twice] {
        assert_eq!(
            types(store, &g),
            vec![
                MessageType::InputCommand,
                MessageType::CallCommand,
                MessageType::CallInvocationIdCompletionNotification,
                MessageType::RunCommand,
                MessageType::RunCompletionNotification,
                MessageType::OutputCommand,
            ]
        );
        assert_consistent(store, &g);
        assert_eq!(
            types(store, &callee),
            vec![MessageType::InputCommand],
            "the callee runs once"
        );
    }
    // Everything but the applied LSN (which counts records) is the same.
    let without_lsn = |store: &PartitionStore| {
        let applied = Key::new(TableKind::Fsm).u8(fsm::APPLIED_LSN).into_bytes();
        store
            .dump()
            .unwrap()
            .into_iter()
            .filter(|(key, _)| *key != applied)
            .collect::<Vec<_>>()
    };
    assert_eq!(without_lsn(&once), without_lsn(&twice));
}

#[test]
fn an_entry_out_of_order_is_dropped_not_stored_at_the_wrong_index() {
    let (_dir, store) = open();
    let (g, callee) = (id(3, "x"), id(4, "y"));
    let steps = attempt(g, callee);
    // The run command's record is lost; what follows it must not take its place.
    apply_all(
        &store,
        &[
            invoke(g, greeter(), 1),
            steps[0].clone(),
            steps[3].clone(),
            steps[1].clone(),
        ],
    );
    assert_eq!(
        types(&store, &g),
        vec![
            MessageType::InputCommand,
            MessageType::CallCommand,
            MessageType::CallInvocationIdCompletionNotification,
            MessageType::RunCommand,
        ]
    );
    assert_consistent(&store, &g);
}

#[test]
fn a_paused_attempts_late_effects_are_dropped_after_a_resume() {
    let (_dir, store) = open();
    let g = id(3, "x");
    apply_all(
        &store,
        &[
            invoke(g, greeter(), 1),
            record(2_000, Command::Pause { id: g }),
            record(2_100, Command::Resume { id: g }),
        ],
    );
    assert_eq!(status(&store, &g).epoch, 1);
    // The attempt that ran before the pause (epoch 0) proposes late.
    apply_all(&store, &[output(g, 1, b"\"stale\"")]);
    assert_eq!(types(&store, &g), vec![MessageType::InputCommand]);
    // The attempt after the resume (epoch 1) is stored.
    let fresh = record(
        2_200,
        Command::InvokerEffect {
            id: g,
            epoch: 1,
            effects: vec![
                Effect::Entry {
                    command_index: Some(1),
                    message_type: MessageType::OutputCommand.code(),
                    payload: proto::OutputCommandMessage {
                        result: Some(proto::output_command_message::Result::Value(proto::Value {
                            content: Bytes::from_static(b"\"fresh\""),
                        })),
                        name: String::new(),
                    }
                    .encode_to_vec(),
                    call: None,
                },
                Effect::End { commands: 2 },
            ],
        },
    );
    let actions = apply_all(&store, &[fresh]);
    assert!(actions.contains(&Action::IngressResponse {
        request_id: 1,
        id: g,
        result: InvocationResult::Success(b"\"fresh\"".to_vec()).into(),
    }));
}

#[test]
fn cancelling_a_scheduled_invocation_forgets_it_and_frees_its_idempotency_key() {
    let (_dir, store) = open();
    let (id, mut envelope) = idempotent(greeter(), "nightly");
    if let Command::Invoke(request) = &mut envelope.command {
        request.execution_time = Some(3_600_000);
    }
    let actions = apply_all(
        &store,
        &[envelope.clone(), record(2_000, Command::Terminate { id, kill: false })],
    );
    assert!(actions.contains(&Action::IngressResponse {
        request_id: 50,
        id,
        result: InvocationResult::failure(409, "canceled").into(),
    }));
    assert!(actions.contains(&Action::CancelTimer {
        wake_up: 3_600_000,
        seq: 1
    }));
    assert_eq!(store.get::<InvocationStatus>(&status_key(&id)).unwrap(), None);
    for table in [TableKind::Timer, TableKind::InvocationTimer, TableKind::Journal] {
        assert!(store.scan_raw(table.prefix()).unwrap().is_empty(), "{table:?}");
    }
    // The same key again is a new invocation.
    let actions = apply_all(&store, &[envelope]);
    assert!(actions.contains(&Action::RegisterTimer {
        wake_up: 3_600_000,
        seq: 2
    }));
}

#[test]
fn killing_a_sleeping_invocation_deletes_its_timer() {
    let (_dir, store) = open();
    let g = id(3, "x");
    let actions = apply_all(
        &store,
        &[
            invoke(g, greeter(), 1),
            entry(
                g,
                1,
                MessageType::SleepCommand,
                proto::SleepCommandMessage {
                    wake_up_time: 1 << 50,
                    result_completion_id: 1,
                    name: String::new(),
                },
            ),
            record(2_000, Command::Terminate { id: g, kill: true }),
        ],
    );
    assert!(actions.contains(&Action::CancelTimer {
        wake_up: 1 << 50,
        seq: 1
    }));
    assert!(store.scan_raw(TableKind::Timer.prefix()).unwrap().is_empty());
}

#[test]
fn truncating_the_outbox_deletes_each_delivered_message_once() {
    let (_dir, store) = open();
    let machine = StateMachine::new(0, 0..=10);
    let mut actions = Vec::new();
    let mut txn = store.txn();
    // Calls to keys outside this partition's range go to the outbox.
    let callee = InvocationId {
        partition_key: u64::MAX,
        uuid: 9,
    };
    let g = InvocationId {
        partition_key: 1,
        uuid: 1,
    };
    machine
        .apply(&mut txn, 1, invoke(g, greeter(), 1), &mut actions)
        .unwrap();
    for index in 1..=5 {
        let call = call_entry(g, index, callee, greeter(), None);
        machine
            .apply(&mut txn, u64::from(index) + 1, call, &mut actions)
            .unwrap();
    }
    txn.commit().unwrap();
    assert_eq!(store.scan_raw(TableKind::Outbox.prefix()).unwrap().len(), 5);
    let truncate = |up_to: u64, lsn: u64| {
        let mut txn = store.txn();
        let mut actions = Vec::new();
        machine
            .apply(
                &mut txn,
                lsn,
                record(3_000, Command::TruncateOutbox { up_to }),
                &mut actions,
            )
            .unwrap();
        txn.commit().unwrap();
    };
    truncate(3, 10);
    assert_eq!(store.scan_raw(TableKind::Outbox.prefix()).unwrap().len(), 2);
    // Again (a duplicate), and past what was ever queued: nothing more than what exists.
    truncate(3, 11);
    truncate(u64::MAX, 12);
    assert!(store.scan_raw(TableKind::Outbox.prefix()).unwrap().is_empty());
}

#[test]
fn a_long_inbox_drains_in_order_reading_only_its_head() {
    let (_dir, store) = open();
    let ids: Vec<InvocationId> = (1..=50).map(|n| id(n, "alice")).collect();
    let records: Vec<Envelope> = ids.iter().map(|id| invoke(*id, counter("alice"), 1)).collect();
    apply_all(&store, &records);
    let mut started = Vec::new();
    for id in &ids {
        let actions = apply_all(&store, &[output(*id, 1, b"1"), end(*id, 2)]);
        started.extend(actions.into_iter().filter_map(|a| match a {
            Action::Invoke(id) => Some(id),
            _ => None,
        }));
    }
    assert_eq!(started, ids[1..].to_vec(), "each next one in the order they came");
    assert!(store.scan_raw(TableKind::Inbox.prefix()).unwrap().is_empty());
    assert!(store.scan_raw(TableKind::ServiceLock.prefix()).unwrap().is_empty());
}

#[test]
fn ingress_sinks_are_capped_and_a_detach_removes_one() {
    let (_dir, store) = open();
    let g = id(3, "x");
    apply_all(&store, &[invoke(g, greeter(), 0)]);
    let attaches: Vec<Envelope> = (1..=MAX_INGRESS_SINKS as u128 + 5)
        .map(|request_id| {
            record(
                2_000,
                Command::Attach {
                    id: g,
                    sink: ResponseSink::Ingress { request_id },
                },
            )
        })
        .collect();
    let actions = apply_all(&store, &attaches);
    let evicted: Vec<u128> = actions
        .iter()
        .filter_map(|a| match a {
            Action::IngressEvicted { request_id } => Some(*request_id),
            _ => None,
        })
        .collect();
    // The invocation's own caller (request 0) and the oldest attaches made room.
    assert_eq!(evicted, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(status(&store, &g).sinks.len(), MAX_INGRESS_SINKS);
    apply_all(&store, &[record(2_000, Command::Detach { id: g, request_id: 6 })]);
    assert_eq!(status(&store, &g).sinks.len(), MAX_INGRESS_SINKS - 1);
}

#[test]
fn the_index_of_running_invocations_follows_their_phase() {
    let (_dir, store) = open();
    let (a, b) = (id(1, "alice"), id(2, "alice"));
    let invoked = |store: &PartitionStore| store.scan_raw(TableKind::Invoked.prefix()).unwrap().len();
    apply_all(
        &store,
        &[invoke(a, counter("alice"), 1), invoke(b, counter("alice"), 2)],
    );
    assert_eq!(invoked(&store), 1, "the second waits in the inbox");
    apply_all(
        &store,
        &[effect(
            3_000,
            a,
            Effect::Suspend {
                commands: 1,
                completions: vec![9],
                signals: Vec::new(),
                named_signals: Vec::new(),
                future: None,
            },
        )],
    );
    assert_eq!(invoked(&store), 0);
    apply_all(&store, &[record(4_000, Command::Terminate { id: a, kill: true })]);
    assert_eq!(invoked(&store), 1, "the next in the inbox runs");
}

fn workflow_shared(key: &str) -> InvocationTarget {
    InvocationTarget {
        service: "Signup".into(),
        handler: "status".into(),
        key: Some(key.into()),
        service_type: ServiceType::Workflow,
        handler_type: HandlerType::Shared,
    }
}

#[test]
fn a_state_edit_waits_for_a_running_workflow() {
    let (_dir, store) = open();
    let run = crate::invocation_id_of(&workflow_run("w1"), None);
    let edit = record(
        2_500,
        Command::PatchState {
            service: "Signup".into(),
            key: "w1".into(),
            state: vec![(b"status".to_vec(), b"\"edited\"".to_vec())],
            expected_version: None,
        },
    );
    apply_all(&store, &[invoke(run, workflow_run("w1"), 1), edit]);
    let state = |store: &PartitionStore| store.scan_raw(state_prefix("Signup", "w1").as_bytes()).unwrap().len();
    assert_eq!(state(&store), 0, "not while the run runs");
    apply_all(&store, &[output(run, 1, b"\"done\""), end(run, 2)]);
    assert_eq!(state(&store), 1, "applied once the run ended");
}

#[test]
fn an_ended_invocation_stops_listening_to_promises() {
    let (_dir, store) = open();
    let waiter = id(5, "w1");
    let get_promise = entry(
        waiter,
        1,
        MessageType::GetPromiseCommand,
        proto::GetPromiseCommandMessage {
            key: "approval".into(),
            result_completion_id: 1,
            name: String::new(),
        },
    );
    apply_all(&store, &[invoke(waiter, workflow_shared("w1"), 1), get_promise]);
    let listeners = |store: &PartitionStore| {
        store
            .get::<PromiseState>(&promise_prefix("Signup", "w1").str("approval"))
            .unwrap()
            .map_or(0, |promise| promise.listeners.len())
    };
    assert_eq!(listeners(&store), 1);
    apply_all(&store, &[record(3_000, Command::Terminate { id: waiter, kill: true })]);
    assert_eq!(listeners(&store), 0, "the killed one is no longer addressed");
}

#[test]
fn an_end_or_suspension_after_a_lost_entry_is_dropped() {
    let (_dir, store) = open();
    let g = id(3, "x");
    // The attempt sent a sleep (command 1, lost) and then suspended, then ended: neither may
    // apply to a journal without the sleep.
    let suspend = effect(
        2_500,
        g,
        Effect::Suspend {
            commands: 2,
            completions: vec![1],
            signals: Vec::new(),
            named_signals: Vec::new(),
            future: None,
        },
    );
    apply_all(&store, &[invoke(g, greeter(), 1), suspend, end(g, 2)]);
    let status = status(&store, &g);
    assert_eq!(status.phase, Phase::Invoked, "still to be run again");
    assert_eq!(status.commands, 1);
    assert_eq!(
        store.scan_raw(TableKind::Invoked.prefix()).unwrap().len(),
        1,
        "a new leader resumes it"
    );
}
