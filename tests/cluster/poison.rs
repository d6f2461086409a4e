//! A partition that meets a record it cannot apply does not hang: it is marked failed with
//! the reason (status, metrics, health), callers get an error at once, a restart keeps it
//! there, and the operator's `restatectl partitions skip-record` gets it going again. Raw
//! fabric appends cannot reach a partition's log in the first place.

use std::time::{Duration, Instant};

use restate_cluster_tests::servers::SdkService;
use restate_cluster_tests::{MetadataHttp, TestDir, logs, restatectl, restatectl_json};
use restate_proto::bifrost::SequencerAppendRequest;
use restate_proto::bifrost::bifrost_svc_client::BifrostSvcClient;
use restate_types::metadata::{BIFROST_CONFIG_KEY, LogletParams, LogsConfiguration};
use serde_json::{Value, json};

use crate::invocations::{Client, START_TIMEOUT, start_node};

/// Puts `payload` into partition `log_id`'s log through the sequencer of its tail segment:
/// what a foreign or corrupt writer would leave there.
async fn inject(admin_url: &str, fabric_url: &str, log_id: u32, payload: Vec<u8>) -> anyhow::Result<()> {
    let (_, logs) = MetadataHttp::new()
        .get(admin_url, BIFROST_CONFIG_KEY)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no logs configuration"))?;
    let logs: LogsConfiguration = serde_json::from_slice(&logs)?;
    let segment = logs.logs[&log_id]
        .segments
        .last()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("log {log_id} has no segment"))?;
    let (loglet_id, sequencer_generation) = match segment.loglet {
        LogletParams::Local { loglet_id, .. } => (loglet_id, 0),
        LogletParams::Replicated(params) => (params.loglet_id, params.sequencer.generation),
    };
    let mut client = BifrostSvcClient::connect(fabric_url.to_owned()).await?;
    client
        .sequencer_append(SequencerAppendRequest {
            loglet_id,
            sequencer_generation,
            payloads: vec![payload],
        })
        .await?;
    Ok(())
}

