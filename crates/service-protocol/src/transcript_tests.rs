//! Golden tests: every frame recorded between Restate 1.7.12 and the TypeScript SDK 1.17.2
//! (V6 and V7) must decode to the expected message and re-encode to the identical bytes.
//!
//! The frames are copied into `tests/data/transcript-v{6,7}.hex` (one frame per line) so the
//! tests do not depend on files outside the crate.

use bytes::Bytes;

use crate::proto;
use crate::{Decoder, Encoder, Message, MessageFlags, MessageHeader, MessageType, ServiceProtocolVersion};

const TRANSCRIPT_V6: &str = include_str!("../tests/data/transcript-v6.hex");
const TRANSCRIPT_V7: &str = include_str!("../tests/data/transcript-v7.hex");

/// One recorded frame.
#[derive(Debug)]
struct Frame {
    stream: u32,
    runtime_to_sdk: bool,
    kind: &'static str,
    bytes: Vec<u8>,
}

fn hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length: {text}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Parses `<R>S|S>R> <type name> <hex>` lines; `# stream N: ...` comments set the stream.
fn parse(text: &'static str) -> Vec<Frame> {
    let mut stream = 0;
    let mut frames = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("# stream ") {
            stream = rest.split(':').next().unwrap().parse().unwrap();
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let direction = parts.next().unwrap();
        let kind = parts.next().unwrap();
        let bytes = hex(parts.next().unwrap());
        assert!(parts.next().is_none(), "trailing data: {line}");
        let runtime_to_sdk = match direction {
            "R>S" => true,
            "S>R" => false,
            other => panic!("bad direction {other}"),
        };
        frames.push(Frame {
            stream,
            runtime_to_sdk,
            kind,
            bytes,
        });
    }
    frames
}

fn transcripts() -> [(ServiceProtocolVersion, Vec<Frame>); 2] {
    [
        (ServiceProtocolVersion::V6, parse(TRANSCRIPT_V6)),
        (ServiceProtocolVersion::V7, parse(TRANSCRIPT_V7)),
    ]
}

fn decode_one(version: ServiceProtocolVersion, bytes: &[u8]) -> (MessageHeader, Message) {
    let mut decoder = Decoder::new(version);
    decoder.push(bytes);
    let decoded = decoder.next_message().unwrap().expect("a complete frame");
    assert_eq!(decoder.next_message().unwrap(), None);
    decoder.finish().unwrap();
    decoded
}

/// The frames of a transcript with a given stream number and type.
fn frames<'a>(all: &'a [Frame], stream: u32, kind: &str) -> Vec<&'a Frame> {
    let found: Vec<_> = all.iter().filter(|f| f.stream == stream && f.kind == kind).collect();
    assert!(!found.is_empty(), "no {kind} in stream {stream}");
    found
}

fn decode_in(version: ServiceProtocolVersion, all: &[Frame], stream: u32, kind: &str) -> Message {
    decode_one(version, &frames(all, stream, kind)[0].bytes).1
}

fn value(content: &str) -> Option<proto::Value> {
    Some(proto::Value {
        content: Bytes::copy_from_slice(content.as_bytes()),
    })
}

#[test]
fn transcripts_have_the_expected_frame_counts() {
    let [(_, v6), (_, v7)] = transcripts();
    assert_eq!(v6.len(), 84);
    assert_eq!(v7.len(), 92);
    for (version, all) in transcripts() {
        let streams: std::collections::BTreeSet<_> = all.iter().map(|f| f.stream).collect();
        assert_eq!(streams, (2..=16).collect(), "{version}");
    }
}

