//! Field numbers checked against payloads written by hand from the design doc (§3.3–3.6),
//! independently of prost, for one sample of every message type.

use std::collections::HashSet;

use bytes::Bytes;

use crate::message::*;
use crate::{Decoder, Encoder, MessageFlags};

/// A minimal protobuf writer: enough to spell out expected payloads field by field.
#[derive(Default, Clone)]
struct Pb(Vec<u8>);

impl Pb {
    fn raw_varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }
    fn varint(mut self, field: u32, value: u64) -> Self {
        self.raw_varint(u64::from(field) << 3);
        self.raw_varint(value);
        self
    }
    fn bytes(mut self, field: u32, data: impl AsRef<[u8]>) -> Self {
        let data = data.as_ref();
        self.raw_varint((u64::from(field) << 3) | 2);
        self.raw_varint(data.len() as u64);
        self.0.extend_from_slice(data);
        self
    }
    fn msg(self, field: u32, inner: Pb) -> Self {
        self.bytes(field, inner.0)
    }
    fn packed(self, field: u32, values: &[u64]) -> Self {
        let mut inner = Pb::default();
        for v in values {
            inner.raw_varint(*v);
        }
        self.bytes(field, inner.0)
    }
}

fn pb() -> Pb {
    Pb::default()
}

fn value(content: &str) -> proto::Value {
    proto::Value {
        content: Bytes::copy_from_slice(content.as_bytes()),
    }
}

fn value_pb(content: &str) -> Pb {
    pb().bytes(1, content)
}

fn failure() -> proto::Failure {
    proto::Failure {
        code: 409,
        message: "nope".into(),
        metadata: vec![proto::FailureMetadata {
            key: "k".into(),
            value: "v".into(),
        }],
    }
}

fn failure_pb() -> Pb {
    pb().varint(1, 409)
        .bytes(2, "nope")
        .msg(3, pb().bytes(1, "k").bytes(2, "v"))
}

fn header(key: &str, value: &str) -> proto::Header {
    proto::Header {
        key: key.into(),
        value: value.into(),
    }
}

