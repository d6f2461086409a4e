//! Attempts against fake deployments: what the invoker reports for good and bad SDK answers.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use restate_service_protocol::{Encoder, Message, ServiceProtocolVersion, proto};
use restate_types::InvocationId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{Attempt, AttemptDeployment, AttemptEvent, AttemptOutcome, InvokerClient, JournalFrame, run_attempt};

const V6: ServiceProtocolVersion = ServiceProtocolVersion::V6;

/// A deployment that answers every invoke with `status`, `content_type` and `body`.
async fn fake_deployment(status: StatusCode, content_type: &'static str, body: Bytes) -> String {
    let router = deployment_router(status, content_type, body);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(restate_net::serve(listener, router, CancellationToken::new()));
    format!("http://{address}")
}

fn deployment_router(status: StatusCode, content_type: &'static str, body: Bytes) -> Router {
    Router::new().route(
        "/invoke/{service}/{handler}",
        post(move || {
            let body = body.clone();
            async move {
                let mut response = Response::new(Body::from(body));
                *response.status_mut() = status;
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                response
            }
        }),
    )
}

fn frames(messages: &[Message]) -> Bytes {
    let encoder = Encoder::new(V6);
    let mut bytes = Vec::new();
    for message in messages {
        bytes.extend_from_slice(&encoder.encode(message).unwrap());
    }
    Bytes::from(bytes)
}

fn attempt(uri: String, use_http_11: bool) -> Attempt {
    Attempt {
        invocation_id: InvocationId::generate(7),
        service: "Greeter".into(),
        handler: "greet".into(),
        key: None,
        deployment: AttemptDeployment {
            uri,
            additional_headers: BTreeMap::new(),
            use_http_11,
            request_response: use_http_11,
        },
        version: V6,
        journal: vec![JournalFrame {
            message_type: 0x0400,
            payload: Bytes::new(),
        }],
        state: None,
        retry_count_since_last_stored_entry: 0,
        duration_since_last_stored_entry: Duration::ZERO,
        random_seed: 1,
        inactivity_timeout: Duration::from_secs(5),
        abort_timeout: Duration::from_secs(5),
        message_size_limit: 1 << 20,
    }
}

async fn run(attempt: Attempt) -> (AttemptOutcome, Vec<AttemptEvent>) {
    let client = InvokerClient::new(Duration::from_secs(2)).unwrap();
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let (_notify_tx, notify_rx) = mpsc::unbounded_channel();
    let outcome = run_attempt(&client, attempt, events_tx, notify_rx, CancellationToken::new()).await;
    let mut events = Vec::new();
    while let Ok(event) = events_rx.try_recv() {
        events.push(event);
    }
    (outcome, events)
}

fn output(text: &'static str) -> Message {
    Message::OutputCommand(proto::OutputCommandMessage {
        result: Some(proto::output_command_message::Result::Value(proto::Value {
            content: Bytes::from_static(text.as_bytes()),
        })),
        name: String::new(),
    })
}

#[tokio::test]
async fn output_and_end_end_the_attempt_over_h2c_and_http_11() {
    let body = frames(&[output("\"Hi\""), Message::End(proto::EndMessage {})]);
    for use_http_11 in [false, true] {
        let uri = fake_deployment(StatusCode::OK, V6.content_type(), body.clone()).await;
        let (outcome, events) = run(attempt(uri, use_http_11)).await;
        assert_eq!(outcome, AttemptOutcome::Ended);
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(matches!(
            &events[0],
            AttemptEvent::Command {
                message_type: 0x0401,
                ..
            }
        ));
        assert_eq!(events[1], AttemptEvent::End);
    }
}

