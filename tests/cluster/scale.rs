//! Load that used to grow without bound or stall: a fan-out of 50 000 one-way calls (50 000
//! outbox messages), an inbox of 50 000 calls to one key, thousands of `attach` pollers before
//! a 16 MiB result, 10 000 concurrent requests and a query that would need 100 GB. Each request
//! completes or gets a clear error, the node stays up, and its memory stays bounded. Times and
//! peak RSS are printed (not asserted: `benches/scale.sh` measures them).

use std::time::{Duration, Instant};

use restate_cluster_tests::servers::SdkService;
use restate_cluster_tests::{TestDir, TestNode};
use serde_json::{Value, json};

use crate::invocations::{Client, start_node};

/// Calls `path` allowing it `timeout` (a handler that does a lot before it answers).
async fn call_slow(client: &Client, path: &str, body: Value, timeout: Duration) -> anyhow::Result<u16> {
    let response = client
        .http()
        .post(format!("{}{path}", client.ingress))
        .json(&body)
        .timeout(timeout)
        .send()
        .await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    anyhow::ensure!(status == 200, "{path} answered {status}: {text}");
    Ok(status)
}

/// The node's peak resident memory so far (VmHWM), in MiB.
fn peak_rss_mib(node: &TestNode) -> u64 {
    let Some(pid) = node.pid() else { return 0 };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await? {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

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

/// A fan-out of 5 000 one-way calls to 5 000 keys: up to `concurrent-invocations-limit` (1 000)
/// attempts run at once on one HTTP/2 connection to the deployment, each receiving the SDK's
/// small frames. Every call runs on its first attempt: a connection closed for too many unread
/// small frames used to fail a thousand attempts at a time and turn the fan-out into retries.
#[tokio::test]
async fn a_fan_out_to_five_thousand_keys_runs_every_call_on_its_first_attempt() -> anyhow::Result<()> {
    const KEYS: usize = 5_000;
    let s = setup(&[]).await?;
    let client = &s.client;
    let started = Instant::now();
    let fan_out = json!({"prefix": "spread", "count": KEYS, "keys": KEYS});
    call_slow(client, "ConfProxy/fanOut", fan_out, Duration::from_secs(300)).await?;
    let done = "SELECT count(*) AS n FROM state WHERE service_name = 'ConfCounter' AND service_key LIKE 'spread-%'";
    wait_until("every call ran", Duration::from_secs(600), || async {
        let rows = client.query(done).await?;
        anyhow::Ok(rows.first().and_then(|r| r["n"].as_u64()) == Some(KEYS as u64))
    })
    .await?;
    let failed = s.node.log().matches("invocation attempt failed").count();
    println!(
        "{KEYS} calls to {KEYS} keys ran in {:.1?}; failed attempts: {failed}; peak RSS {} MiB",
        started.elapsed(),
        peak_rss_mib(&s.node)
    );
    assert_eq!(failed, 0, "{}", restate_cluster_tests::tail(&s.node.log(), 20));
    Ok(())
}

const MESSAGES: usize = 50_000;

/// A fan-out of 50 000 one-way calls to one object key whose lock is held: all of them pass
/// through the sender's outbox, then wait in the key's inbox. The node answers other calls
/// meanwhile, its memory stays bounded, and when the holder ends the next in the inbox runs
/// (taking the head of a 50 000-entry inbox). `benches/scale.sh` times the full drains.
#[tokio::test]
async fn fifty_thousand_calls_through_an_outbox_into_one_inbox() -> anyhow::Result<()> {
    let s = setup(&[]).await?;
    let client = &s.client;
    let holder = client.call("ConfBlocker/q-0/run/send", json!(null)).await?;
    assert_eq!(holder.status, 202, "{}", holder.body);
    let holder = holder.json()["invocationId"].as_str().unwrap_or_default().to_owned();
    wait_until("the holder holds its awakeable", Duration::from_secs(30), || async {
        anyhow::Ok(client.post_empty("ConfBlocker/q-0/getAwakeable").await?.json() != json!(""))
    })
    .await?;

    let started = Instant::now();
    let fan_out = json!({"prefix": "q", "count": MESSAGES, "keys": 1, "blocker": true});
    call_slow(client, "ConfProxy/fanOut", fan_out, Duration::from_secs(600)).await?;
    let sent = started.elapsed();
    let inboxed = "SELECT count(*) AS n FROM sys_inbox WHERE service_name = 'ConfBlocker' AND service_key = 'q-0'";
    wait_until("every call waiting in the inbox", Duration::from_secs(600), || async {
        let rows = client.query(inboxed).await?;
        anyhow::Ok(rows.first().and_then(|r| r["n"].as_u64()) == Some(MESSAGES as u64))
    })
    .await?;
    let queued = started.elapsed();
    // Other work goes on meanwhile.
    let echo = client.call("ConfUtils/echo", json!("still here")).await?;
    assert_eq!((echo.status, echo.json()), (200, json!("still here")));

    // The holder ends: the first of the 50 000 takes the key.
    let killed = client.admin_patch(&format!("invocations/{holder}/kill")).await?;
    assert_eq!(killed.status, 200, "{}", killed.body);
    wait_until("the next in the inbox running", Duration::from_secs(60), || async {
        let rows = client.query(inboxed).await?;
        let left = rows.first().and_then(|r| r["n"].as_u64());
        let holding = client.post_empty("ConfBlocker/q-0/getAwakeable").await?.json() != json!("");
        anyhow::Ok(left == Some(MESSAGES as u64 - 1) && holding)
    })
    .await?;
    let peak = peak_rss_mib(&s.node);
    println!(
        "{MESSAGES} one-way calls: sent in {:.1}s, all in the inbox after {:.1}s; peak RSS {peak} MiB",
        sent.as_secs_f64(),
        queued.as_secs_f64()
    );
    assert!(peak < 1024, "peak RSS {peak} MiB");
    Ok(())
}

/// A result of about 16 MiB (a JSON string).
fn large_value() -> Value {
    json!("x".repeat(16 << 20))
}

#[tokio::test]
async fn thousands_of_attach_pollers_then_a_large_result() -> anyhow::Result<()> {
    let s = setup(&[]).await?;
    let client = &s.client;
    let sent = client.call("ConfBlocker/big/run/send", json!(null)).await?;
    assert_eq!(sent.status, 202, "{}", sent.body);
    let id = sent.json()["invocationId"].as_str().unwrap_or_default().to_owned();
    wait_until("the blocker holds its awakeable", Duration::from_secs(30), || async {
        anyhow::Ok(client.post_empty("ConfBlocker/big/getAwakeable").await?.json() != json!(""))
    })
    .await?;

    // Pollers that give up at once (a client polling with a short timeout) leave nothing
    // behind; ones that stay are capped, the oldest told to attach again.
    let attach = format!("{}restate/invocation/{id}/attach", client.ingress);
    let short = reqwest::Client::builder().timeout(Duration::from_millis(50)).build()?;
    for _ in 0..10 {
        let mut pollers = tokio::task::JoinSet::new();
        for _ in 0..300 {
            let (short, url) = (short.clone(), attach.clone());
            pollers.spawn(async move { short.get(url).send().await.map(|r| r.status().as_u16()).ok() });
        }
        while let Some(answered) = pollers.join_next().await {
            // Most give up first; some are told to attach again (too many wait at once).
            let answered = answered?;
            assert!(matches!(answered, None | Some(429)), "a poller got {answered:?}");
        }
    }
    let mut staying = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let (http, url) = (client.http().clone(), attach.clone());
        staying.spawn(async move {
            let response = http.get(url).timeout(Duration::from_secs(120)).send().await?;
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let body = response.bytes().await?;
            anyhow::Ok((status, retry_after, body.len()))
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let resolved = client.call("ConfBlocker/big/resolveAwakeable", large_value()).await?;
    assert_eq!(resolved.status, 200, "{}", resolved.body);
    let (mut answered, mut evicted) = (0, 0);
    while let Some(result) = staying.join_next().await {
        match result?? {
            (200, _, bytes) => {
                assert!(bytes > 16 << 20, "the whole result: {bytes} bytes");
                answered += 1;
            }
            (429, true, _) => evicted += 1,
            other => panic!("an attach answered {other:?}"),
        }
    }
    assert!(answered >= 100, "{answered} answered, {evicted} told to attach again");
    // The node is still up and answers the same result to a new attach.
    let again = client.ingress_get(&format!("restate/invocation/{id}/attach")).await?;
    assert_eq!(again.status, 200);
    assert_eq!(again.body.len(), (16 << 20) + 2);
    let peak = peak_rss_mib(&s.node);
    println!(
        "3000 dropped and 300 waiting attaches, a 16 MiB result: {answered} answered, {evicted} evicted, peak RSS {peak} MiB"
    );
    assert!(peak < 2048, "peak RSS {peak} MiB");
    Ok(())
}

#[tokio::test]
async fn ten_thousand_concurrent_requests_complete_or_are_refused_clearly() -> anyhow::Result<()> {
    let s = setup(&[("RESTATE_INGRESS__CONCURRENT_API_REQUESTS_LIMIT", "5000")]).await?;
    let client = &s.client;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .pool_max_idle_per_host(0)
        .build()?;
    let started = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..10_000 {
        let (http, url) = (http.clone(), format!("{}ConfUtils/echo", client.ingress));
        requests.spawn(async move {
            let response = http.post(url).json(&json!(format!("hello-{i}"))).send().await?;
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let body = response.text().await?;
            anyhow::Ok((i, status, retry_after, body))
        });
    }
    let (mut ok, mut shed) = (0, 0);
    while let Some(result) = requests.join_next().await {
        let (i, status, retry_after, body) = result??;
        match status {
            200 => {
                assert_eq!(body, format!("\"hello-{i}\""));
                ok += 1;
            }
            429 | 503 => {
                assert!(retry_after, "{status} without Retry-After: {body}");
                assert!(body.contains("\"message\""), "{body}");
                shed += 1;
            }
            other => panic!("a request answered {other}: {body}"),
        }
    }
    assert!(ok > 0 && ok + shed == 10_000);
    let health = client
        .http()
        .get(format!("{}restate/health", client.ingress))
        .send()
        .await?;
    assert_eq!(health.status(), 200);
    println!(
        "10000 concurrent calls: {ok} completed, {shed} refused with Retry-After in {:.1}s; peak RSS {} MiB",
        started.elapsed().as_secs_f64(),
        peak_rss_mib(&s.node)
    );
    Ok(())
}

#[tokio::test]
async fn a_query_that_would_need_100_gb_fails_and_the_node_stays_healthy() -> anyhow::Result<()> {
    let s = setup(&[]).await?;
    let client = &s.client;
    let rows: Vec<String> = (1..=1000).map(|i| format!("({i})")).collect();
    let thousand = rows.join(",");
    let hundred = rows[..100].join(",");
    let queries = [
        // 100 000 rows of 1 MB each.
        format!(
            "SELECT length(string_agg(repeat('x', 1000000), ',')) AS l FROM (VALUES {thousand}) AS a(x), (VALUES {hundred}) AS b(x)"
        ),
        // Rows from nothing.
        "SELECT array_agg(value) FROM generate_series(1, 20000000000)".to_owned(),
        // The sort of 100 000 × 1 000 × 1 000 rows.
        format!(
            "SELECT a.x FROM (VALUES {thousand}) AS a(x), (VALUES {thousand}) AS b(x), (VALUES {thousand}) AS c(x) ORDER BY a.x * b.x * c.x"
        ),
    ];
    for sql in &queries {
        let response = client
            .http()
            .post(format!("{}query", client.admin))
            .header("accept", "application/json")
            .json(&json!({"query": sql}))
            .timeout(Duration::from_secs(180))
            .send()
            .await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await?;
        assert!(status >= 400, "{status}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("memory-size") || message.contains("query-timeout") || message.contains("generate_series"),
            "{status}: {message}"
        );
    }
    // The node and its engine go on.
    let rows = client.query("SELECT count(*) AS n FROM sys_invocation").await?;
    assert_eq!(rows.len(), 1);
    let peak = peak_rss_mib(&s.node);
    println!("queries that would need 100 GB: refused; peak RSS {peak} MiB");
    assert!(peak < 3072, "peak RSS {peak} MiB");
    Ok(())
}