/// Partition 0 as `restatectl status --json` shows it.
fn partition_zero(fabric_url: &str) -> Value {
    let status = restatectl_json(&["-s", fabric_url, "status", "--json"]);
    status["partitions"]
        .as_array()
        .and_then(|partitions| partitions.iter().find(|p| p["partition_id"] == 0).cloned())
        .unwrap_or(Value::Null)
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !check() {
        anyhow::ensure!(Instant::now() < deadline, "{what} did not happen within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[tokio::test]
async fn a_record_that_cannot_be_applied_fails_its_partition_until_an_operator_skips_it() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let mut node = start_node(&dir, &[("RESTATE_DEFAULT_NUM_PARTITIONS", "1")]).await?;
    let service = SdkService::typescript_scenarios(&dir.path().join("side-effects.txt"));
    let client = Client::new(&node);
    client.register(json!({"uri": service.uri})).await?;
    let before = client.call("Greeter/greet", json!("before")).await?;
    assert_eq!(before.status, 200, "{}", before.body);
    let before_id = before.header("x-restate-id").unwrap_or_default().to_owned();

    // Raw appends from the fabric port are refused for partition logs.
    let refused = logs::append(&node.fabric_url(), 0, vec![b"x".to_vec()])
        .await
        .expect_err("a raw append to a partition's log");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("log of partition 0"),
        "{}",
        refused.message()
    );

    // A call that waits (for its awakeable) when the partition fails.
    let waiting = {
        let (http, url) = (client.http().clone(), format!("{}Awaiter/awakeable", client.ingress));
        tokio::spawn(async move { http.post(url).json(&json!("in-flight")).send().await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    inject(&node.admin_url(), &node.fabric_url(), 0, b"\xffnot a record".to_vec()).await?;
    let fabric = node.fabric_url();
    wait_for("partition 0 failing", START_TIMEOUT, || {
        partition_zero(&fabric)["failure"].is_string()
    })
    .await?;
    let failure = partition_zero(&fabric)["failure"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(failure.contains("cannot be applied"), "{failure}");
    assert!(failure.contains("restatectl partitions skip-record 0"), "{failure}");
    let lsn: u64 = failure
        .split_whitespace()
        .nth(1)
        .and_then(|word| word.parse().ok())
        .unwrap_or_else(|| panic!("no LSN in: {failure}"));

    // The call that was stored before is not invited to be sent again: it will run once the
    // partition is back, and its result is one attach away.
    let waited = waiting.await??;
    assert_eq!(waited.status().as_u16(), 500);
    assert!(waited.headers().get("retry-after").is_none());
    let stored_id = waited
        .headers()
        .get("x-restate-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = waited.text().await?;
    assert!(body.contains("do not send it again"), "{body}");
    assert!(
        body.contains(&format!("/restate/invocation/{stored_id}/attach")),
        "{body}"
    );
    // Callers learn it at once instead of waiting.
    let started = Instant::now();
    let refused = client.call("Greeter/greet", json!("during")).await?;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.body.contains("partition 0 is failed"), "{}", refused.body);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // Metrics and the node's health say so too.
    let metrics = reqwest::get(format!("{}metrics", node.fabric_url()))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("restate_partition_failed{partition=\"0\"} 1"),
        "{metrics}"
    );
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let health: Value = reqwest::get(format!("{}health", node.fabric_url()))
            .await?
            .json()
            .await?;
        if health.to_string().contains("cannot be applied") {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the node's health does not show the failure: {health}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A restart meets the same record and stops there again.
    node.kill();
    node.restart();
    node.wait_alive(START_TIMEOUT).await?;
    let fabric = node.fabric_url();
    wait_for("partition 0 failing after the restart", START_TIMEOUT, || {
        partition_zero(&fabric)["failure"].is_string()
    })
    .await?;

    // The operator skips it; the partition applies on and serves again.
    let skipped = restatectl(&[
        "-s",
        &fabric,
        "partitions",
        "skip-record",
        "0",
        &lsn.to_string(),
        "--yes",
    ]);
    assert!(skipped.status.success(), "{}", String::from_utf8_lossy(&skipped.stderr));
    wait_for("partition 0 recovering", START_TIMEOUT, || {
        let partition = partition_zero(&fabric);
        partition["failure"].is_null() && partition["mode"] == "Leader"
    })
    .await?;
    let client = Client::new(&node);
    let after = client.call("Greeter/greet", json!("after")).await?;
    assert_eq!(after.status, 200, "{}", after.body);
    // Nothing acknowledged before the bad record was lost.
    let output = client
        .ingress_get(&format!("restate/invocation/{before_id}/output"))
        .await?;
    assert_eq!(output.status, 200, "{}", output.body);
    assert_eq!(output.body, before.body);
    Ok(())
}

/// A small file system of its own (tmpfs), unmounted when dropped.
struct SmallDisk {
    dir: TestDir,
}

impl SmallDisk {
    fn mount(size: &str) -> anyhow::Result<Self> {
        let dir = TestDir::new();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()?;
        anyhow::ensure!(
            mounted.status.success(),
            "cannot mount a tmpfs for the full-disk test (it needs root): {}",
            String::from_utf8_lossy(&mounted.stderr)
        );
        Ok(Self { dir })
    }

    /// Writes a file until the file system is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let chunk = vec![0u8; 1 << 20];
        if let Ok(mut file) = std::fs::File::create(&path) {
            while file.write_all(&chunk).is_ok() {}
            let _ = file.sync_all();
        }
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_fails_calls_clearly_and_the_node_recovers_when_space_returns() -> anyhow::Result<()> {
    let disk = SmallDisk::mount("400m")?;
    let mut spec = restate_cluster_tests::NodeSpec::new("node-1")
        .config_file(restate_cluster_tests::example_config("single-node.toml"));
    spec = spec.env("RESTATE_LOG_FILTER", "info");
    let mut node = restate_cluster_tests::TestNode::start(disk.dir.path(), spec, restate_cluster_tests::Ports::free());
    node.wait_alive(START_TIMEOUT).await?;
    let service = SdkService::typescript_conformance();
    let client = Client::new(&node);
    client.register(json!({"uri": service.uri})).await?;
    let ok = client.call("ConfUtils/echo", json!("before")).await?;
    assert_eq!(ok.status, 200, "{}", ok.body);

    let filler = disk.fill();
    let big = json!("x".repeat(200_000));
    let mut refused = None;
    // Calls stored just before the store failed: they run once space returns.
    let mut stored = Vec::new();
    for _ in 0..600 {
        let answer = client.call("ConfUtils/echo", big.clone()).await?;
        match answer.status {
            200 => assert_eq!(answer.json(), big),
            500 => {
                assert!(answer.body.contains("do not send it again"), "{}", answer.body);
                assert_eq!(answer.header("retry-after"), None);
                stored.push(answer.header("x-restate-id").unwrap_or_default().to_owned());
            }
            503 => {
                assert_eq!(answer.header("retry-after"), Some("1"), "{}", answer.body);
                refused = Some(answer.json()["message"].as_str().unwrap_or_default().to_owned());
                break;
            }
            other => panic!("a call answered {other}: {}", answer.body),
        }
    }
    let refused = refused.expect("the disk never filled up");
    assert!(refused.contains("No space left on device"), "{refused}");
    // The node is up and says why.
    let health: Value = reqwest::get(format!("{}health", node.fabric_url()))
        .await?
        .json()
        .await?;
    assert_eq!(health["status"], "ALIVE", "{health}");

    // Space returns: the store is written again and the partitions serve.
    std::fs::remove_file(filler)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = client.call("ConfUtils/echo", json!("after")).await?;
        if answer.status == 200 {
            assert_eq!(answer.json(), json!("after"));
            break;
        }
        match answer.status {
            500 => stored.push(answer.header("x-restate-id").unwrap_or_default().to_owned()),
            status => assert_eq!(status, 503, "{}", answer.body),
        }
        anyhow::ensure!(Instant::now() < deadline, "still refused: {}", answer.body);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The call may have gone to a partition that had nothing to write; the failed ones recover
    // on their own retry schedule.
    while !node.log().contains("the partition applies its log again") {
        anyhow::ensure!(Instant::now() < deadline, "no partition recovered from the full disk");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Each partition retries on its own schedule; every stored call ran, once space returned.
    for id in stored {
        loop {
            let attached = client.ingress_get(&format!("restate/invocation/{id}/attach")).await?;
            if attached.status == 200 {
                assert!(attached.json() == big || attached.json() == json!("after"), "{id}");
                break;
            }
            assert_eq!(attached.status, 503, "{id}: {}", attached.body);
            anyhow::ensure!(Instant::now() < deadline, "{id} still not answered: {}", attached.body);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    drop(service);
    node.kill();
    Ok(())
}
