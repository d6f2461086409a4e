//! One attempt: request, replay, live exchange, terminal message.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use restate_service_protocol::proto;
use restate_service_protocol::{
    Decoder, Encoder, Message, MessageFlags, MessageType, RawMessage, ServiceProtocolVersion,
};
use restate_types::{InvocationId, error_chain};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::codes;
use crate::http::{InvokerClient, encode_component, endpoint_url};

/// Bytes of a deployment's error answer kept for the attempt's failure (it is logged, stored in
/// the log and shown to operators).
const MAX_ERROR_BODY: usize = 4096;

/// How long the end of the response may take after the terminal message.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// One stored journal entry as it is replayed: its type code and protobuf payload.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalFrame {
    pub message_type: u16,
    pub payload: Bytes,
}

impl JournalFrame {
    /// The frame (header and payload) as it goes on the wire.
    pub fn encode(&self) -> Bytes {
        match RawMessage::new(
            MessageType::from_code(self.message_type),
            MessageFlags::EMPTY,
            self.payload.clone(),
        ) {
            Ok(raw) => raw.encode(),
            Err(_) => Bytes::new(),
        }
    }
}

/// Where and how to reach the deployment.
#[derive(Debug, Clone)]
pub struct AttemptDeployment {
    pub uri: String,
    pub additional_headers: BTreeMap<String, String>,
    pub use_http_11: bool,
    /// Close the request body right after the replay (HTTP/1.1, Lambda, `REQUEST_RESPONSE`).
    pub request_response: bool,
}

/// Everything one attempt needs.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub invocation_id: InvocationId,
    pub service: String,
    pub handler: String,
    /// Object or workflow key.
    pub key: Option<String>,
    pub deployment: AttemptDeployment,
    pub version: ServiceProtocolVersion,
    pub journal: Vec<JournalFrame>,
    /// The complete state of the key (eager state), or `None` when the SDK must ask.
    pub state: Option<Vec<(Bytes, Bytes)>>,
    pub retry_count_since_last_stored_entry: u32,
    pub duration_since_last_stored_entry: Duration,
    pub random_seed: u64,
    pub inactivity_timeout: Duration,
    pub abort_timeout: Duration,
    pub message_size_limit: usize,
}

/// What the SDK did, for the worker to propose to the log, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptEvent {
    /// A new journal command (type code, payload, decoded message).
    Command {
        message_type: u16,
        payload: Bytes,
        message: Box<Message>,
    },
    /// The result of a `ctx.run`; `ack` when the SDK wants a `ProposeRunCompletionAck`.
    ProposeRunCompletion {
        completion_id: u32,
        result: Result<Bytes, proto::Failure>,
        ack: bool,
    },
    /// The SDK waits and closed its side: on any of these completion ids or signals (V5/V6),
    /// or on the V7 future tree (encoded `Future`), whose leaves are listed too.
    Suspended {
        completions: Vec<u32>,
        signals: Vec<u32>,
        named_signals: Vec<String>,
        future: Option<Bytes>,
    },
    /// The SDK finished the invocation.
    End,
}

/// What the SDK's error asks the runtime to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorBehavior {
    Retry,
    Pause,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    pub code: u16,
    pub message: String,
    /// A delay the SDK (or `Retry-After`) asked for, overriding the retry policy once.
    pub retry_after: Option<Duration>,
    pub behavior: ErrorBehavior,
}

impl AttemptError {
    fn new(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
            behavior: ErrorBehavior::Retry,
        }
    }
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.code, self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    Ended,
    Suspended,
    Failed(AttemptError),
    /// Stopped by the worker (leadership lost, invocation resumed elsewhere, shutdown).
    Cancelled,
}

/// Runs one attempt. `events` receives what the SDK did; `notifications` carries encoded
/// frames the worker wants delivered live (ignored once the request body is closed).
pub async fn run_attempt(
    client: &InvokerClient,
    attempt: Attempt,
    events: mpsc::UnboundedSender<AttemptEvent>,
    mut notifications: mpsc::UnboundedReceiver<Bytes>,
    cancel: CancellationToken,
) -> AttemptOutcome {
    tokio::select! {
        _ = cancel.cancelled() => AttemptOutcome::Cancelled,
        outcome = exchange(client, &attempt, &events, &mut notifications) => match outcome {
            Ok(outcome) => outcome,
            Err(error) => AttemptOutcome::Failed(error),
        },
    }
}

