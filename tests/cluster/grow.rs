//! The migration guide, "single node to a multi-node deployment", step by step with real
//! processes: a single node with data gets a snapshot repository, snapshots its partitions and
//! trims its logs; two nodes join, restore the partitions from the snapshots and follow the
//! logs; the cluster goes to two copies of everything; the first node is killed and all the
//! data is served by the others (state, kept results, a waiting workflow, a timer and a
//! delayed send that fire once).

use std::time::Duration;

use restate_cluster_tests::servers::SdkService;
use restate_cluster_tests::{NodeSpec, Ports, TestDir, TestNode, example_config, restatectl, restatectl_json};
use restate_test_servers::Moto;
use serde_json::{Value, json};

use crate::invocations::{Client, START_TIMEOUT, side_effects, wait_for_side_effect};

/// The environment key of `[worker.snapshots] destination`.
const DESTINATION: &str = "RESTATE_WORKER__SNAPSHOTS__DESTINATION";

/// How long the timers set before the migration wait: they fire after node 1 is gone.
const TIMER_MS: u64 = 40_000;

#[tokio::test]
async fn a_single_node_grows_into_a_cluster_through_file_snapshots_and_survives_losing_the_first_node()
-> anyhow::Result<()> {
    let dir = TestDir::new();
    let destination = format!("file://{}", dir.path().join("snapshots").display());
    grow(&dir, vec![(DESTINATION.into(), destination)]).await
}

