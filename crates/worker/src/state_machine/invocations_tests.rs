//! Kill propagation, retention, state patches and results for other invocations.

use super::*;
use crate::model::Retention;

fn call(caller: InvocationId, index: u32, callee: InvocationId, target: InvocationTarget) -> Envelope {
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
                invocation_id_notification_idx: 1,
                result_completion_id: 2,
                ..Default::default()
            }
            .encode_to_vec(),
            call: Some(ResolvedCall {
                callee,
                target,
                idempotency_key: None,
                retention: Retention::default(),
            }),
        },
    )
}

fn status_of(store: &PartitionStore, id: &InvocationId) -> Option<InvocationStatus> {
    store.txn().get(&status_key(id)).unwrap()
}

fn retained(id: InvocationId, target: InvocationTarget, sink: u128) -> Envelope {
    let mut envelope = invoke(id, target, sink);
    if let Command::Invoke(request) = &mut envelope.command {
        request.retention = Retention {
            completion: 60_000,
            journal: 60_000,
        };
    }
    envelope
}

#[test]
fn killing_a_caller_kills_its_pending_callee_and_frees_the_callees_lock() {
    let (_dir, store) = open();
    let (caller, callee, next) = (id(1, "x"), id(2, "bob"), id(3, "bob"));
    apply_all(
        &store,
        &[
            invoke(caller, greeter(), 1),
            call(caller, 1, callee, counter("bob")),
            record(2_500, Command::Terminate { id: caller, kill: true }),
        ],
    );
    assert_eq!(status_of(&store, &caller), None, "the caller ended");
    assert_eq!(status_of(&store, &callee), None, "the callee was killed with it");
    let actions = apply_all(&store, &[invoke(next, counter("bob"), 2)]);
    assert!(actions.contains(&Action::Invoke(next)), "bob's lock is free again");
}

#[test]
fn a_callee_that_already_answered_is_left_alone() {
    let (_dir, store) = open();
    let (caller, callee) = (id(1, "x"), id(2, "bob"));
    apply_all(
        &store,
        &[
            invoke(caller, greeter(), 1),
            call(caller, 1, callee, counter("bob")),
            output(callee, 1, b"1"),
            end(callee, 2),
            retained(id(9, "bob"), counter("bob"), 3),
        ],
    );
    let actions = apply_all(&store, &[record(2_500, Command::Terminate { id: caller, kill: true })]);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Abort(x) if *x == id(9, "bob"))),
        "only the caller is aborted: {actions:?}"
    );
    assert_eq!(status_of(&store, &id(9, "bob")).map(|s| s.phase), Some(Phase::Invoked));
}

#[test]
fn an_ended_invocation_keeps_status_and_journal_until_each_is_purged() {
    let (_dir, store) = open();
    let g = id(1, "x");
    apply_all(&store, &[retained(g, greeter(), 1), output(g, 1, b"\"hi\""), end(g, 2)]);
    let status = status_of(&store, &g).expect("kept for its retention");
    assert_eq!(status.phase, Phase::Completed { at: 3_000 });
    assert_eq!(status.output, Some(InvocationResult::Success(b"\"hi\"".to_vec())));
    assert_eq!(status.journal_length, 2, "input and output");
    assert!(store.txn().get_raw(journal_key(&g, 1).as_bytes()).unwrap().is_some());

    apply_all(&store, &[record(4_000, Command::PurgeJournal { id: g })]);
    let status = status_of(&store, &g).expect("the result outlives the journal");
    assert_eq!(status.journal_length, 0);
    assert!(store.txn().get_raw(journal_key(&g, 0).as_bytes()).unwrap().is_none());

    apply_all(&store, &[record(5_000, Command::Purge { id: g })]);
    assert_eq!(status_of(&store, &g), None);
}