#[test]
fn every_frame_decodes_to_its_type_and_reencodes_identically() {
    for (version, all) in transcripts() {
        let encoder = Encoder::new(version);
        for frame in &all {
            let (header, message) = decode_one(version, &frame.bytes);
            let ty = message.message_type();
            assert_eq!(ty.name(), frame.kind, "{version} stream {}", frame.stream);
            assert_eq!(header.message_type(), ty);
            assert_eq!(header.length() as usize, frame.bytes.len() - MessageHeader::SIZE);
            // Runtime frames are Start, commands (replay) and notifications/acks.
            if frame.runtime_to_sdk {
                assert!(
                    matches!(ty, MessageType::Start | MessageType::ProposeRunCompletionAck)
                        || ty.is_command()
                        || ty.is_notification(),
                    "{ty}"
                );
            }
            let reencoded = encoder.encode_with_flags(&message, header.flags()).unwrap();
            assert_eq!(
                reencoded.as_ref(),
                frame.bytes.as_slice(),
                "{version} stream {} {ty}",
                frame.stream
            );
        }
    }
}

#[test]
fn raw_frames_round_trip_without_decoding() {
    for (version, all) in transcripts() {
        for frame in &all {
            let mut decoder = Decoder::new(version);
            decoder.push(&frame.bytes);
            let raw = decoder.next_raw().unwrap().unwrap();
            assert_eq!(raw.encode().as_ref(), frame.bytes.as_slice());
            assert_eq!(raw.message_type().name(), frame.kind);
        }
    }
}

/// The whole transcript as one byte stream, and the messages it must decode to.
fn stream_and_expected(version: ServiceProtocolVersion, all: &[Frame]) -> (Vec<u8>, Vec<(MessageHeader, Message)>) {
    let bytes: Vec<u8> = all.iter().flat_map(|f| f.bytes.iter().copied()).collect();
    let expected = all.iter().map(|f| decode_one(version, &f.bytes)).collect();
    (bytes, expected)
}

fn drain(decoder: &mut Decoder, into: &mut Vec<(MessageHeader, Message)>) {
    while let Some(item) = decoder.next_message().unwrap() {
        into.push(item);
    }
}

#[test]
fn streaming_decoder_is_independent_of_chunk_boundaries() {
    for (version, all) in transcripts() {
        let (bytes, expected) = stream_and_expected(version, &all);
        for split in 0..=bytes.len() {
            let mut decoder = Decoder::new(version);
            let mut got = Vec::with_capacity(expected.len());
            decoder.push(&bytes[..split]);
            drain(&mut decoder, &mut got);
            decoder.push(&bytes[split..]);
            drain(&mut decoder, &mut got);
            decoder.finish().unwrap();
            assert!(got == expected, "{version}: split at {split} changed the result");
        }
    }
}

#[test]
fn streaming_decoder_handles_single_byte_chunks_and_three_way_splits() {
    for (version, all) in transcripts() {
        let (bytes, expected) = stream_and_expected(version, &all);

        let mut decoder = Decoder::new(version);
        let mut got = Vec::new();
        for byte in &bytes {
            decoder.push([*byte]);
            drain(&mut decoder, &mut got);
        }
        decoder.finish().unwrap();
        assert!(got == expected, "{version}: byte-by-byte feeding changed the result");

        // Every pair of cut points inside each frame, with neighbours in the same buffer.
        for (index, frame) in all.iter().enumerate().filter(|(_, f)| f.bytes.len() <= 24) {
            let len = frame.bytes.len();
            for first in 0..=len {
                for second in first..=len {
                    let mut decoder = Decoder::new(version);
                    let mut got = Vec::new();
                    decoder.push(&frame.bytes[..first]);
                    drain(&mut decoder, &mut got);
                    decoder.push(&frame.bytes[first..second]);
                    drain(&mut decoder, &mut got);
                    decoder.push(&frame.bytes[second..]);
                    drain(&mut decoder, &mut got);
                    decoder.finish().unwrap();
                    assert_eq!(got, vec![expected[index].clone()]);
                }
            }
        }
    }
}