/// The same with the snapshots in an S3 bucket (moto).
#[tokio::test]
async fn a_single_node_grows_into_a_cluster_through_s3_snapshots_and_survives_losing_the_first_node()
-> anyhow::Result<()> {
    let dir = TestDir::new();
    let moto = Moto::start(dir.path());
    moto.create_bucket("snapshots");
    let settings = [
        (DESTINATION, "s3://snapshots/cluster"),
        ("RESTATE_WORKER__SNAPSHOTS__AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("RESTATE_WORKER__SNAPSHOTS__AWS_ALLOW_HTTP", "true"),
        ("RESTATE_WORKER__SNAPSHOTS__AWS_REGION", "us-east-1"),
        ("RESTATE_WORKER__SNAPSHOTS__AWS_ACCESS_KEY_ID", "test"),
        ("RESTATE_WORKER__SNAPSHOTS__AWS_SECRET_ACCESS_KEY", "test"),
    ];
    grow(
        &dir,
        settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    )
    .await
}

/// The guide's steps; `repository` is the `[worker.snapshots]` settings every node gets.
async fn grow(dir: &TestDir, repository: Vec<(String, String)>) -> anyhow::Result<()> {
    // 1. A single node with data.
    let spec = NodeSpec::new("node-1").config_file(example_config("single-node.toml"));
    let mut first = TestNode::start(dir.path(), spec, Ports::free());
    first.wait_alive(START_TIMEOUT).await?;
    let effects = dir.path().join("side-effects.txt");
    let service = SdkService::typescript_scenarios(&effects);
    let client = Client::new(&first);
    client.register(json!({"uri": service.uri})).await?;
    let mut totals = Vec::new();
    for key in 0..8 {
        let answer = client.call(&format!("Counter/c{key}/add"), json!(key + 1)).await?;
        assert_eq!(answer.status, 200, "{}", answer.body);
        totals.push(answer.json());
    }
    let kept = client.call_keyed("Counter/kept/add", "add-once", json!(5)).await?;
    assert_eq!(kept.json(), json!(5), "{}", kept.body);
    let workflow = client.call("Signup/w1/run/send", json!("Ann")).await?;
    assert_eq!(workflow.status, 202, "{}", workflow.body);
    while client.post_empty("Signup/w1/status").await?.json() != json!("waiting") {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sleeping = client
        .call("Runner/sleepThenEffect/send", json!({"tag": "sleeper", "ms": TIMER_MS}))
        .await?;
    assert_eq!(sleeping.status, 202, "{}", sleeping.body);
    // `ctx.run` runs at least once: a node stopped before the run's result is journaled runs it
    // again. Go on once the sleep that follows it is in the journal.
    let sleeper = sleeping.json()["invocationId"].as_str().unwrap_or_default().to_owned();
    let journaled = format!("SELECT index FROM sys_journal WHERE id = '{sleeper}' AND entry_type = 'Command: Sleep'");
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    while client.query(&journaled).await?.is_empty() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the sleeper never reached its sleep"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delayed = client
        .call(
            &format!("Runner/sideEffect/send?delay={}s", TIMER_MS / 1000),
            json!("delayed"),
        )
        .await?;
    assert_eq!(delayed.status, 202, "{}", delayed.body);

    // 2. A snapshot repository, and the log on the replicated provider.
    first.terminate(Duration::from_secs(10))?;
    first.spec_mut().env.extend(repository.iter().cloned());
    first.restart();
    first.wait_alive(START_TIMEOUT).await?;
    let url = first.fabric_url();
    configure(&url, &["--log-provider", "replicated", "--log-replication", "1"])?;

    // 3. Snapshots of every partition; the logs below them are trimmed.
    let created = restatectl_json(&["-s", &url, "snapshots", "create", "--trim-log", "--json"]);
    let rows = created.as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 24, "{created}");
    assert!(rows.iter().all(|r| r["trim_point"].as_u64().is_some()), "{created}");

    // 4. Two more nodes join with the same cluster name, through node 1's metadata.
    let mut nodes = vec![first];
    for name in ["node-2", "node-3"] {
        let mut spec = NodeSpec::new(name)
            .config_file(example_config("single-node.toml"))
            .env("RESTATE_AUTO_PROVISION", "false")
            .env("RESTATE_METADATA_CLIENT__ADDRESSES", format!("[{url}]"));
        spec.env.extend(repository.iter().cloned());
        let mut node = TestNode::start(dir.path(), spec, Ports::free());
        node.wait_alive(START_TIMEOUT).await?;
        nodes.push(node);
    }
    let all = nodes.iter().map(TestNode::fabric_url).collect::<Vec<_>>().join(",");
    configure(&all, &["--log-replication", "2", "--partition-replication", "2"])?;
    let status = restatectl(&["-s", &all, "status"]);
    let status_text = String::from_utf8_lossy(&status.stdout).into_owned();
    println!("{status_text}");
    assert!(
        ["N1", "N2", "N3"].iter().all(|n| status_text.contains(n)),
        "{status_text}"
    );
    wait_replicated(&all, &nodes).await?;
    let joined_logs = format!("{}{}", nodes[1].log(), nodes[2].log());
    assert!(
        joined_logs.contains("restored the partition from a snapshot"),
        "the new replicas start from the snapshots: {joined_logs}"
    );

    // 5. Node 1 is killed: everything is served through node 2.
    nodes[0].kill();
    let survivor = Client::new(&nodes[1]);
    for (key, total) in totals.iter().enumerate() {
        survivor
            .eventually(&format!("Counter/c{key}/get"), json!(null), total.clone())
            .await?;
    }
    let again = survivor.call_keyed("Counter/kept/add", "add-once", json!(5)).await?;
    assert_eq!(
        again.json(),
        json!(5),
        "the kept result, not a second add: {}",
        again.body
    );
    assert_eq!(survivor.call("Counter/kept/get", json!(null)).await?.json(), json!(5));
    let accepted = survivor.call("Signup/w1/submitCode", json!("42")).await?;
    assert_eq!(accepted.json(), json!("accepted"), "{}", accepted.body);
    let result = survivor.ingress_get("restate/workflow/Signup/w1/attach").await?;
    assert_eq!(
        (result.status, result.json()),
        (200, json!("welcome Ann 42")),
        "{}",
        result.body
    );
    for tag in ["sleeper", "delayed"] {
        wait_for_side_effect(&effects, tag, Duration::from_millis(TIMER_MS) + Duration::from_secs(40)).await?;
    }
    // Once each, also a little later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = side_effects(&effects);
    assert_eq!(
        (counts.get("sleeper"), counts.get("delayed")),
        (Some(&1), Some(&1)),
        "{counts:?}"
    );
    Ok(())
}

/// `restatectl config set … --yes`, which must succeed.
fn configure(addresses: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut command = vec!["-s", addresses, "config", "set"];
    command.extend_from_slice(args);
    command.push("--yes");
    let output = restatectl(&command);
    anyhow::ensure!(
        output.status.success(),
        "restatectl config set {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Waits until every partition has two replicas that applied the same LSN without failure
/// (the followers restored and caught up).
async fn wait_replicated(addresses: &str, nodes: &[TestNode]) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let listing = restatectl_json(&["-s", addresses, "partitions", "list", "--json"]);
        let partitions = listing.as_array().cloned().unwrap_or_default();
        let settled = |partition: &Value| {
            let replicas = partition["replicas"].as_array().cloned().unwrap_or_default();
            let applied: Vec<Option<u64>> = replicas.iter().map(|r| r["applied_lsn"].as_u64()).collect();
            partition["replica_set"].as_array().is_some_and(|set| set.len() == 2)
                && replicas.len() == 2
                && replicas.iter().all(|r| r["failure"].is_null())
                && applied.windows(2).all(|pair| pair[0] == pair[1])
        };
        if partitions.len() == 24 && partitions.iter().all(settled) {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the partitions did not settle on two caught-up replicas: {listing:#}\n{}",
            restate_cluster_tests::tail(&nodes[1].log(), 80)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