#[test]
fn restart_as_new_runs_the_same_input_under_a_new_id() {
    let (_dir, store) = open();
    let (old, new) = (id(1, "x"), id(2, "x"));
    apply_all(
        &store,
        &[retained(old, greeter(), 1), output(old, 1, b"1"), end(old, 2)],
    );
    let actions = apply_all(&store, &[record(4_000, Command::RestartAsNew { id: old, new_id: new })]);
    assert!(actions.contains(&Action::Invoke(new)));
    let status = status_of(&store, &new).unwrap();
    assert_eq!(status.restarted_from, Some(old));
    let input = store.txn().get_raw(journal_key(&new, 0).as_bytes()).unwrap().unwrap();
    let (_, payload) = decode_entry(&input).unwrap();
    let input = proto::InputCommandMessage::decode(payload).unwrap();
    assert_eq!(input.value.unwrap().content.as_ref(), b"5");
    assert_eq!(input.headers[0].key, "x");
}

fn state_of(store: &PartitionStore, service: &str, key: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let prefix = state_prefix(service, key);
    store
        .txn()
        .scan_raw(prefix.as_bytes())
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k[prefix.as_bytes().len()..].to_vec(), v))
        .collect()
}

fn patch(state: &[(&str, &str)], expected_version: Option<String>) -> Envelope {
    record(
        2_500,
        Command::PatchState {
            service: "Counter".into(),
            key: "alice".into(),
            state: state
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            expected_version,
        },
    )
}

#[test]
fn a_state_patch_waits_for_the_running_exclusive_handler() {
    let (_dir, store) = open();
    let a = id(1, "alice");
    apply_all(
        &store,
        &[invoke(a, counter("alice"), 1), patch(&[("total", "7")], None)],
    );
    assert!(
        state_of(&store, "Counter", "alice").is_empty(),
        "not while the handler runs"
    );
    apply_all(&store, &[output(a, 1, b"1"), end(a, 2)]);
    assert_eq!(
        state_of(&store, "Counter", "alice"),
        vec![(b"total".to_vec(), b"7".to_vec())]
    );
}

#[test]
fn a_state_patch_against_a_stale_version_changes_nothing() {
    let (_dir, store) = open();
    apply_all(&store, &[patch(&[("total", "7")], None)]);
    let current = restate_types::state_version(&state_of(&store, "Counter", "alice"));
    apply_all(&store, &[patch(&[("total", "8")], Some("stale".into()))]);
    assert_eq!(state_of(&store, "Counter", "alice")[0].1, b"7");
    apply_all(&store, &[patch(&[("other", "1")], Some(current))]);
    assert_eq!(
        state_of(&store, "Counter", "alice"),
        vec![(b"other".to_vec(), b"1".to_vec())],
        "the whole state is replaced"
    );
}

fn ask(caller: InvocationId, index: u32, target: InvocationId, completion_id: u32, wait: bool) -> Envelope {
    let (ty, payload) = if wait {
        let message = proto::AttachInvocationCommandMessage {
            target: Some(proto::attach_invocation_command_message::Target::InvocationId(
                target.to_string(),
            )),
            result_completion_id: completion_id,
            name: String::new(),
        };
        (MessageType::AttachInvocationCommand, message.encode_to_vec())
    } else {
        let message = proto::GetInvocationOutputCommandMessage {
            target: Some(proto::get_invocation_output_command_message::Target::InvocationId(
                target.to_string(),
            )),
            result_completion_id: completion_id,
            name: String::new(),
        };
        (MessageType::GetInvocationOutputCommand, message.encode_to_vec())
    };
    effect(
        2_000,
        caller,
        Effect::Entry {
            command_index: Some(index),
            message_type: ty.code(),
            payload,
            call: None,
        },
    )
}

/// The notification that completed `completion_id` of `id`: its type and payload.
fn completion(store: &PartitionStore, id: &InvocationId, completion_id: u32) -> Option<(u16, Bytes)> {
    let txn = store.txn();
    let index: u32 = txn.get(&completion_key(id, completion_id)).unwrap()?;
    let raw = txn.get_raw(journal_key(id, index).as_bytes()).unwrap()?;
    decode_entry(&raw)
}