/// The start of a response body as text, reading no more than `limit` bytes of it.
async fn bounded_text(mut response: hyper::Response<hyper::body::Incoming>, limit: usize) -> String {
    let mut body = Vec::new();
    while body.len() < limit {
        match next_chunk(&mut response).await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())]),
            _ => break,
        }
    }
    let mut text = String::from_utf8_lossy(&body).into_owned();
    if body.len() >= limit {
        text.push_str(" …(cut)");
    }
    text
}

/// The next data of a response body (`None` at its end; trailers are skipped).
async fn next_chunk(response: &mut hyper::Response<hyper::body::Incoming>) -> Result<Option<Bytes>, hyper::Error> {
    use http_body_util::BodyExt as _;
    loop {
        match response.body_mut().frame().await {
            None => return Ok(None),
            Some(Err(error)) => return Err(error),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

fn start_message(attempt: &Attempt) -> Message {
    let (state_map, partial_state) = match &attempt.state {
        Some(state) => (
            state
                .iter()
                .map(|(key, value)| proto::start_message::StateEntry {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            false,
        ),
        None => (Vec::new(), true),
    };
    Message::Start(proto::StartMessage {
        id: Bytes::copy_from_slice(&attempt.invocation_id.to_raw()),
        debug_id: attempt.invocation_id.to_string(),
        known_entries: attempt.journal.len() as u32,
        state_map,
        partial_state,
        key: attempt.key.clone().unwrap_or_default(),
        retry_count_since_last_stored_entry: attempt.retry_count_since_last_stored_entry,
        duration_since_last_stored_entry: attempt.duration_since_last_stored_entry.as_millis() as u64,
        random_seed: attempt.random_seed,
        scope: None,
        limit_key: None,
        idempotency_key: None,
    })
}

type BodySender = mpsc::UnboundedSender<Result<Bytes, std::io::Error>>;

async fn exchange(
    client: &InvokerClient,
    attempt: &Attempt,
    events: &mpsc::UnboundedSender<AttemptEvent>,
    notifications: &mut mpsc::UnboundedReceiver<Bytes>,
) -> Result<AttemptOutcome, AttemptError> {
    let version = attempt.version;
    let encoder = Encoder::new(version);
    let (body_tx, body_rx) = mpsc::unbounded_channel::<Result<Bytes, std::io::Error>>();
    let start = encoder
        .encode(&start_message(attempt))
        .map_err(|e| AttemptError::new(codes::INTERNAL, format!("cannot encode Start: {e}")))?;
    let _ = body_tx.send(Ok(start));
    for entry in &attempt.journal {
        let _ = body_tx.send(Ok(entry.encode()));
    }
    let mut body_tx: Option<BodySender> = Some(body_tx);
    if attempt.deployment.request_response {
        body_tx = None;
    }

    let http = if attempt.deployment.use_http_11 {
        &client.h1
    } else {
        &client.h2
    };
    let url = endpoint_url(
        &attempt.deployment.uri,
        &format!("/invoke/{}/{}", attempt.service, attempt.handler),
    );
    let content_type = version.content_type();
    let mut request = hyper::Request::post(&url)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .header(hyper::header::ACCEPT, content_type)
        .header("x-restate-invocation-id", attempt.invocation_id.to_string());
    if let Some(key) = &attempt.key {
        request = request.header("x-restate-service-key", encode_component(key));
    }
    for (name, value) in &attempt.deployment.additional_headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let frames = futures::StreamExt::map(tokio_stream::wrappers::UnboundedReceiverStream::new(body_rx), |chunk| {
        chunk.map(hyper::body::Frame::data)
    });
    let body = http_body_util::BodyExt::boxed_unsync(http_body_util::StreamBody::new(frames));
    let request = request.body(body).map_err(|e| {
        AttemptError::new(
            codes::INTERNAL,
            format!(
                "cannot build the request to {url} (check the deployment's URI and additional headers): {}",
                error_chain(&e)
            ),
        )
    })?;
    let mut request = request;
    let connection = hyper_util::client::legacy::connect::capture_connection(&mut request);
    let response = tokio::time::timeout(attempt.abort_timeout, http.request(request)).await;
    crate::http::count_invocation(&connection);
    let response = match response {
        Err(_) => {
            return Err(AttemptError::new(
                codes::TIMEOUT,
                format!(
                    "no response from {url} within the abort timeout ({:?})",
                    attempt.abort_timeout
                ),
            ));
        }
        Ok(Err(error)) => {
            return Err(AttemptError::new(
                codes::UNAVAILABLE,
                format!("cannot reach the deployment at {url}: {}", error_chain(&error)),
            ));
        }
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if !status.is_success() {
        let retry_after = response
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = bounded_text(response, MAX_ERROR_BODY).await;
        let mut error = AttemptError::new(
            status.as_u16(),
            format!("the deployment answered {status}: {}", text.trim()),
        );
        if status.as_u16() == 415 {
            error.message = format!("the deployment refused protocol {content_type} (415): {}", text.trim());
        }
        error.retry_after = retry_after;
        return Err(error);
    }
    let echoed = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if echoed != content_type {
        return Err(AttemptError::new(
            codes::PROTOCOL_VIOLATION,
            format!("the deployment answered with content-type '{echoed}', expected '{content_type}'"),
        ));
    }

    let mut response = response;
    let mut decoder = Decoder::with_max_message_size(version, attempt.message_size_limit);
    let mut last_activity = Instant::now();
    let mut terminal: Option<AttemptOutcome> = None;
    let mut terminal_at = Instant::now();
    // One timer for the whole attempt, armed at the earliest deadline seen: every message moves
    // the deadline later, and re-registering a timer per message cost a lock of the runtime's
    // timer wheel each time. When it fires before the current deadline, it is armed again.
    let mut armed = last_activity + attempt.inactivity_timeout.min(attempt.abort_timeout);
    let timer = tokio::time::sleep_until(armed);
    tokio::pin!(timer);
    loop {
        let deadline = if terminal.is_some() {
            terminal_at + DRAIN_TIMEOUT
        } else if body_tx.is_some() {
            last_activity + attempt.inactivity_timeout
        } else {
            last_activity + attempt.abort_timeout
        };
        if deadline < armed {
            armed = deadline;
            timer.as_mut().reset(armed);
        }
        tokio::select! {
            chunk = next_chunk(&mut response) => {
                let chunk = match chunk {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => break,
                    Err(error) => {
                        if let Some(outcome) = terminal {
                            return Ok(outcome);
                        }
                        return Err(AttemptError::new(codes::UNAVAILABLE, format!("the response stream failed: {}", error_chain(&error))));
                    }
                };
                last_activity = Instant::now();
                if terminal.is_some() {
                    continue;
                }
                decoder.push(&chunk);
                loop {
                    let raw = match decoder.next_raw() {
                        Ok(Some(raw)) => raw,
                        Ok(None) => break,
                        Err(error) => return Err(AttemptError::new(codes::PROTOCOL_VIOLATION, format!("cannot decode the SDK's message: {error}"))),
                    };
                    if let Some(outcome) = handle_message(raw, version, events)? {
                        terminal = Some(outcome);
                        terminal_at = Instant::now();
                        // Our side is done too.
                        body_tx = None;
                        break;
                    }
                }
            }
            frame = notifications.recv(), if body_tx.is_some() && terminal.is_none() => {
                if let (Some(frame), Some(tx)) = (frame, &body_tx) {
                    last_activity = Instant::now();
                    let _ = tx.send(Ok(frame));
                }
            }
            _ = &mut timer => {
                if Instant::now() < deadline {
                    armed = deadline;
                    timer.as_mut().reset(armed);
                    continue;
                }
                if let Some(outcome) = terminal {
                    return Ok(outcome);
                }
                if body_tx.is_some() {
                    // Inactive: close our side so the SDK can suspend.
                    tracing::debug!(invocation = %attempt.invocation_id, "inactivity timeout: closing the request stream");
                    body_tx = None;
                    last_activity = Instant::now();
                } else {
                    return Err(AttemptError::new(codes::TIMEOUT, format!(
                        "the deployment did not finish the attempt within the abort timeout ({:?})", attempt.abort_timeout
                    )));
                }
            }
        }
    }
    match terminal {
        Some(outcome) => Ok(outcome),
        None => {
            if decoder.buffered_len() > 0 {
                return Err(AttemptError::new(
                    codes::PROTOCOL_VIOLATION,
                    "the response ended in the middle of a message",
                ));
            }
            Err(AttemptError::new(
                codes::PROTOCOL_VIOLATION,
                "the deployment closed the stream without End, Suspension or Error",
            ))
        }
    }
}

/// Handles one message of the SDK; `Some` for a terminal one.
fn handle_message(
    raw: RawMessage,
    version: ServiceProtocolVersion,
    events: &mpsc::UnboundedSender<AttemptEvent>,
) -> Result<Option<AttemptOutcome>, AttemptError> {
    let ty = raw.message_type();
    let ack = raw.header().requested_ack();
    let message = raw
        .decode(version)
        .map_err(|e| AttemptError::new(codes::PROTOCOL_VIOLATION, format!("cannot decode {}: {e}", ty.name())))?;
    let send = |event| {
        let _ = events.send(event);
    };
    match message {
        Message::InputCommand(_) => Err(AttemptError::new(
            codes::PROTOCOL_VIOLATION,
            "the SDK sent an Input command; only the runtime writes it",
        )),
        message if ty.is_command() => {
            send(AttemptEvent::Command {
                message_type: ty.code(),
                payload: raw.payload().clone(),
                message: Box::new(message),
            });
            Ok(None)
        }
        Message::ProposeRunCompletion(proposal) => {
            let result = match proposal.result {
                Some(proto::propose_run_completion_message::Result::Value(value)) => Ok(value),
                Some(proto::propose_run_completion_message::Result::Failure(failure)) => Err(failure),
                None => Ok(Bytes::new()),
            };
            send(AttemptEvent::ProposeRunCompletion {
                completion_id: proposal.result_completion_id,
                result,
                ack: ack && version >= ServiceProtocolVersion::V7,
            });
            Ok(None)
        }
        Message::AwaitingOn(_) => Ok(None),
        Message::SuspensionV6(suspension) => {
            if suspension.waiting_completions.is_empty()
                && suspension.waiting_signals.is_empty()
                && suspension.waiting_named_signals.is_empty()
            {
                return Err(AttemptError::new(
                    codes::PROTOCOL_VIOLATION,
                    "the SDK suspended waiting on nothing",
                ));
            }
            send(AttemptEvent::Suspended {
                completions: suspension.waiting_completions,
                signals: suspension.waiting_signals,
                named_signals: suspension.waiting_named_signals,
                future: None,
            });
            Ok(Some(AttemptOutcome::Suspended))
        }
        Message::Suspension(suspension) => {
            let mut completions = Vec::new();
            let mut signals = Vec::new();
            let mut named_signals = Vec::new();
            if let Some(future) = &suspension.awaiting_on {
                flatten_future(future, &mut completions, &mut signals, &mut named_signals, 0);
            }
            if completions.is_empty() && signals.is_empty() && named_signals.is_empty() {
                return Err(AttemptError::new(
                    codes::PROTOCOL_VIOLATION,
                    "the SDK suspended waiting on nothing",
                ));
            }
            let future = suspension
                .awaiting_on
                .as_ref()
                .map(|f| Bytes::from(prost::Message::encode_to_vec(f)));
            send(AttemptEvent::Suspended {
                completions,
                signals,
                named_signals,
                future,
            });
            Ok(Some(AttemptOutcome::Suspended))
        }
        Message::End(_) => {
            send(AttemptEvent::End);
            Ok(Some(AttemptOutcome::Ended))
        }
        Message::Error(error) => {
            let behavior = match error.behavior {
                1 => ErrorBehavior::Pause,
                2 => ErrorBehavior::Fail,
                _ => ErrorBehavior::Retry,
            };
            let mut message = error.message;
            if let Some(name) = error.related_command_name.filter(|n| !n.is_empty()) {
                message = format!("{message} (in command '{name}')");
            }
            Err(AttemptError {
                code: u16::try_from(error.code).unwrap_or(codes::INTERNAL),
                message,
                retry_after: error.next_retry_delay.map(Duration::from_millis),
                behavior,
            })
        }
        other => Err(AttemptError::new(
            codes::PROTOCOL_VIOLATION,
            format!("unexpected message from the SDK: {}", other.message_type().name()),
        )),
    }
}

/// Every completion id and signal a future tree waits on. Resuming on any of them is safe
/// (at worst one extra replay); waiting for the exact combinator is not needed for liveness.
fn flatten_future(
    future: &proto::Future,
    completions: &mut Vec<u32>,
    signals: &mut Vec<u32>,
    named_signals: &mut Vec<String>,
    depth: usize,
) {
    if depth > 1000 {
        return;
    }
    completions.extend(&future.waiting_completions);
    signals.extend(&future.waiting_signals);
    named_signals.extend(future.waiting_named_signals.iter().cloned());
    for nested in &future.nested_futures {
        flatten_future(nested, completions, signals, named_signals, depth + 1);
    }
}
