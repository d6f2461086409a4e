//! The state machine as a pure function: records in, store bytes and actions out.

use bytes::Bytes;
use prost::Message as _;
use restate_partition_store::{PartitionStore, PartitionStores};
use restate_service_protocol::{MessageType, proto};
use restate_types::InvocationId;
use restate_types::manifest::{HandlerType, ServiceType};

use super::*;
use crate::model::{InvocationResult, InvocationTarget, InvokeRequest, ResponseSink, Retention};
use crate::wal::{Command, Effect, Envelope, ResolvedCall};

fn machine() -> StateMachine {
    StateMachine::new(0, 0..=u64::MAX)
}

fn counter(key: &str) -> InvocationTarget {
    InvocationTarget {
        service: "Counter".into(),
        handler: "add".into(),
        key: Some(key.into()),
        service_type: ServiceType::VirtualObject,
        handler_type: HandlerType::Exclusive,
    }
}

fn greeter() -> InvocationTarget {
    InvocationTarget {
        service: "Greeter".into(),
        handler: "greet".into(),
        key: None,
        service_type: ServiceType::Service,
        handler_type: HandlerType::Shared,
    }
}

fn id(n: u128, key: &str) -> InvocationId {
    InvocationId {
        partition_key: restate_types::partition_key_of(key.as_bytes()),
        uuid: n,
    }
}

fn record(timestamp: u64, command: Command) -> Envelope {
    Envelope {
        timestamp,
        leader_epoch: None,
        dedup: None,
        command,
    }
}

fn invoke(id: InvocationId, target: InvocationTarget, sink: u128) -> Envelope {
    record(
        1_000,
        Command::Invoke(Box::new(InvokeRequest {
            id,
            target,
            argument: b"5".to_vec(),
            headers: vec![("x".into(), "y".into())],
            execution_time: None,
            response_sink: Some(ResponseSink::Ingress { request_id: sink }),
            idempotency_key: None,
            retention: Retention::default(),
            restarted_from: None,
            invoked_by: None,
            submit_notification: None,
        })),
    )
}

/// What an attempt (of invocation epoch 0) proposed.
fn effect(timestamp: u64, id: InvocationId, effect: Effect) -> Envelope {
    record(
        timestamp,
        Command::InvokerEffect {
            id,
            epoch: 0,
            effects: vec![effect],
        },
    )
}

/// The SDK's command number `index` (the input is 0).
fn entry<M: prost::Message>(id: InvocationId, index: u32, ty: MessageType, message: M) -> Envelope {
    effect(
        2_000,
        id,
        Effect::Entry {
            command_index: Some(index),
            message_type: ty.code(),
            payload: message.encode_to_vec(),
            call: None,
        },
    )
}

fn output(id: InvocationId, index: u32, value: &[u8]) -> Envelope {
    entry(
        id,
        index,
        MessageType::OutputCommand,
        proto::OutputCommandMessage {
            result: Some(proto::output_command_message::Result::Value(proto::Value {
                content: Bytes::copy_from_slice(value),
            })),
            name: String::new(),
        },
    )
}

/// The end of an attempt whose journal holds `commands` commands.
fn end(id: InvocationId, commands: u32) -> Envelope {
    effect(3_000, id, Effect::End { commands })
}

/// Applies each record in its own transaction, like a processor reading one at a time.
fn apply_all(store: &PartitionStore, records: &[Envelope]) -> Vec<Action> {
    let mut actions = Vec::new();
    for (i, envelope) in records.iter().enumerate() {
        let mut txn = store.txn();
        machine()
            .apply(&mut txn, i as u64 + 1, envelope.clone(), &mut actions)
            .unwrap();
        txn.commit().unwrap();
    }
    actions
}

fn open() -> (tempfile::TempDir, PartitionStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = PartitionStores::open(dir.path(), [0]).unwrap().partition(0).unwrap();
    (dir, store)
}

