//! Real SDK services invoked through the ingress of one node: services, virtual objects,
//! sleep, `ctx.run`, calls and sends, terminal errors, retries, and the ingress's answers to
//! bad requests.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use restate_cluster_tests::servers::SdkService;
use restate_cluster_tests::{NodeSpec, Ports, TestDir, TestNode, example_config};
use serde_json::{Value, json};

pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP answer: status, headers we check, body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub(crate) struct Client {
    http: reqwest::Client,
    pub ingress: String,
    pub admin: String,
}

impl Client {
    pub fn new(node: &TestNode) -> Self {
        Self::for_urls(node.ingress_url(), node.admin_url())
    }

    /// A client of a node not started by the harness (`http://host:port/` URLs).
    pub fn for_urls(ingress: String, admin: String) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(CALL_TIMEOUT)
                .build()
                .unwrap_or_default(),
            ingress,
            admin,
        }
    }

    pub async fn request(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> anyhow::Result<Answer> {
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        Ok(Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await?,
        })
    }

    /// POST to the ingress, e.g. `call("Greeter/greet", json!("Sam"))`.
    pub async fn call(&self, path: &str, body: Value) -> anyhow::Result<Answer> {
        self.request(reqwest::Method::POST, &format!("{}{path}", self.ingress), Some(body))
            .await
    }

    /// POST to the ingress with an `idempotency-key` header.
    pub async fn call_keyed(&self, path: &str, key: &str, body: Value) -> anyhow::Result<Answer> {
        let response = self
            .http
            .post(format!("{}{path}", self.ingress))
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await?;
        Ok(Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await?,
        })
    }

    /// `GET` on the ingress, e.g. `ingress_get("restate/invocation/{id}/output")`.
    pub async fn ingress_get(&self, path: &str) -> anyhow::Result<Answer> {
        self.request(reqwest::Method::GET, &format!("{}{path}", self.ingress), None)
            .await
    }

    /// `PATCH` on the admin API without a body, e.g. `admin_patch("invocations/{id}/kill")`.
    pub async fn admin_patch(&self, path: &str) -> anyhow::Result<Answer> {
        self.request(reqwest::Method::PATCH, &format!("{}{path}", self.admin), None)
            .await
    }

    /// `POST /query` as JSON: the rows.
    pub async fn query(&self, sql: &str) -> anyhow::Result<Vec<Value>> {
        let response = self
            .http
            .post(format!("{}query", self.admin))
            .header("accept", "application/json")
            .json(&serde_json::json!({ "query": sql }))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        anyhow::ensure!(status.is_success(), "query answered {status}: {body}");
        Ok(body["rows"].as_array().cloned().unwrap_or_default())
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// POST without a body (handlers that take no input).
    pub async fn post_empty(&self, path: &str) -> anyhow::Result<Answer> {
        self.request(reqwest::Method::POST, &format!("{}{path}", self.ingress), None)
            .await
    }

    /// Registers a deployment, retrying while the node is still starting.
    pub async fn register(&self, body: Value) -> anyhow::Result<Value> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let answer = self
                .request(
                    reqwest::Method::POST,
                    &format!("{}deployments", self.admin),
                    Some(body.clone()),
                )
                .await?;
            if answer.status == 201 || answer.status == 200 {
                let registered = answer.json();
                // A test service that answers discovery but is not the one started for this
                // test (another process on its port) shows here, not as a 404 later.
                let names: Vec<&str> = registered["services"]
                    .as_array()
                    .map(|s| s.iter().filter_map(|s| s["name"].as_str()).collect())
                    .unwrap_or_default();
                report_registration(&body, &names);
                return Ok(registered);
            }
            anyhow::ensure!(
                answer.status == 503 && Instant::now() < deadline,
                "registration answered {}: {}",
                answer.status,
                answer.body
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `GET /deployments/{id}` of a registration's answer.
    pub async fn deployment(&self, registered: &Value) -> anyhow::Result<Value> {
        let id = registered["id"].as_str().unwrap_or_default();
        Ok(self
            .request(reqwest::Method::GET, &format!("{}deployments/{id}", self.admin), None)
            .await?
            .json())
    }

    /// Waits until `path` answers 200 with `expected` (e.g. after a one-way send).
    pub async fn eventually(&self, path: &str, body: Value, expected: Value) -> anyhow::Result<()> {
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let answer = self.call(path, body.clone()).await?;
            if answer.status == 200 && answer.json() == expected {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{path} answered {} {} instead of {expected}",
                answer.status,
                answer.body
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Prints what a registration discovered (shown with a failing test's output).
fn report_registration(request: &Value, services: &[&str]) {
    println!("registered {request}: services {services:?}");
}

/// Adds 1 to `Counter/{key}` through `client` until `stop`; returns (sent, acknowledged):
/// acknowledged adds were answered 200, sent ones may have been stored (acknowledged, or
/// answered with an error that leaves it open). A 503 or 429 says nothing was stored, and a
/// refused connection sends nothing. `progress` counts the acknowledged ones as they come.
pub(crate) async fn add_until_stopped(
    client: &Client,
    key: &str,
    stop: &AtomicBool,
    progress: Option<&AtomicU64>,
) -> (u64, u64) {
    let (mut sent, mut acknowledged) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        match client.call(&format!("Counter/{key}/add"), json!(1)).await {
            Ok(answer) if answer.status == 200 => {
                sent += 1;
                acknowledged += 1;
                if let Some(progress) = progress {
                    progress.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(answer) if answer.status == 503 || answer.status == 429 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(_) => sent += 1,
            Err(error) if error.downcast_ref::<reqwest::Error>().is_some_and(|e| e.is_connect()) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => sent += 1,
        }
    }
    (sent, acknowledged)
}

/// Lines of a side-effect file, counted.
pub(crate) fn side_effects(path: &Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        *counts.entry(line.to_owned()).or_default() += 1;
    }
    counts
}

pub(crate) async fn wait_for_side_effect(path: &Path, tag: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !side_effects(path).contains_key(tag) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "side effect '{tag}' did not happen within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// 200 concurrent `Counter/add(1)` over 10 keys; every key's total must be exactly 20.
pub(crate) async fn concurrent_counter_adds(node: &TestNode, client: &Client) -> anyhow::Result<()> {
    let mut adds = tokio::task::JoinSet::new();
    for i in 0..200 {
        let client = Client::new(node);
        adds.spawn(async move { client.call(&format!("Counter/key-{}/add", i % 10), json!(1)).await });
    }
    while let Some(result) = adds.join_next().await {
        let answer = result??;
        anyhow::ensure!(answer.status == 200, "an add failed: {}", answer.body);
    }
    for key in 0..10 {
        let total = client.post_empty(&format!("Counter/key-{key}/get")).await?;
        anyhow::ensure!(total.json() == json!(20), "key-{key} holds {}, not 20", total.body);
    }
    Ok(())
}

/// One node with `examples/typescript/scenarios.js` registered. Fields drop in order: the
/// service stops before the node, the directory goes last.
pub(crate) struct ScenarioNode {
    pub client: Client,
    pub _service: SdkService,
    pub _node: TestNode,
    pub _dir: TestDir,
}

pub(crate) async fn scenario_node(env: &[(&str, &str)]) -> anyhow::Result<ScenarioNode> {
    let dir = TestDir::new();
    let node = start_node(&dir, env).await?;
    let service = SdkService::typescript_scenarios(&dir.path().join("side-effects.txt"));
    let client = Client::new(&node);
    client.register(json!({"uri": service.uri})).await?;
    Ok(ScenarioNode {
        client,
        _service: service,
        _node: node,
        _dir: dir,
    })
}

pub(crate) async fn start_node(dir: &TestDir, env: &[(&str, &str)]) -> anyhow::Result<TestNode> {
    let mut spec = NodeSpec::new("node-1").config_file(example_config("single-node.toml"));
    for (key, value) in env {
        spec = spec.env(key, *value);
    }
    let mut node = TestNode::start(dir.path(), spec, Ports::free());
    node.wait_alive(START_TIMEOUT).await?;
    Ok(node)
}

#[tokio::test]
async fn typescript_sdk_services_objects_sleep_run_calls_and_errors() -> anyhow::Result<()> {
    typescript_scenarios(&[]).await
}

/// The same over service protocol V7 (futures, run-completion acks, suspension trees).
#[tokio::test]
async fn typescript_sdk_over_protocol_v7() -> anyhow::Result<()> {
    typescript_scenarios(&[("RESTATE_EXPERIMENTAL_ENABLE_PROTOCOL_V7", "true")]).await
}

async fn typescript_scenarios(env: &[(&str, &str)]) -> anyhow::Result<()> {
    let dir = TestDir::new();
    let node = start_node(&dir, env).await?;
    let effects = dir.path().join("side-effects.txt");
    let service = SdkService::typescript_scenarios(&effects);
    let client = Client::new(&node);
    client.register(json!({"uri": service.uri})).await?;

    // A service.
    let greet = client.call("Greeter/greet", json!("Sam")).await?;
    assert_eq!(
        (greet.status, greet.body.as_str()),
        (200, "\"Hello Sam!\""),
        "{}",
        node.log()
    );
    assert_eq!(greet.header("content-type"), Some("application/json"));
    assert!(
        greet
            .header("x-restate-id")
            .is_some_and(|id| id.starts_with("inv_1") && id.len() == 38)
    );

    // A virtual object under concurrency: 200 adds over 10 keys, each total exact.
    concurrent_counter_adds(&node, &client).await?;
    let keys = client.call("Counter/key-0/keys", json!(null)).await?;
    assert_eq!(keys.json(), json!(["total"]));
    let reset = client.call("Counter/key-0/reset", json!(null)).await?;
    assert_eq!(reset.status, 200);
    assert_eq!(client.call("Counter/key-0/get", json!(null)).await?.json(), json!(0));

    // A durable sleep.
    let started = Instant::now();
    let slept = client.call("Sleeper/sleep", json!(1000)).await?;
    assert_eq!(slept.json(), json!("slept"));
    assert!(started.elapsed() >= Duration::from_secs(1));

    // ctx.run: the side effect happens once per invocation.
    for tag in ["run-1", "run-2"] {
        let ran = client.call("Runner/sideEffect", json!(tag)).await?;
        assert_eq!(ran.json(), json!(format!("ran {tag}")));
    }
    let counts = side_effects(&effects);
    assert_eq!((counts.get("run-1"), counts.get("run-2")), (Some(&1), Some(&1)));

    // A call and a one-way send between services (the callee keys land on other partitions).
    let called = client.call("Caller/callGreet", json!("Bob")).await?;
    assert_eq!(called.json(), json!("called: Hello Bob!"), "{}", called.body);
    let sent = client.call("Caller/sendAdd", json!({"key": "bob", "delta": 2})).await?;
    assert_eq!(sent.json(), json!("sent"));
    client.eventually("Counter/bob/get", json!(null), json!(2)).await?;
    let total = client.call("Caller/callAdd", json!({"key": "bob", "delta": 3})).await?;
    assert_eq!(total.json(), json!(5));

    // A terminal error reaches the caller with its code.
    let failed = client.call("Failing/terminal", json!("boom")).await?;
    assert_eq!(failed.status, 400, "{}", failed.body);
    assert_eq!(
        failed.json(),
        json!({"code": 400, "message": "boom", "source": "invocation"})
    );
    assert_eq!(failed.header("x-restate-error-source"), Some("invocation"));

    // Two failed attempts, retried with backoff, then success; the failures are logged.
    let retried = client.call("Failing/failTwice", json!("k1")).await?;
    assert_eq!(retried.json(), json!("succeeded after 3 attempts"));
    assert!(
        node.log().contains("attempt 2 failed"),
        "the retries are not visible in the log"
    );

    // One-way sends, immediate and delayed.
    let accepted = client.call("Runner/sideEffect/send", json!("sent-1")).await?;
    assert_eq!(accepted.status, 202);
    let id = accepted.json()["invocationId"].as_str().unwrap_or_default().to_owned();
    assert_eq!(accepted.header("x-restate-id"), Some(id.as_str()));
    assert_eq!(accepted.json()["status"], json!("Accepted"));
    wait_for_side_effect(&effects, "sent-1", CALL_TIMEOUT).await?;
    let sent_at = Instant::now();
    let delayed = client
        .call("Runner/sideEffect/send?delay=1s", json!("delayed-1"))
        .await?;
    assert_eq!(delayed.status, 202);
    assert!(delayed.json()["executionTime"].is_string(), "{}", delayed.body);
    wait_for_side_effect(&effects, "delayed-1", CALL_TIMEOUT).await?;
    assert!(sent_at.elapsed() >= Duration::from_millis(900));

    // Operators see the partitions and the invocation counters.
    let status = restate_cluster_tests::restatectl_json(&["--address", &node.fabric_url(), "status", "--json"]);
    let partitions = status["partitions"].as_array().cloned().unwrap_or_default();
    assert_eq!(partitions.len(), 24, "{status}");
    assert!(partitions.iter().all(|p| p["mode"] == json!("Leader")), "{status}");
    assert!(
        partitions.iter().any(|p| p["applied_lsn"].as_u64() > Some(1)),
        "{status}"
    );
    // What a replica applied becomes durable (flushed) within seconds once it is idle, and a
    // durable LSN is never ahead of the applied one.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = restate_cluster_tests::restatectl_json(&["--address", &node.fabric_url(), "status", "--json"]);
        let partitions = status["partitions"].as_array().cloned().unwrap_or_default();
        assert!(
            partitions
                .iter()
                .all(|p| p["durable_lsn"].as_u64() <= p["applied_lsn"].as_u64()),
            "{status}"
        );
        if partitions.iter().all(|p| p["durable_lsn"] == p["applied_lsn"]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the applied records never became durable: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = client
        .request(reqwest::Method::GET, &format!("{}metrics", node.fabric_url()), None)
        .await?
        .body;
    assert!(
        metrics.contains("restate_invocations_total{outcome=\"succeeded\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("restate_invocations_total{outcome=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("restate_invocation_attempts_total{outcome=\"failed\"} 2"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn the_ingress_refuses_bad_requests_with_their_reason() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let node = start_node(&dir, &[("RESTATE_INGRESS__REQUEST_SIZE_LIMIT", "1KiB")]).await?;
    let effects = dir.path().join("side-effects.txt");
    let service = SdkService::typescript_scenarios(&effects);
    let client = Client::new(&node);
    client.register(json!({"uri": service.uri})).await?;

    let expect = |answer: Answer, status: u16, message: &str| {
        assert_eq!(answer.status, status, "{}", answer.body);
        assert_eq!(answer.header("x-restate-error-source"), Some("ingress"));
        let body = answer.json();
        assert_eq!(body["source"], json!("ingress"));
        assert!(
            body["message"].as_str().unwrap_or_default().contains(message),
            "'{message}' not in {body}"
        );
    };
    expect(
        client.call("Nosuch/greet", json!("a")).await?,
        404,
        "service 'Nosuch' not found",
    );
    expect(
        client.call("Greeter/nosuch", json!("a")).await?,
        404,
        "the service 'Greeter' exists, but the handler 'nosuch' was not found",
    );
    expect(client.call("Greeter/k/greet", json!("a")).await?, 400, "bad path");
    expect(client.call("Counter/add", json!(1)).await?, 400, "bad path");
    expect(client.call("Greeter/greet/other", json!(1)).await?, 400, "bad path");
    let put = client
        .request(
            reqwest::Method::PUT,
            &format!("{}Greeter/greet", client.ingress),
            Some(json!("a")),
        )
        .await?;
    expect(put, 405, "use GET or POST");
    let big = "x".repeat(2048);
    expect(
        client.call("Greeter/greet", json!(big)).await?,
        413,
        "request-size-limit",
    );
    expect(
        client.call("Greeter/greet?delay=1s", json!("a")).await?,
        400,
        "only allowed on /send",
    );
    expect(
        client.call("Greeter/greet/send?delay=abc", json!("a")).await?,
        400,
        "bad delay query parameter",
    );
    expect(
        client.call("Greeter/greet/send?delay=3000000d", json!("a")).await?,
        400,
        "at most 36500 days",
    );
    let private = client
        .request(
            reqwest::Method::PATCH,
            &format!("{}services/Greeter", client.admin),
            Some(json!({"public": false})),
        )
        .await?;
    assert_eq!(private.status, 200, "{}", private.body);
    // The ingress sees the change within its schema refresh interval.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = client.call("Greeter/greet", json!("a")).await?;
        if answer.status == 400 {
            expect(answer, 400, "the invoked service is not public");
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the service stayed public: {}", answer.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing above created an invocation.
    assert!(side_effects(&effects).is_empty());
    Ok(())
}

#[tokio::test]
async fn python_sdk_over_h2c_and_http_11() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let node = start_node(&dir, &[]).await?;
    let client = Client::new(&node);
    let h2 = SdkService::python();
    let registered = client.register(json!({"uri": h2.uri})).await?;
    let shown = client.deployment(&registered).await?;
    assert_eq!(shown["http_version"], json!("HTTP/2.0"), "{shown}");
    let greet = client.call("Greeter/greet", json!("Py")).await?;
    assert_eq!(greet.status, 200, "{}\n{}", greet.body, node.log());
    assert!(greet.body.contains("Py"), "{}", greet.body);
    let add = client.call("Counter/py/add", json!(4)).await?;
    assert_eq!(add.json(), json!(4), "{}", add.body);

    // The same services over HTTP/1.1 (request/response: every await suspends and resumes).
    let h1 = SdkService::python();
    let registered = client
        .register(json!({"uri": h1.uri, "use_http_11": true, "force": true}))
        .await?;
    let shown = client.deployment(&registered).await?;
    assert_eq!(shown["http_version"], json!("HTTP/1.1"), "{shown}");
    assert_eq!(shown["protocol_type"], json!("RequestResponse"), "{shown}");
    drop(h2);
    let add = client.call("Counter/py/add", json!(3)).await?;
    assert_eq!(add.json(), json!(7), "{}\n{}", add.body, node.log());
    Ok(())
}

#[tokio::test]
async fn a_deployment_that_is_down_delays_invocations_without_failing_them() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let mut node = start_node(&dir, &[]).await?;
    let effects = dir.path().join("side-effects.txt");
    let mut service = SdkService::typescript_scenarios(&effects);
    let client = Client::new(&node);
    client.register(json!({"uri": service.uri})).await?;
    service.kill();
    let accepted = client.call("Runner/sideEffect/send", json!("while-down")).await?;
    assert_eq!(accepted.status, 202);
    // Attempts fail and are retried; the node stays healthy meanwhile.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !node.log().contains("invocation attempt failed") {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no failed attempt was logged:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.wait_alive(Duration::from_secs(5)).await?;
    assert!(side_effects(&effects).is_empty());
    service.restart();
    wait_for_side_effect(&effects, "while-down", Duration::from_secs(30)).await?;
    assert_eq!(side_effects(&effects).get("while-down"), Some(&1));
    Ok(())
}

#[tokio::test]
async fn an_idle_invocation_suspends_after_the_inactivity_timeout_and_resumes() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let node = start_node(&dir, &[("RESTATE_WORKER__INVOKER__INACTIVITY_TIMEOUT", "300ms")]).await?;
    let effects = dir.path().join("side-effects.txt");
    let service = SdkService::typescript_scenarios(&effects);
    let client = Client::new(&node);
    client.register(json!({"uri": service.uri})).await?;
    let slept = client.call("Sleeper/sleep", json!(2000)).await?;
    assert_eq!(slept.json(), json!("slept"), "{}", slept.body);
    // The first attempt suspended once its stream was idle; the timer resumed it in a second.
    let metrics = client
        .request(reqwest::Method::GET, &format!("{}metrics", node.fabric_url()), None)
        .await?
        .body;
    assert!(
        metrics.contains("restate_invocation_attempts_total{outcome=\"started\"} 2"),
        "{metrics}"
    );
    assert!(!metrics.contains("outcome=\"failed\""), "{metrics}");
    Ok(())
}