/// (message, payload spelled from the doc's field numbers, version to use).
fn samples() -> Vec<(Message, Pb, ServiceProtocolVersion)> {
    use ServiceProtocolVersion::{V6, V7};
    use proto::*;
    let b = |s: &'static str| Bytes::from_static(s.as_bytes());
    vec![
        (
            StartMessage {
                id: Bytes::from(vec![7u8; 24]),
                debug_id: "inv_1x".into(),
                known_entries: 2,
                state_map: vec![start_message::StateEntry {
                    key: b("a"),
                    value: b(""),
                }],
                partial_state: true,
                key: "k".into(),
                retry_count_since_last_stored_entry: 3,
                duration_since_last_stored_entry: 400,
                random_seed: u64::MAX,
                scope: Some("s".into()),
                limit_key: Some("l".into()),
                idempotency_key: Some("i".into()),
            }
            .into(),
            pb().bytes(1, [7u8; 24])
                .bytes(2, "inv_1x")
                .varint(3, 2)
                // proto3 omits the empty value; the entry itself still says "present".
                .msg(4, pb().bytes(1, "a"))
                .varint(5, 1)
                .bytes(6, "k")
                .varint(7, 3)
                .varint(8, 400)
                .varint(9, u64::MAX)
                .bytes(10, "s")
                .bytes(11, "l")
                .bytes(12, "i"),
            V7,
        ),
        (
            SuspensionMessage {
                awaiting_on: Some(Future {
                    waiting_completions: vec![1, 300],
                    waiting_signals: vec![],
                    waiting_named_signals: vec!["n".into()],
                    nested_futures: vec![Future {
                        waiting_signals: vec![1],
                        combinator_type: future::CombinatorType::AllSucceededOrFirstFailed as i32,
                        ..Default::default()
                    }],
                    combinator_type: future::CombinatorType::AllCompleted as i32,
                }),
            }
            .into(),
            pb().msg(
                4,
                pb().packed(1, &[1, 300])
                    .bytes(3, "n")
                    .msg(4, pb().packed(2, &[1]).varint(5, 4))
                    .varint(5, 2),
            ),
            V7,
        ),
        (
            SuspensionMessageV6 {
                waiting_completions: vec![2],
                waiting_signals: vec![17, 1],
                waiting_named_signals: vec!["sig".into()],
            }
            .into(),
            pb().packed(1, &[2]).packed(2, &[17, 1]).bytes(3, "sig"),
            V6,
        ),
        (
            ErrorMessage {
                code: 500,
                message: "boom".into(),
                stacktrace: "at x".into(),
                related_command_index: Some(1),
                related_command_name: Some("stamp".into()),
                related_command_type: Some(u32::from(MessageType::RunCommand.code())),
                next_retry_delay: Some(1000),
                behavior: error_message::Behavior::Pause as i32,
            }
            .into(),
            pb().varint(1, 500)
                .bytes(2, "boom")
                .bytes(3, "at x")
                .varint(4, 1)
                .bytes(5, "stamp")
                .varint(6, 0x0411)
                .varint(8, 1000)
                .varint(9, 1),
            V7,
        ),
        (EndMessage {}.into(), pb(), V6),
        (CommandAckMessage { command_index: 5 }.into(), pb().varint(1, 5), V6),
        (
            ProposeRunCompletionMessage {
                result_completion_id: 4,
                result: Some(propose_run_completion_message::Result::Failure(failure())),
            }
            .into(),
            pb().varint(1, 4).msg(15, failure_pb()),
            V6,
        ),
        (
            AwaitingOnMessage {
                awaiting_on: Some(Future {
                    waiting_completions: vec![3],
                    combinator_type: future::CombinatorType::FirstSucceededOrAllFailed as i32,
                    ..Default::default()
                }),
                executing_side_effects: true,
            }
            .into(),
            pb().msg(1, pb().packed(1, &[3]).varint(5, 3)).varint(2, 1),
            V7,
        ),
        (
            ProposeRunCompletionAckMessage { completion_id: 9 }.into(),
            pb().varint(1, 9),
            V7,
        ),
        (
            InputCommandMessage {
                headers: vec![header("a", "b")],
                value: Some(value("in")),
                name: "n".into(),
            }
            .into(),
            pb().msg(1, pb().bytes(1, "a").bytes(2, "b"))
                .bytes(12, "n")
                .msg(14, value_pb("in")),
            V6,
        ),
        (
            OutputCommandMessage {
                result: Some(output_command_message::Result::Failure(failure())),
                name: "n".into(),
            }
            .into(),
            pb().bytes(12, "n").msg(15, failure_pb()),
            V6,
        ),
        (
            GetLazyStateCommandMessage {
                key: b("k"),
                result_completion_id: 1,
                name: "n".into(),
            }
            .into(),
            pb().bytes(1, "k").varint(11, 1).bytes(12, "n"),
            V6,
        ),
        (
            SetStateCommandMessage {
                key: b("k"),
                value: Some(value("v")),
                name: String::new(),
            }
            .into(),
            pb().bytes(1, "k").msg(3, value_pb("v")),
            V6,
        ),
        (
            ClearStateCommandMessage {
                key: b("k"),
                name: "n".into(),
            }
            .into(),
            pb().bytes(1, "k").bytes(12, "n"),
            V6,
        ),
        (
            ClearAllStateCommandMessage { name: "n".into() }.into(),
            pb().bytes(12, "n"),
            V6,
        ),
        (
            GetLazyStateKeysCommandMessage {
                result_completion_id: 2,
                name: String::new(),
            }
            .into(),
            pb().varint(11, 2),
            V6,
        ),
        (
            GetEagerStateCommandMessage {
                key: b("k"),
                result: Some(get_eager_state_command_message::Result::Value(value("v"))),
                name: "n".into(),
            }
            .into(),
            pb().bytes(1, "k").bytes(12, "n").msg(14, value_pb("v")),
            V6,
        ),
        (
            GetEagerStateKeysCommandMessage {
                value: Some(StateKeys {
                    keys: vec![b("a"), b("b")],
                }),
                name: String::new(),
            }
            .into(),
            pb().msg(14, pb().bytes(1, "a").bytes(1, "b")),
            V6,
        ),
        (
            GetPromiseCommandMessage {
                key: "p".into(),
                result_completion_id: 1,
                name: String::new(),
            }
            .into(),
            pb().bytes(1, "p").varint(11, 1),
            V6,
        ),
        (
            PeekPromiseCommandMessage {
                key: "p".into(),
                result_completion_id: 2,
                name: "n".into(),
            }
            .into(),
            pb().bytes(1, "p").varint(11, 2).bytes(12, "n"),
            V6,
        ),
        (
            CompletePromiseCommandMessage {
                key: "p".into(),
                completion: Some(complete_promise_command_message::Completion::CompletionFailure(
                    failure(),
                )),
                result_completion_id: 3,
                name: String::new(),
            }
            .into(),
            pb().bytes(1, "p").msg(3, failure_pb()).varint(11, 3),
            V6,
        ),
        (
            SleepCommandMessage {
                wake_up_time: 1796124260559,
                result_completion_id: 1,
                name: String::new(),
            }
            .into(),
            pb().varint(1, 1796124260559).varint(11, 1),
            V6,
        ),
        (
            CallCommandMessage {
                service_name: "svc".into(),
                handler_name: "h".into(),
                parameter: b("p"),
                headers: vec![header("x", "y")],
                key: "k".into(),
                idempotency_key: Some("idem".into()),
                scope: Some("s".into()),
                limit_key: Some("l".into()),
                invocation_id_notification_idx: 1,
                result_completion_id: 2,
                name: "n".into(),
            }
            .into(),
            pb().bytes(1, "svc")
                .bytes(2, "h")
                .bytes(3, "p")
                .msg(4, pb().bytes(1, "x").bytes(2, "y"))
                .bytes(5, "k")
                .bytes(6, "idem")
                .bytes(7, "s")
                .bytes(8, "l")
                .varint(10, 1)
                .varint(11, 2)
                .bytes(12, "n"),
            V7,
        ),
        (
            OneWayCallCommandMessage {
                service_name: "svc".into(),
                handler_name: "h".into(),
                parameter: b("p"),
                invoke_time: 1_700_000_000_000,
                headers: vec![header("x", "y")],
                key: "k".into(),
                idempotency_key: Some("idem".into()),
                scope: Some("s".into()),
                limit_key: Some("l".into()),
                invocation_id_notification_idx: 3,
                name: "n".into(),
            }
            .into(),
            pb().bytes(1, "svc")
                .bytes(2, "h")
                .bytes(3, "p")
                .varint(4, 1_700_000_000_000)
                .msg(5, pb().bytes(1, "x").bytes(2, "y"))
                .bytes(6, "k")
                .bytes(7, "idem")
                .bytes(8, "s")
                .bytes(9, "l")
                .varint(10, 3)
                .bytes(12, "n"),
            V7,
        ),
        (
            SendSignalCommandMessage {
                target_invocation_id: "inv_1t".into(),
                signal_id: Some(send_signal_command_message::SignalId::Name("go".into())),
                result: Some(send_signal_command_message::Result::Value(value("v"))),
                entry_name: "e".into(),
            }
            .into(),
            pb().bytes(1, "inv_1t")
                .bytes(3, "go")
                .msg(5, value_pb("v"))
                .bytes(12, "e"),
            V6,
        ),
        (
            RunCommandMessage {
                result_completion_id: 1,
                name: "stamp".into(),
            }
            .into(),
            pb().varint(11, 1).bytes(12, "stamp"),
            V6,
        ),
        (
            AttachInvocationCommandMessage {
                target: Some(attach_invocation_command_message::Target::IdempotentRequestTarget(
                    IdempotentRequestTarget {
                        service_name: "svc".into(),
                        service_key: Some("k".into()),
                        handler_name: "h".into(),
                        idempotency_key: "i".into(),
                        scope: Some("s".into()),
                    },
                )),
                result_completion_id: 1,
                name: String::new(),
            }
            .into(),
            pb().msg(
                3,
                pb().bytes(1, "svc")
                    .bytes(2, "k")
                    .bytes(3, "h")
                    .bytes(4, "i")
                    .bytes(5, "s"),
            )
            .varint(11, 1),
            V7,
        ),
        (
            GetInvocationOutputCommandMessage {
                target: Some(get_invocation_output_command_message::Target::WorkflowTarget(
                    WorkflowTarget {
                        workflow_name: "wf".into(),
                        workflow_key: "k".into(),
                        scope: Some("s".into()),
                    },
                )),
                result_completion_id: 2,
                name: "n".into(),
            }
            .into(),
            pb().msg(4, pb().bytes(1, "wf").bytes(2, "k").bytes(3, "s"))
                .varint(11, 2)
                .bytes(12, "n"),
            V7,
        ),
        (
            CompleteAwakeableCommandMessage {
                awakeable_id: "sign_1abc".into(),
                result: Some(complete_awakeable_command_message::Result::Failure(failure())),
                name: String::new(),
            }
            .into(),
            pb().bytes(1, "sign_1abc").msg(3, failure_pb()),
            V6,
        ),
        (
            GetLazyStateCompletionNotificationMessage {
                completion_id: 1,
                result: Some(get_lazy_state_completion_notification_message::Result::Void(Void {})),
            }
            .into(),
            pb().varint(1, 1).bytes(4, ""),
            V6,
        ),
        (
            GetLazyStateKeysCompletionNotificationMessage {
                completion_id: 2,
                state_keys: Some(StateKeys { keys: vec![b("a")] }),
            }
            .into(),
            pb().varint(1, 2).msg(17, pb().bytes(1, "a")),
            V6,
        ),
        (
            GetPromiseCompletionNotificationMessage {
                completion_id: 3,
                result: Some(get_promise_completion_notification_message::Result::Failure(failure())),
            }
            .into(),
            pb().varint(1, 3).msg(6, failure_pb()),
            V6,
        ),
        (
            PeekPromiseCompletionNotificationMessage {
                completion_id: 4,
                result: Some(peek_promise_completion_notification_message::Result::Void(Void {})),
            }
            .into(),
            pb().varint(1, 4).bytes(4, ""),
            V6,
        ),
        (
            CompletePromiseCompletionNotificationMessage {
                completion_id: 5,
                result: Some(complete_promise_completion_notification_message::Result::Failure(
                    failure(),
                )),
            }
            .into(),
            pb().varint(1, 5).msg(6, failure_pb()),
            V6,
        ),
        (
            SleepCompletionNotificationMessage {
                completion_id: 6,
                void: Some(Void {}),
            }
            .into(),
            pb().varint(1, 6).bytes(4, ""),
            V6,
        ),
        (
            CallCompletionNotificationMessage {
                completion_id: 7,
                result: Some(call_completion_notification_message::Result::Value(value("r"))),
            }
            .into(),
            pb().varint(1, 7).msg(5, value_pb("r")),
            V6,
        ),
        (
            CallInvocationIdCompletionNotificationMessage {
                completion_id: 8,
                invocation_id: "inv_1c".into(),
            }
            .into(),
            pb().varint(1, 8).bytes(16, "inv_1c"),
            V6,
        ),
        (
            RunCompletionNotificationMessage {
                completion_id: 9,
                result: Some(run_completion_notification_message::Result::Failure(failure())),
            }
            .into(),
            pb().varint(1, 9).msg(6, failure_pb()),
            V6,
        ),
        (
            AttachInvocationCompletionNotificationMessage {
                completion_id: 10,
                result: Some(attach_invocation_completion_notification_message::Result::Value(value(
                    "a",
                ))),
            }
            .into(),
            pb().varint(1, 10).msg(5, value_pb("a")),
            V6,
        ),
        (
            GetInvocationOutputCompletionNotificationMessage {
                completion_id: 11,
                result: Some(get_invocation_output_completion_notification_message::Result::Void(
                    Void {},
                )),
            }
            .into(),
            pb().varint(1, 11).bytes(4, ""),
            V6,
        ),
        (
            SignalNotificationMessage {
                signal_id: Some(signal_notification_message::SignalId::Name("named".into())),
                result: Some(signal_notification_message::Result::Failure(failure())),
            }
            .into(),
            pb().bytes(3, "named").msg(6, failure_pb()),
            V6,
        ),
    ]
}