#[test]
fn v6_key_fields() {
    use ServiceProtocolVersion::V6;
    let all = parse(TRANSCRIPT_V6);

    // stream 2: greeter/greet
    let Message::Start(start) = decode_in(V6, &all, 2, "Start") else {
        panic!()
    };
    assert_eq!(start.id.len(), 24);
    assert_eq!(start.id[..4], [0x0c, 0x1c, 0x09, 0x6d]);
    assert_eq!(start.debug_id, "inv_1i3BYVVC0SIc63jBW85tjpVDe06pVvo5NL");
    assert_eq!(start.known_entries, 1);
    assert!(start.partial_state);
    assert_eq!(start.key, "");
    assert!(start.state_map.is_empty());
    assert_eq!(start.duration_since_last_stored_entry, 1);
    assert_eq!(start.random_seed, 14323598484196203589);
    assert_eq!((start.scope.as_ref(), start.limit_key.as_ref()), (None, None));

    let Message::InputCommand(input) = decode_in(V6, &all, 2, "InputCommand") else {
        panic!()
    };
    let headers: Vec<_> = input
        .headers
        .iter()
        .map(|h| (h.key.as_str(), h.value.as_str()))
        .collect();
    assert_eq!(
        headers,
        [
            ("x-restate-ingress-path", "/greeter/greet"),
            ("user-agent", "curl/7.88.1"),
            ("accept", "*/*"),
            ("content-type", "application/json"),
            ("content-length", "5"),
        ]
    );
    assert_eq!(input.value, value("\"Sam\""));

    let Message::OutputCommand(output) = decode_in(V6, &all, 2, "OutputCommand") else {
        panic!()
    };
    assert_eq!(
        output.result,
        Some(proto::output_command_message::Result::Value(
            value("\"Hello, Sam!\"").unwrap()
        ))
    );
    assert_eq!(decode_in(V6, &all, 2, "End"), Message::End(proto::EndMessage {}));

    // stream 3: first counter/add, no state yet.
    let Message::GetEagerStateCommand(get) = decode_in(V6, &all, 3, "GetEagerStateCommand") else {
        panic!()
    };
    assert_eq!(get.key.as_ref(), b"total");
    assert_eq!(
        get.result,
        Some(proto::get_eager_state_command_message::Result::Void(proto::Void {}))
    );
    let Message::SetStateCommand(set) = decode_in(V6, &all, 3, "SetStateCommand") else {
        panic!()
    };
    assert_eq!((set.key.as_ref(), set.value), (&b"total"[..], value("5")));

    // stream 4: eager state present, complete.
    let Message::Start(start) = decode_in(V6, &all, 4, "Start") else {
        panic!()
    };
    assert_eq!(start.key, "k1");
    assert!(!start.partial_state);
    assert_eq!(
        start.state_map,
        [proto::start_message::StateEntry {
            key: Bytes::from_static(b"total"),
            value: Bytes::from_static(b"5"),
        }]
    );
    let Message::GetEagerStateCommand(get) = decode_in(V6, &all, 4, "GetEagerStateCommand") else {
        panic!()
    };
    assert_eq!(
        get.result,
        Some(proto::get_eager_state_command_message::Result::Value(
            value("5").unwrap()
        ))
    );

    // stream 6: ctx.run("stamp") + sleep, V6 style (no ack flag, notification sent back).
    let Message::RunCommand(run) = decode_in(V6, &all, 6, "RunCommand") else {
        panic!()
    };
    assert_eq!((run.result_completion_id, run.name.as_str()), (1, "stamp"));
    let (header, propose) = decode_one(V6, &frames(&all, 6, "ProposeRunCompletion")[0].bytes);
    assert!(!header.requested_ack());
    let Message::ProposeRunCompletion(propose) = propose else {
        panic!()
    };
    assert_eq!(propose.result_completion_id, 1);
    assert_eq!(
        propose.result,
        Some(proto::propose_run_completion_message::Result::Value(
            Bytes::from_static(b"1796124260456")
        ))
    );
    let Message::RunCompletionNotification(done) = decode_in(V6, &all, 6, "RunCompletionNotification") else {
        panic!()
    };
    assert_eq!(done.completion_id, 1);
    assert_eq!(
        done.result,
        Some(proto::run_completion_notification_message::Result::Value(
            value("1796124260456").unwrap()
        ))
    );
    let Message::SleepCommand(sleep) = decode_in(V6, &all, 6, "SleepCommand") else {
        panic!()
    };
    assert_eq!((sleep.wake_up_time, sleep.result_completion_id), (1796124260559, 2));
    let Message::SleepCompletionNotification(woke) = decode_in(V6, &all, 6, "SleepCompletionNotification") else {
        panic!()
    };
    assert_eq!((woke.completion_id, woke.void), (2, Some(proto::Void {})));

    // stream 7: awakeable sent to the mailbox, then suspension on signal 17 (or cancel).
    let Message::OneWayCallCommand(send) = decode_in(V6, &all, 7, "OneWayCallCommand") else {
        panic!()
    };
    assert_eq!(
        (
            send.service_name.as_str(),
            send.handler_name.as_str(),
            send.key.as_str()
        ),
        ("mailbox", "put", "b1")
    );
    assert_eq!(
        send.parameter.as_ref(),
        b"\"sign_1JsQhPuTjv_E0UkkSO_Wgygu7eD7HCO_vAAAAEQ\""
    );
    assert_eq!((send.invocation_id_notification_idx, send.invoke_time), (1, 0));
    assert_eq!(send.idempotency_key, None);
    let Message::CallInvocationIdCompletionNotification(id) =
        decode_in(V6, &all, 7, "CallInvocationIdCompletionNotification")
    else {
        panic!()
    };
    assert_eq!(
        (id.completion_id, id.invocation_id.as_str()),
        (1, "inv_1fTTDKhBO8JT5ed6kNucp9A9ocFCAbkeKl")
    );
    assert_eq!(
        decode_in(V6, &all, 7, "Suspension"),
        Message::SuspensionV6(proto::SuspensionMessageV6 {
            waiting_completions: vec![],
            waiting_signals: vec![17, 1],
            waiting_named_signals: vec![],
        })
    );

    // stream 10: resumed with the awakeable's signal in the replay.
    let Message::SignalNotification(signal) = decode_in(V6, &all, 10, "SignalNotification") else {
        panic!()
    };
    assert_eq!(
        signal.signal_id,
        Some(proto::signal_notification_message::SignalId::Idx(17))
    );
    assert_eq!(
        signal.result,
        Some(proto::signal_notification_message::Result::Value(
            value("\"yes\"").unwrap()
        ))
    );

    // streams 11-13: workflow promise.
    let Message::GetPromiseCommand(get) = decode_in(V6, &all, 11, "GetPromiseCommand") else {
        panic!()
    };
    assert_eq!((get.key.as_str(), get.result_completion_id), ("verified", 1));
    assert_eq!(
        decode_in(V6, &all, 11, "Suspension"),
        Message::SuspensionV6(proto::SuspensionMessageV6 {
            waiting_completions: vec![1],
            waiting_signals: vec![1],
            waiting_named_signals: vec![],
        })
    );
    let Message::CompletePromiseCommand(complete) = decode_in(V6, &all, 12, "CompletePromiseCommand") else {
        panic!()
    };
    assert_eq!((complete.key.as_str(), complete.result_completion_id), ("verified", 1));
    assert_eq!(
        complete.completion,
        Some(proto::complete_promise_command_message::Completion::CompletionValue(
            value("\"c0de\"").unwrap()
        ))
    );
    let Message::CompletePromiseCompletionNotification(completed) =
        decode_in(V6, &all, 12, "CompletePromiseCompletionNotification")
    else {
        panic!()
    };
    assert_eq!(
        completed.result,
        Some(proto::complete_promise_completion_notification_message::Result::Void(
            proto::Void {}
        ))
    );
    let Message::GetPromiseCompletionNotification(got) = decode_in(V6, &all, 13, "GetPromiseCompletionNotification")
    else {
        panic!()
    };
    assert_eq!(got.completion_id, 1);
    assert_eq!(
        got.result,
        Some(proto::get_promise_completion_notification_message::Result::Value(
            value("\"c0de\"").unwrap()
        ))
    );

    // stream 16: cancelled while sleeping.
    let Message::SignalNotification(cancel) = decode_in(V6, &all, 16, "SignalNotification") else {
        panic!()
    };
    assert_eq!(
        cancel.signal_id,
        Some(proto::signal_notification_message::SignalId::Idx(
            proto::BuiltInSignal::Cancel as u32
        ))
    );
    assert_eq!(
        cancel.result,
        Some(proto::signal_notification_message::Result::Void(proto::Void {}))
    );
    let Message::OutputCommand(output) = decode_in(V6, &all, 16, "OutputCommand") else {
        panic!()
    };
    let Some(proto::output_command_message::Result::Failure(failure)) = output.result else {
        panic!()
    };
    assert_eq!((failure.code, failure.message.as_str()), (409, "Cancelled"));
    assert!(failure.metadata.is_empty());
}