#[test]
fn attach_and_get_output_from_a_handler() {
    let (_dir, store) = open();
    let (caller, target) = (id(1, "x"), id(2, "y"));
    apply_all(
        &store,
        &[
            invoke(caller, greeter(), 1),
            invoke(target, greeter(), 2),
            ask(caller, 1, target, 1, false),
            ask(caller, 2, target, 2, true),
        ],
    );
    let (ty, payload) = completion(&store, &caller, 1).expect("output answers at once");
    assert_eq!(
        MessageType::from_code(ty),
        MessageType::GetInvocationOutputCompletionNotification
    );
    let not_ready = proto::GetInvocationOutputCompletionNotificationMessage::decode(payload).unwrap();
    assert!(matches!(
        not_ready.result,
        Some(proto::get_invocation_output_completion_notification_message::Result::Void(_))
    ));
    assert!(completion(&store, &caller, 2).is_none(), "attach waits");

    apply_all(&store, &[output(target, 1, b"\"done\""), end(target, 2)]);
    let (ty, payload) = completion(&store, &caller, 2).expect("attach answered at the end");
    assert_eq!(
        MessageType::from_code(ty),
        MessageType::AttachInvocationCompletionNotification
    );
    let attached = proto::AttachInvocationCompletionNotificationMessage::decode(payload).unwrap();
    assert_eq!(
        attached.result,
        Some(proto::attach_invocation_completion_notification_message::Result::Value(
            proto::Value {
                content: Bytes::from_static(b"\"done\"")
            }
        ))
    );

    // An id nobody knows: not found, at once.
    apply_all(&store, &[ask(caller, 3, id(77, "z"), 3, true)]);
    let (_, payload) = completion(&store, &caller, 3).unwrap();
    let attached = proto::AttachInvocationCompletionNotificationMessage::decode(payload).unwrap();
    assert!(matches!(
        attached.result,
        Some(proto::attach_invocation_completion_notification_message::Result::Failure(f)) if f.code == 404
    ));
}

#[test]
fn a_named_signal_resumes_the_invocation_waiting_for_it_once() {
    let (_dir, store) = open();
    let (waiter, sender) = (id(1, "x"), id(2, "y"));
    let send = |index: u32, value: &'static [u8]| {
        entry(
            sender,
            index,
            MessageType::SendSignalCommand,
            proto::SendSignalCommandMessage {
                target_invocation_id: waiter.to_string(),
                signal_id: Some(proto::send_signal_command_message::SignalId::Name("approved".into())),
                result: Some(proto::send_signal_command_message::Result::Value(proto::Value {
                    content: Bytes::from_static(value),
                })),
                ..Default::default()
            },
        )
    };
    let actions = apply_all(
        &store,
        &[
            invoke(waiter, greeter(), 1),
            invoke(sender, greeter(), 2),
            effect(
                2_500,
                waiter,
                Effect::Suspend {
                    commands: 1,
                    completions: Vec::new(),
                    signals: Vec::new(),
                    named_signals: vec!["approved".into()],
                    future: None,
                },
            ),
            send(1, b"true"),
            send(2, b"again"),
        ],
    );
    assert_eq!(
        actions.iter().filter(|a| **a == Action::Invoke(waiter)).count(),
        2,
        "started, then resumed by the signal"
    );
    let status = status_of(&store, &waiter).unwrap();
    assert_eq!(status.phase, Phase::Invoked);
    assert_eq!(status.journal_length, 2, "input and one signal: the second is dropped");
    let raw = store
        .txn()
        .get_raw(journal_key(&waiter, 1).as_bytes())
        .unwrap()
        .unwrap();
    let (ty, payload) = decode_entry(&raw).unwrap();
    assert_eq!(MessageType::from_code(ty), MessageType::SignalNotification);
    let signal = proto::SignalNotificationMessage::decode(payload).unwrap();
    assert_eq!(
        signal.signal_id,
        Some(proto::signal_notification_message::SignalId::Name("approved".into()))
    );
}