#[test]
fn samples_cover_every_message_type() {
    let covered: HashSet<_> = samples().iter().map(|(m, _, _)| m.message_type()).collect();
    let all: HashSet<_> = MessageType::ALL.iter().copied().collect();
    assert_eq!(covered, all);
}

#[test]
fn field_numbers_match_the_design_doc() {
    for (message, expected, version) in samples() {
        let ty = message.message_type();
        assert_eq!(
            message.encode_payload().unwrap().as_ref(),
            expected.0.as_slice(),
            "{ty}"
        );
        assert_eq!(message.encoded_len(), expected.0.len(), "{ty}");
        let decoded = Message::decode(ty, version, Bytes::from(expected.0.clone())).unwrap();
        assert_eq!(decoded, message, "{ty}");
    }
}

#[test]
fn empty_state_value_is_present_but_empty() {
    // Some encoders write the empty value explicitly; both forms mean the same entry.
    let explicit = pb().msg(4, pb().bytes(1, "a").bytes(2, ""));
    let Message::Start(start) =
        Message::decode(MessageType::Start, ServiceProtocolVersion::V6, Bytes::from(explicit.0)).unwrap()
    else {
        panic!()
    };
    assert_eq!(start.state_map.len(), 1);
    assert_eq!(start.state_map[0].key.as_ref(), b"a");
    assert!(start.state_map[0].value.is_empty());
}