#[test]
fn v7_key_fields() {
    use ServiceProtocolVersion::V7;
    use proto::future::CombinatorType;
    let all = parse(TRANSCRIPT_V7);

    let Message::Start(start) = decode_in(V7, &all, 16, "Start") else {
        panic!()
    };
    assert_eq!(start.debug_id, "inv_1dy3jGDtlzFc3NruMH1zxU2DK7z30i5vtH");
    assert_eq!(start.known_entries, 3);
    assert_eq!(start.random_seed, 2298595353796519672);
    // The reference server sent no scope/limit key/idempotency key here.
    assert_eq!(
        (start.scope, start.limit_key, start.idempotency_key),
        (None, None, None)
    );

    // stream 6: ctx.run with the ack flag, acked instead of a RunCompletion notification.
    let (header, propose) = decode_one(V7, &frames(&all, 6, "ProposeRunCompletion")[0].bytes);
    assert!(header.requested_ack());
    assert_eq!(header.flags(), MessageFlags::REQUESTED_ACK);
    let Message::ProposeRunCompletion(propose) = propose else {
        panic!()
    };
    assert_eq!(propose.result_completion_id, 1);
    assert_eq!(
        decode_in(V7, &all, 6, "ProposeRunCompletionAck"),
        Message::ProposeRunCompletionAck(proto::ProposeRunCompletionAckMessage { completion_id: 1 })
    );
    assert!(all.iter().all(|f| f.kind != "RunCompletionNotification"));

    let awaiting: Vec<_> = frames(&all, 6, "AwaitingOn")
        .iter()
        .map(|f| decode_one(V7, &f.bytes).1)
        .collect();
    let expected_future = |completions: Vec<u32>| proto::Future {
        waiting_completions: completions,
        waiting_signals: vec![1],
        waiting_named_signals: vec![],
        nested_futures: vec![],
        combinator_type: CombinatorType::FirstCompleted as i32,
    };
    assert_eq!(
        awaiting,
        [1, 1, 2].map(|id| Message::AwaitingOn(proto::AwaitingOnMessage {
            awaiting_on: Some(expected_future(vec![id])),
            executing_side_effects: false,
        }))
    );

    // stream 7: suspension as a future tree on signals 17 and 1.
    assert_eq!(
        decode_in(V7, &all, 7, "Suspension"),
        Message::Suspension(proto::SuspensionMessage {
            awaiting_on: Some(proto::Future {
                waiting_completions: vec![],
                waiting_signals: vec![17, 1],
                waiting_named_signals: vec![],
                nested_futures: vec![],
                combinator_type: CombinatorType::FirstCompleted as i32,
            }),
        })
    );
    // stream 15: suspension on the sleep (completion 1) or cancel.
    assert_eq!(
        decode_in(V7, &all, 15, "Suspension"),
        Message::Suspension(proto::SuspensionMessage {
            awaiting_on: Some(expected_future(vec![1])),
        })
    );
}