#[tokio::test]
async fn garbage_an_early_close_or_a_wrong_answer_fail_the_attempt() {
    let cases: Vec<(StatusCode, &'static str, Bytes, u16, &str)> = vec![
        (
            StatusCode::OK,
            V6.content_type(),
            Bytes::from_static(b"\xff\xff\x00\x00\x00\x00\x00\x01x"),
            571,
            "decode",
        ),
        (
            StatusCode::OK,
            V6.content_type(),
            frames(&[output("1")]),
            571,
            "without End",
        ),
        (
            StatusCode::OK,
            V6.content_type(),
            Bytes::from_static(b"\x04\x01\x00\x00\x00\x00\x00\x09ab"),
            571,
            "middle of a message",
        ),
        (
            StatusCode::OK,
            "application/json",
            frames(&[Message::End(proto::EndMessage {})]),
            571,
            "content-type",
        ),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            Bytes::from_static(b"crashed"),
            500,
            "crashed",
        ),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "text/plain",
            Bytes::new(),
            415,
            "refused protocol",
        ),
    ];
    for (status, content_type, body, code, reason) in cases {
        let uri = fake_deployment(status, content_type, body).await;
        let (outcome, _) = run(attempt(uri, false)).await;
        match outcome {
            AttemptOutcome::Failed(error) => {
                assert_eq!(error.code, code, "{error}");
                assert!(error.message.contains(reason), "'{reason}' not in {error}");
            }
            other => panic!("expected a failure ({reason}), got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_sdk_error_carries_its_code_and_retry_delay() {
    let error = Message::Error(proto::ErrorMessage {
        code: 500,
        message: "attempt 1 failed".into(),
        next_retry_delay: Some(1500),
        ..Default::default()
    });
    let uri = fake_deployment(StatusCode::OK, V6.content_type(), frames(&[error])).await;
    let (outcome, _) = run(attempt(uri, false)).await;
    let AttemptOutcome::Failed(error) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        (error.code, error.retry_after),
        (500, Some(Duration::from_millis(1500)))
    );
}

#[tokio::test]
async fn an_unreachable_deployment_is_unavailable() {
    let port = restate_net_free_port();
    let (outcome, _) = run(attempt(format!("http://127.0.0.1:{port}"), false)).await;
    let AttemptOutcome::Failed(error) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(error.code, 503, "{error}");
    assert!(error.message.contains("cannot reach"), "{error}");
}

#[tokio::test]
async fn suspension_reports_what_the_sdk_waits_for() {
    let suspension = Message::SuspensionV6(proto::SuspensionMessageV6 {
        waiting_completions: vec![1],
        waiting_signals: vec![1],
        waiting_named_signals: Vec::new(),
    });
    let uri = fake_deployment(StatusCode::OK, V6.content_type(), frames(&[suspension])).await;
    let (outcome, events) = run(attempt(uri, false)).await;
    assert_eq!(outcome, AttemptOutcome::Suspended);
    assert_eq!(
        events,
        vec![AttemptEvent::Suspended {
            completions: vec![1],
            signals: vec![1],
            named_signals: Vec::new(),
            future: None,
        }]
    );
}

/// A port nothing listens on.
fn restate_net_free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A deployment that streams `frame` `count` times, `every` apart, then `End` (with `end`), or
/// stays silent after the frames (without `end`).
async fn streaming_deployment(frame: Bytes, count: usize, every: Duration, end: bool) -> String {
    let router = Router::new().route(
        "/invoke/{service}/{handler}",
        post(move || {
            let frame = frame.clone();
            async move {
                let frames = futures::stream::unfold(0, move |sent| {
                    let frame = frame.clone();
                    async move {
                        if sent == count {
                            if !end {
                                std::future::pending::<()>().await;
                            }
                            return None;
                        }
                        tokio::time::sleep(every).await;
                        Some((Ok::<_, std::convert::Infallible>(frame), sent + 1))
                    }
                });
                let end_frame = futures::stream::iter(
                    end.then(|| Ok(frames_of_end()))
                        .into_iter()
                        .collect::<Vec<Result<Bytes, std::convert::Infallible>>>(),
                );
                let mut response = Response::new(Body::from_stream(futures::StreamExt::chain(frames, end_frame)));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(V6.content_type()));
                response
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(restate_net::serve(listener, router, CancellationToken::new()));
    format!("http://{address}")
}

fn frames_of_end() -> Bytes {
    frames(&[Message::End(proto::EndMessage {})])
}

#[tokio::test]
async fn messages_keep_an_attempt_alive_past_its_timeouts() {
    // Six frames 150 ms apart outlast the inactivity (250 ms) and abort (500 ms) timeouts
    // together; each one moves the deadline, so the attempt ends normally.
    let uri = streaming_deployment(frames(&[output("1")]), 6, Duration::from_millis(150), true).await;
    let mut slow = attempt(uri, false);
    slow.inactivity_timeout = Duration::from_millis(250);
    slow.abort_timeout = Duration::from_millis(500);
    let (outcome, events) = run(slow).await;
    assert_eq!(outcome, AttemptOutcome::Ended, "{events:?}");
    assert_eq!(events.len(), 7, "{events:?}");
}

#[tokio::test]
async fn a_silent_deployment_is_given_up_after_the_inactivity_and_abort_timeouts() {
    let uri = streaming_deployment(frames(&[output("1")]), 1, Duration::from_millis(10), false).await;
    let mut silent = attempt(uri, false);
    silent.inactivity_timeout = Duration::from_millis(200);
    silent.abort_timeout = Duration::from_millis(300);
    let started = tokio::time::Instant::now();
    let (outcome, _) = run(silent).await;
    let AttemptOutcome::Failed(error) = outcome else {
        panic!("expected a failed attempt, got {outcome:?}");
    };
    assert_eq!(error.code, crate::codes::TIMEOUT, "{error:?}");
    assert!(error.message.contains("abort timeout"), "{error:?}");
    // Not before both timeouts ran out after the last message.
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_connection_is_retired_after_it_carried_its_share_of_invocations() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let body = frames(&[output("\"Hi\""), Message::End(proto::EndMessage {})]);
    let router = deployment_router(StatusCode::OK, V6.content_type(), body);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counting = accepted.clone();
    let listener = axum::serve::ListenerExt::tap_io(listener, move |_| {
        counting.fetch_add(1, Ordering::SeqCst);
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = InvokerClient::new(Duration::from_secs(2)).unwrap();
    let limit = crate::http::MAX_INVOCATIONS_PER_CONNECTION as usize;
    for n in 0..=limit {
        let (events_tx, _events_rx) = mpsc::unbounded_channel();
        let (_notify_tx, notify_rx) = mpsc::unbounded_channel();
        let outcome = run_attempt(
            &client,
            attempt(format!("http://{address}"), false),
            events_tx,
            notify_rx,
            CancellationToken::new(),
        )
        .await;
        assert_eq!(outcome, AttemptOutcome::Ended, "attempt {n}");
    }
    // The first connection carried `limit` invocations; the next one went out on a new one.
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}