/// A log with locks, inbox, state, timers, calls and completions.
fn scenario() -> Vec<Envelope> {
    let (a, b) = (id(1, "alice"), id(2, "alice"));
    let g = id(3, "x");
    let callee = id(4, "y");
    vec![
        record(10, Command::AnnounceLeader { epoch: 1, node: 1 }),
        invoke(a, counter("alice"), 11),
        invoke(b, counter("alice"), 12),
        entry(
            a,
            1,
            MessageType::SetStateCommand,
            proto::SetStateCommandMessage {
                key: Bytes::from_static(b"total"),
                value: Some(proto::Value {
                    content: Bytes::from_static(b"5"),
                }),
                name: String::new(),
            },
        ),
        entry(
            a,
            2,
            MessageType::SleepCommand,
            proto::SleepCommandMessage {
                wake_up_time: 5_000,
                result_completion_id: 1,
                name: String::new(),
            },
        ),
        effect(
            4_000,
            a,
            Effect::Suspend {
                commands: 3,
                completions: vec![1],
                signals: vec![1],
                named_signals: Vec::new(),
                future: None,
            },
        ),
        record(5_000, Command::FireTimer { wake_up: 5_000, seq: 1 }),
        output(a, 3, b"5"),
        end(a, 4),
        invoke(g, greeter(), 13),
        record(
            6_000,
            Command::InvokerEffect {
                id: g,
                epoch: 0,
                effects: vec![Effect::Entry {
                    command_index: Some(1),
                    message_type: MessageType::CallCommand.code(),
                    payload: proto::CallCommandMessage {
                        service_name: "Greeter".into(),
                        handler_name: "greet".into(),
                        parameter: Bytes::from_static(b"\"Sam\""),
                        invocation_id_notification_idx: 1,
                        result_completion_id: 2,
                        ..Default::default()
                    }
                    .encode_to_vec(),
                    call: Some(ResolvedCall {
                        callee,
                        target: greeter(),
                        idempotency_key: None,
                        retention: Retention::default(),
                    }),
                }],
            },
        ),
        output(callee, 1, b"\"Hello Sam!\""),
        end(callee, 2),
    ]
}

#[test]
fn replaying_the_same_log_twice_gives_identical_stores() {
    let (_d1, first) = open();
    let (_d2, second) = open();
    let actions_first = apply_all(&first, &scenario());
    let actions_second = apply_all(&second, &scenario());
    assert_eq!(actions_first, actions_second);
    let dump = first.dump().unwrap();
    assert!(!dump.is_empty());
    assert_eq!(dump, second.dump().unwrap());
}

#[test]
fn exclusive_handlers_queue_behind_the_key_lock_and_run_in_order() {
    let (_dir, store) = open();
    let (a, b) = (id(1, "alice"), id(2, "alice"));
    let actions = apply_all(
        &store,
        &[invoke(a, counter("alice"), 1), invoke(b, counter("alice"), 2)],
    );
    let invoked: Vec<&Action> = actions.iter().filter(|a| matches!(a, Action::Invoke(_))).collect();
    assert_eq!(invoked, vec![&Action::Invoke(a)], "the second waits in the inbox");
    let actions = apply_all(&store, &[invoke(a, counter("alice"), 1), output(a, 1, b"5"), end(a, 2)]);
    assert!(actions.contains(&Action::IngressResponse {
        request_id: 1,
        id: a,
        result: InvocationResult::Success(b"5".to_vec()).into(),
    }));
    assert!(
        actions.contains(&Action::Invoke(b)),
        "ending the first starts the next in the inbox"
    );
}

#[test]
fn a_sleep_suspends_and_the_timer_resumes_it() {
    let (_dir, store) = open();
    let actions = apply_all(&store, &scenario()[..7]);
    let a = id(1, "alice");
    assert!(actions.contains(&Action::RegisterTimer { wake_up: 5_000, seq: 1 }));
    // Invoke (start), then the timer's completion resumes the suspended invocation.
    assert_eq!(actions.iter().filter(|a2| **a2 == Action::Invoke(a)).count(), 2);
    let txn = store.txn();
    let status: InvocationStatus = txn.get(&status_key(&a)).unwrap().unwrap();
    assert_eq!(status.phase, Phase::Invoked);
    assert_eq!(status.journal_length, 4, "input, set, sleep, sleep completion");
}

#[test]
fn a_call_gets_its_callee_id_then_the_result() {
    let (_dir, store) = open();
    let records = scenario();
    let actions = apply_all(&store, &records);
    let g = id(3, "x");
    let notified: Vec<u16> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Notify { id, message_type, .. } if *id == g => Some(*message_type),
            _ => None,
        })
        .collect();
    assert_eq!(
        notified,
        vec![
            MessageType::CallInvocationIdCompletionNotification.code(),
            MessageType::CallCompletionNotification.code()
        ]
    );
}

#[test]
fn effects_of_a_deposed_leader_are_ignored() {
    let (_dir, store) = open();
    let g = id(3, "x");
    let mut stale = output(g, 1, b"late");
    stale.leader_epoch = Some(1);
    apply_all(
        &store,
        &[
            invoke(g, greeter(), 1),
            record(1, Command::AnnounceLeader { epoch: 2, node: 1 }),
            stale,
        ],
    );
    let status: InvocationStatus = store.get(&status_key(&g)).unwrap().unwrap();
    assert_eq!(status.journal_length, 1);
}