#[test]
fn every_message_type_round_trips_through_the_codec() {
    for (message, _, version) in samples() {
        let frame = Encoder::new(version)
            .encode_with_flags(&message, MessageFlags::REQUESTED_ACK)
            .unwrap();
        let mut decoder = Decoder::new(version);
        decoder.push(&frame);
        let (header, decoded) = decoder.next_message().unwrap().unwrap();
        assert!(header.requested_ack());
        assert_eq!(decoded, message);
    }
}

#[test]
fn notification_template_reads_any_notification() {
    for (message, payload, _) in samples() {
        if !message.message_type().is_notification() {
            continue;
        }
        let template = proto::NotificationTemplate::decode(Bytes::from(payload.0)).unwrap();
        assert!(template.id.is_some(), "{}", message.message_type());
        assert!(template.result.is_some(), "{}", message.message_type());
    }
}

#[test]
fn unpacked_repeated_numbers_are_accepted() {
    let unpacked = pb().varint(1, 1).varint(1, 2).varint(2, 17);
    let decoded = Message::decode(
        MessageType::Suspension,
        ServiceProtocolVersion::V6,
        Bytes::from(unpacked.0),
    )
    .unwrap();
    let Message::SuspensionV6(suspension) = decoded else {
        panic!("{decoded:?}")
    };
    assert_eq!(suspension.waiting_completions, [1, 2]);
    assert_eq!(suspension.waiting_signals, [17]);
}