#[test]
fn suspension_layout_follows_the_version() {
    let v7 = parse(TRANSCRIPT_V7);
    let bytes = &frames(&v7, 15, "Suspension")[0].bytes;
    // A V7 payload read as V6 has none of the flat fields: the codec must know the version.
    assert_eq!(
        decode_one(ServiceProtocolVersion::V6, bytes).1,
        Message::SuspensionV6(proto::SuspensionMessageV6::default())
    );
    let v6 = parse(TRANSCRIPT_V6);
    let bytes = &frames(&v6, 15, "Suspension")[0].bytes;
    assert_eq!(
        decode_one(ServiceProtocolVersion::V7, bytes).1,
        Message::Suspension(proto::SuspensionMessage { awaiting_on: None })
    );
}

#[test]
fn design_doc_frames_encode_from_scratch() {
    use ServiceProtocolVersion::{V6, V7};
    let v6 = Encoder::new(V6);
    let v7 = Encoder::new(V7);

    // §8.1 Output "Hi" and End.
    let output = Message::from(proto::OutputCommandMessage {
        result: Some(proto::output_command_message::Result::Value(value("\"Hi\"").unwrap())),
        name: String::new(),
    });
    assert_eq!(
        v6.encode(&output).unwrap().as_ref(),
        hex("040100000000000872060a0422486922")
    );
    assert_eq!(
        v6.encode(&Message::End(proto::EndMessage {})).unwrap().as_ref(),
        hex("0003000000000000")
    );

    // §8.3 Suspension in both layouts, and the SleepCompletion.
    let future = proto::Future {
        waiting_completions: vec![1],
        waiting_signals: vec![1],
        combinator_type: proto::future::CombinatorType::FirstCompleted as i32,
        ..Default::default()
    };
    let suspension_v7 = Message::from(proto::SuspensionMessage {
        awaiting_on: Some(future),
    });
    assert_eq!(
        v7.encode(&suspension_v7).unwrap().as_ref(),
        hex("000100000000000a22080a01011201012801")
    );
    let suspension_v6 = Message::from(proto::SuspensionMessageV6 {
        waiting_completions: vec![1],
        waiting_signals: vec![1],
        waiting_named_signals: vec![],
    });
    assert_eq!(
        v6.encode(&suspension_v6).unwrap().as_ref(),
        hex("00010000000000060a0101120101")
    );
    let sleep_done = Message::from(proto::SleepCompletionNotificationMessage {
        completion_id: 1,
        void: Some(proto::Void {}),
    });
    assert_eq!(
        v6.encode(&sleep_done).unwrap().as_ref(),
        hex("800c00000000000408012200")
    );

    // §8.4 ProposeRunCompletion header with and without the ack flag, and the V7 ack.
    let propose = Message::from(proto::ProposeRunCompletionMessage {
        result_completion_id: 1,
        result: Some(proto::propose_run_completion_message::Result::Value(
            Bytes::from_static(b"x"),
        )),
    });
    assert_eq!(
        v7.encode_with_flags(&propose, MessageFlags::REQUESTED_ACK)
            .unwrap()
            .as_ref(),
        hex("00058000000000050801720178")
    );
    assert_eq!(v6.encode(&propose).unwrap()[..4], [0x00, 0x05, 0x00, 0x00]);
    let ack = Message::from(proto::ProposeRunCompletionAckMessage { completion_id: 1 });
    assert_eq!(v7.encode(&ack).unwrap().as_ref(), hex("00070000000000020801"));
    // V6: the notification itself, with the bytes re-wrapped in a Value.
    let run_done = Message::from(proto::RunCompletionNotificationMessage {
        completion_id: 1,
        result: Some(proto::run_completion_notification_message::Result::Value(
            value("x").unwrap(),
        )),
    });
    assert_eq!(
        v6.encode(&run_done).unwrap().as_ref(),
        hex("801100000000000708012a030a0178")
    );
}