fn sleep(id: InvocationId, index: u32, completion_id: u32, wake_up: u64) -> Envelope {
    entry(
        id,
        index,
        MessageType::SleepCommand,
        proto::SleepCommandMessage {
            wake_up_time: wake_up,
            result_completion_id: completion_id,
            name: String::new(),
        },
    )
}

#[test]
fn a_v7_future_waiting_for_all_resumes_only_when_all_arrived() {
    let (_dir, store) = open();
    let g = id(3, "x");
    let all = proto::Future {
        waiting_completions: vec![1, 2],
        combinator_type: proto::future::CombinatorType::AllCompleted as i32,
        ..Default::default()
    };
    // The SDK's implicit cancellation: first of (the user's future, signal 1).
    let future = proto::Future {
        waiting_signals: vec![1],
        nested_futures: vec![all],
        combinator_type: proto::future::CombinatorType::FirstCompleted as i32,
        ..Default::default()
    };
    let suspend = effect(
        3_000,
        g,
        Effect::Suspend {
            commands: 3,
            completions: vec![1, 2],
            signals: vec![1],
            named_signals: Vec::new(),
            future: Some(future.encode_to_vec()),
        },
    );
    let actions = apply_all(
        &store,
        &[
            invoke(g, greeter(), 1),
            sleep(g, 1, 1, 5_000),
            sleep(g, 2, 2, 6_000),
            suspend,
            record(5_000, Command::FireTimer { wake_up: 5_000, seq: 1 }),
        ],
    );
    let resumes = |actions: &[Action]| actions.iter().filter(|a| **a == Action::Invoke(g)).count();
    assert_eq!(resumes(&actions), 1, "only the first start: one of two sleeps is done");
    let mut more = Vec::new();
    let mut txn = store.txn();
    machine()
        .apply(
            &mut txn,
            6,
            record(6_000, Command::FireTimer { wake_up: 6_000, seq: 2 }),
            &mut more,
        )
        .unwrap();
    txn.commit().unwrap();
    assert_eq!(resumes(&more), 1, "both sleeps done: resumed");
}

#[test]
fn a_signal_resumes_the_invocation_waiting_for_it_once() {
    let (_dir, store) = open();
    let g = id(3, "x");
    let signal = |value: &str| {
        record(
            7_000,
            Command::NotifySignal {
                id: g,
                signal: 17,
                result: crate::model::SignalResult::Value(value.as_bytes().to_vec()),
            },
        )
    };
    let suspend = effect(
        3_000,
        g,
        Effect::Suspend {
            commands: 1,
            completions: Vec::new(),
            signals: vec![17],
            named_signals: Vec::new(),
            future: None,
        },
    );
    let actions = apply_all(
        &store,
        &[invoke(g, greeter(), 1), suspend, signal("first"), signal("second")],
    );
    assert_eq!(
        actions.iter().filter(|a| **a == Action::Invoke(g)).count(),
        2,
        "start, then resume"
    );
    let status: InvocationStatus = store.get(&status_key(&g)).unwrap().unwrap();
    assert_eq!(
        status.journal_length, 2,
        "input and one signal: the second delivery is dropped"
    );
}

#[test]
fn canceling_an_inboxed_invocation_ends_it_and_takes_it_out_of_the_inbox() {
    let (_dir, store) = open();
    let (a, b) = (id(1, "alice"), id(2, "alice"));
    let cancel = record(2_000, Command::Terminate { id: b, kill: false });
    let actions = apply_all(
        &store,
        &[invoke(a, counter("alice"), 1), invoke(b, counter("alice"), 2), cancel],
    );
    assert!(actions.contains(&Action::IngressResponse {
        request_id: 2,
        id: b,
        result: InvocationResult::failure(409, "canceled").into(),
    }));
    let mut more = Vec::new();
    let mut txn = store.txn();
    machine().apply(&mut txn, 4, output(a, 1, b"1"), &mut more).unwrap();
    machine().apply(&mut txn, 5, end(a, 2), &mut more).unwrap();
    txn.commit().unwrap();
    assert!(
        !more.contains(&Action::Invoke(b)),
        "the canceled one does not run: {more:?}"
    );
    assert!(
        store
            .scan_raw(restate_partition_store::TableKind::Inbox.prefix())
            .unwrap()
            .is_empty()
    );
}

#[path = "invocations_tests.rs"]
mod invocations;

#[path = "journal_tests.rs"]
mod journal;