#[test]
fn encoder_refuses_what_the_version_lacks() {
    use ServiceProtocolVersion::{V5, V6, V7};
    let ack = Message::from(proto::ProposeRunCompletionAckMessage { completion_id: 1 });
    let err = Encoder::new(V6).encode(&ack).unwrap_err();
    assert_eq!(
        err,
        EncodeError::NotInVersion {
            what: "ProposeRunCompletionAck",
            version: V6
        }
    );
    assert_eq!(
        err.to_string(),
        "ProposeRunCompletionAck is not part of service protocol V6"
    );
    let awaiting = Message::from(proto::AwaitingOnMessage::default());
    assert!(Encoder::new(V5).encode(&awaiting).is_err());

    let start = |scope: Option<&str>, limit: Option<&str>, idem: Option<&str>| {
        Message::from(proto::StartMessage {
            known_entries: 1,
            scope: scope.map(Into::into),
            limit_key: limit.map(Into::into),
            idempotency_key: idem.map(Into::into),
            ..Default::default()
        })
    };
    for (message, field) in [
        (start(Some("s"), None, None), "StartMessage.scope"),
        (start(None, Some("l"), None), "StartMessage.limit_key"),
        (start(None, None, Some("i")), "StartMessage.idempotency_key"),
    ] {
        assert_eq!(
            Encoder::new(V6).encode(&message),
            Err(EncodeError::NotInVersion {
                what: field,
                version: V6
            })
        );
        assert!(Encoder::new(V7).encode(&message).is_ok());
    }
    assert!(Encoder::new(V5).encode(&start(None, None, None)).is_ok());

    let v7_suspension = Message::from(proto::SuspensionMessage::default());
    let v6_suspension = Message::from(proto::SuspensionMessageV6::default());
    assert!(Encoder::new(V6).encode(&v7_suspension).is_err());
    assert!(Encoder::new(V7).encode(&v6_suspension).is_err());
    assert!(Encoder::new(V7).encode(&v7_suspension).is_ok());
    assert!(Encoder::new(V5).encode(&v6_suspension).is_ok());
}
