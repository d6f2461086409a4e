//! The scenario classes of the upstream SDK conformance suite (restatedev/e2e `sdk-tests`),
//! ported to our harness: one node, the TypeScript services of
//! `examples/typescript/conformance.js` (all named `Conf*`), driven through the ingress and the
//! admin API. Each test is named after the upstream class and checks what that class checks;
//! The table in README.md ("SDK conformance scenarios") lists the classes and their results.

use std::future::Future;
use std::time::{Duration, Instant};

use restate_cluster_tests::servers::SdkService;
use restate_cluster_tests::{TestDir, TestNode};
use serde_json::{Value, json};

use crate::invocations::{Answer, Client, start_node};

/// How long a test waits for something that should happen soon.
const WAIT: Duration = Duration::from_secs(30);
/// One partition, so every call, answer and signal between invocations stays inside it and is
/// applied with the record that caused it; idle attempts suspend at once, so every await
/// replays the journal (upstream's `singleThreadSinglePartition` and `alwaysSuspending` suites).
const ONE_PARTITION_ALWAYS_SUSPENDING: &[(&str, &str)] = &[
    ("RESTATE_DEFAULT_NUM_PARTITIONS", "1"),
    ("RESTATE_WORKER__INVOKER__INACTIVITY_TIMEOUT", "0s"),
];

/// A node with the conformance services registered. Fields drop in order: the service stops
/// before the node, the directory goes last.
struct Setup {
    client: Client,
    _service: SdkService,
    node: TestNode,
    _dir: TestDir,
}

async fn setup(env: &[(&str, &str)]) -> anyhow::Result<Setup> {
    let dir = TestDir::new();
    let node = start_node(&dir, env).await?;
    let service = SdkService::typescript_conformance();
    let client = Client::new(&node);
    client.register(json!({"uri": service.uri})).await?;
    Ok(Setup {
        client,
        _service: service,
        node,
        _dir: dir,
    })
}

/// [`setup`] with a test's own settings and those of the configuration it runs in.
async fn setup_with(env: &[(&str, &str)], variant: &[(&str, &str)]) -> anyhow::Result<Setup> {
    let mut all = env.to_vec();
    all.extend_from_slice(variant);
    setup(&all).await
}

/// `{path}/send` with an idempotency key: the new invocation's id.
async fn send_keyed(client: &Client, path: &str, key: &str, body: Value) -> anyhow::Result<String> {
    let answer = client.call_keyed(&format!("{path}/send"), key, body).await?;
    anyhow::ensure!(
        answer.status == 202,
        "{path}/send answered {}: {}",
        answer.status,
        answer.body
    );
    Ok(answer.json()["invocationId"].as_str().unwrap_or_default().to_owned())
}

/// One POST that must answer within `timeout`; `None` when it did not (e.g. the object is
/// still locked).
async fn call_within(client: &Client, path: &str, body: Value, timeout: Duration) -> anyhow::Result<Option<Answer>> {
    let sent = client
        .http()
        .post(format!("{}{path}", client.ingress))
        .timeout(timeout)
        .json(&body)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(error) if error.is_timeout() => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    match response.text().await {
        Ok(body) => Ok(Some(Answer { status, headers, body })),
        Err(error) if error.is_timeout() => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// Repeats `check` until it answers true (errors end the wait at once).
async fn wait_until<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if check().await? {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `value` as JSON bytes, the way the proxy carries a message (an array of byte values).
fn message(value: &Value) -> Value {
    json!(serde_json::to_vec(value).unwrap_or_default())
}

/// The JSON a proxied call answered (the proxy returns the callee's bytes as an array).
fn unbytes(answer: &Answer) -> Value {
    let bytes: Vec<u8> = serde_json::from_value(answer.json()).unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// A `ConfProxy` request for `service[/key]/handler(body)`.
fn proxy_request(service: &str, key: Option<&str>, handler: &str, body: &Value) -> Value {
    json!({
        "serviceName": service,
        "virtualObjectKey": key,
        "handlerName": handler,
        "message": message(body),
    })
}

/// A failure answered by the ingress: an error status and `message` in its JSON body.
fn assert_failed(answer: &Answer, message: &str) {
    assert!(
        answer.status >= 400,
        "expected a failure, got {}: {}",
        answer.status,
        answer.body
    );
    let text = answer.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(text.contains(message), "'{message}' not in {}", answer.body);
}

/// Percent-encodes a path segment (object keys may be any UTF-8).
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

mod cancel_kill_proxy;
mod determinism_ordering_combinators;
mod payloads_attach;
mod state_sleep_errors;
