//! Partition snapshots (`restatectl snapshots create`) into a `file://` repository, in the
//! reference's layout, and what the operator is told without a repository.

use nix::sys::signal::Signal;
use restate_cluster_tests::servers::SdkService;
use restate_cluster_tests::{Cluster, TestDir, example_config, restatectl, restatectl_json};
use serde_json::{Value, json};

use crate::invocations::{Client, start_node};

/// The environment key of `[worker.snapshots] destination`.
const DESTINATION: &str = "RESTATE_WORKER__SNAPSHOTS__DESTINATION";

/// A repository directory inside the test's directory, and its `file://` destination.
fn repository_in(dir: &TestDir) -> (std::path::PathBuf, String) {
    let repository = dir.path().join("snapshots");
    let destination = format!("file://{}", repository.display());
    (repository, destination)
}

/// A single node with a `file://` repository in `dir` (and `env` on top) serving the TypeScript
/// scenarios service; keep the service for as long as the node is called.
async fn node_with_repository(
    dir: &TestDir,
    env: &[(&str, &str)],
) -> anyhow::Result<(restate_cluster_tests::TestNode, Client, SdkService)> {
    let (_, destination) = repository_in(dir);
    let mut all = vec![(DESTINATION, destination.as_str())];
    all.extend_from_slice(env);
    let node = start_node(dir, &all).await?;
    let service = SdkService::typescript_scenarios(&dir.path().join("side-effects.txt"));
    let client = Client::new(&node);
    client.register(json!({"uri": service.uri})).await?;
    Ok((node, client, service))
}

/// The partition store of the single node `start_node` runs in `dir`.
fn partition_store_dir(dir: &TestDir) -> std::path::PathBuf {
    dir.path().join("node-1").join("node-1").join("db")
}

fn read_json(path: &std::path::Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn snapshots_of_every_led_partition_land_in_the_repository_and_only_the_newest_is_kept() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let (repository, destination) = repository_in(&dir);
    let node = start_node(&dir, &[(DESTINATION, destination.as_str())]).await?;
    let effects = dir.path().join("side-effects.txt");
    let service = SdkService::typescript_scenarios(&effects);
    let client = Client::new(&node);
    client.register(json!({"uri": service.uri})).await?;
    for key in 0..20 {
        let answer = client.call(&format!("Counter/k{key}/add"), json!(key)).await?;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }

    let url = node.fabric_url();
    let created = restatectl_json(&["-s", &url, "snapshots", "create", "--json"]);
    let rows = created.as_array().cloned().unwrap_or_default();
    assert_eq!(
        rows.len(),
        24,
        "one snapshot per partition (the node leads all 24): {created}"
    );
    let mut with_state = 0;
    for row in &rows {
        let partition = row["partition_id"].as_u64().unwrap_or_default();
        let latest = read_json(&repository.join(partition.to_string()).join("latest.json"));
        assert_eq!(latest["snapshot_id"], row["snapshot_id"], "{latest}");
        assert_eq!(latest["min_applied_lsn"], row["min_applied_lsn"], "{latest}");
        let path = latest["path"].as_str().unwrap_or_default().to_owned();
        assert_eq!(
            path,
            format!(
                "lsn_{:020}-{}",
                row["min_applied_lsn"].as_u64().unwrap_or_default(),
                row["snapshot_id"].as_str().unwrap_or_default()
            )
        );
        let snapshot_dir = repository.join(partition.to_string()).join(&path);
        let metadata = read_json(&snapshot_dir.join("metadata.json"));
        assert_eq!(metadata["partition_id"], row["partition_id"], "{metadata}");
        assert_eq!(metadata["cluster_name"], "restate-single", "{metadata}");
        assert!(
            metadata["cluster_fingerprint"].as_str().is_some_and(|f| !f.is_empty()),
            "{metadata}"
        );
        assert!(metadata["key_range"]["end"].as_u64() > metadata["key_range"]["start"].as_u64());
        let data = std::fs::metadata(snapshot_dir.join("data.sst"))?;
        assert_eq!(Some(data.len()), row["size_bytes"].as_u64(), "{row}");
        if row["entries"].as_u64() > Some(5) {
            with_state += 1;
        }
    }
    assert!(with_state > 0, "the counters' partitions hold state: {created}");

    // One partition again: its latest moves on, and with num-retained = 1 the older is deleted.
    let first = rows[3].clone();
    let again = restatectl_json(&["-s", &url, "snapshots", "create", "--partition", "3", "--json"]);
    assert_eq!(again.as_array().map(Vec::len), Some(1), "{again}");
    assert_eq!(again[0]["partition_id"], 3);
    let latest = read_json(&repository.join("3").join("latest.json"));
    assert_eq!(latest["snapshot_id"], again[0]["snapshot_id"]);
    assert_eq!(
        latest["retained_snapshots"].as_array().map(Vec::len),
        Some(1),
        "{latest}"
    );
    let old = format!(
        "lsn_{:020}-{}",
        first["min_applied_lsn"].as_u64().unwrap_or_default(),
        first["snapshot_id"].as_str().unwrap_or_default()
    );
    assert!(
        !repository.join("3").join(old).exists(),
        "the older snapshot beyond num-retained is gone"
    );

    // The table for people.
    let table = restatectl(&["-s", &url, "snapshots", "create", "-p", "5"]);
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    let stdout = String::from_utf8_lossy(&table.stdout);
    assert!(
        stdout.contains("MIN APPLIED LSN") && stdout.contains("1 snapshot(s) taken"),
        "{stdout}"
    );
    Ok(())
}

#[tokio::test]
async fn without_a_repository_the_operator_is_told_what_to_set() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let node = start_node(&dir, &[]).await?;
    let refused = restatectl(&["-s", &node.fabric_url(), "snapshots", "create"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("[worker.snapshots] destination") && stderr.contains("file:///"),
        "{stderr}"
    );

    let dir = TestDir::new();
    let node = start_node(&dir, &[(DESTINATION, "ftp://elsewhere")]).await?;
    let refused = restatectl(&["-s", &node.fabric_url(), "snapshots", "create"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("ftp://elsewhere") && stderr.contains("not supported"),
        "{stderr}"
    );
    Ok(())
}

/// The guide's recovery case on one node: snapshots are taken, the logs are trimmed below them,
/// and the node loses its partition store. On restart every replica restores from its snapshot
/// and reads the log on from there: the objects keep their state although the records that
/// built it are gone from the log.
#[tokio::test]
async fn a_node_that_lost_its_partition_store_restores_it_from_snapshots_below_a_trimmed_log() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let (mut node, client, _service) = node_with_repository(&dir, &[]).await?;
    let mut totals = Vec::new();
    for key in 0..10 {
        let mut total = json!(null);
        for _ in 0..3 {
            let answer = client.call(&format!("Counter/k{key}/add"), json!(key + 1)).await?;
            assert_eq!(answer.status, 200, "{}", answer.body);
            total = answer.json();
        }
        totals.push(total);
    }
    let url = node.fabric_url();
    let created = restatectl_json(&["-s", &url, "snapshots", "create", "--json"]);
    for row in created.as_array().cloned().unwrap_or_default() {
        let log = row["partition_id"].as_u64().unwrap_or_default().to_string();
        let trim_point = (row["min_applied_lsn"].as_u64().unwrap_or_default() + 1).to_string();
        let trimmed = restatectl(&["-s", &url, "logs", "trim", &log, "--trim-point", &trim_point]);
        assert!(trimmed.status.success(), "{}", String::from_utf8_lossy(&trimmed.stderr));
    }

    node.kill();
    let store = partition_store_dir(&dir);
    assert!(store.is_dir(), "the partition store is at {}", store.display());
    std::fs::remove_dir_all(&store)?;
    node.restart();
    node.wait_alive(crate::invocations::START_TIMEOUT).await?;
    for (key, total) in totals.iter().enumerate() {
        let answer = client.call(&format!("Counter/k{key}/get"), json!(null)).await?;
        assert_eq!(answer.status, 200, "{}\n{}", answer.body, node.log());
        assert_eq!(&answer.json(), total, "k{key} kept its state through the restore");
    }
    assert!(
        node.log().contains("restored the partition from a snapshot"),
        "{}",
        node.log()
    );
    // And the restored partitions take new work.
    let answer = client.call("Counter/k1/add", json!(100)).await?;
    assert_eq!(answer.json(), json!(totals[1].as_i64().unwrap_or_default() + 100));
    Ok(())
}

/// Snapshots of another cluster in the repository are refused by name, and the node serves from
/// its own log instead.
#[tokio::test]
async fn snapshots_of_another_cluster_are_refused_with_their_name() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let (_, destination) = repository_in(&dir);
    let first = start_node(&dir, &[(DESTINATION, destination.as_str())]).await?;
    restatectl_json(&["-s", &first.fabric_url(), "snapshots", "create", "--json"]);
    drop(first);

    let other_dir = TestDir::new();
    let other = start_node(
        &other_dir,
        &[
            (DESTINATION, destination.as_str()),
            ("RESTATE_CLUSTER_NAME", "another-cluster"),
        ],
    )
    .await?;
    let log = other.log();
    assert!(
        log.contains("belongs to cluster `restate-single`") && log.contains("not to this cluster `another-cluster`"),
        "{log}"
    );
    assert!(!log.contains("restored the partition from a snapshot"), "{log}");
    let client = Client::new(&other);
    let effects = other_dir.path().join("side-effects.txt");
    let service = SdkService::typescript_scenarios(&effects);
    client.register(json!({"uri": service.uri})).await?;
    let answer = client.call("Counter/fresh/add", json!(1)).await?;
    assert_eq!((answer.status, answer.json()), (200, json!(1)), "{}", answer.body);
    Ok(())
}

/// `[worker.snapshots] snapshot-interval-num-records` takes snapshots on its own, and on one
/// node (durability mode `replica-set-only`) each partition's log is trimmed below what the
/// node flushed once `trim-delay-interval` passed; after a `kill -9` nothing is lost.
#[tokio::test]
async fn a_single_node_takes_snapshots_by_itself_and_trims_its_logs_below_what_it_flushed() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let (mut node, client, _service) = node_with_repository(
        &dir,
        &[
            ("RESTATE_WORKER__SNAPSHOTS__SNAPSHOT_INTERVAL_NUM_RECORDS", "10"),
            ("RESTATE_WORKER__TRIM_DELAY_INTERVAL", "0s"),
        ],
    )
    .await?;
    let mut total = json!(null);
    for n in 0..15 {
        let answer = client.call("Counter/busy/add", json!(n)).await?;
        assert_eq!(answer.status, 200, "{}", answer.body);
        total = answer.json();
    }
    let url = node.fabric_url();
    // The busy key's partition: snapshotted by itself, and its log trimmed (flushes run every
    // 5 s, trim checks every 5 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let (archived, trim_point) = loop {
        let partitions = restatectl_json(&["-s", &url, "partitions", "list", "--json"]);
        let busy = partitions
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["archived_lsn"].as_u64().is_some() && p["trim_point"].as_u64().is_some_and(|t| t > 10));
        if let Some(busy) = busy {
            break (busy["archived_lsn"].clone(), busy["trim_point"].clone());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no partition was snapshotted and trimmed: {partitions}\n{}",
            node.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    println!("archived LSN {archived}, trim point {trim_point}");
    let listed = restatectl_json(&["-s", &url, "snapshots", "list", "--json"]);
    assert!(
        listed.as_array().is_some_and(|rows| rows
            .iter()
            .any(|r| r["min_applied_lsn"] == archived && r["latest"] == true)),
        "{listed}"
    );
    let logs = restatectl(&["-s", &url, "logs", "list"]);
    println!("{}", String::from_utf8_lossy(&logs.stdout));

    node.kill();
    node.restart();
    node.wait_alive(crate::invocations::START_TIMEOUT).await?;
    let answer = client.call("Counter/busy/get", json!(null)).await?;
    assert_eq!(answer.json(), total, "{}", node.log());
    Ok(())
}

/// Three nodes, every partition on two of them. A replica that was paused, then one that was
/// down, while `snapshots create --trim-log` trimmed the logs past what they applied: each
/// restores from the snapshots and reads on; with another node killed afterwards, every
/// counter is served with its value, some by the restored replicas.
#[tokio::test]
async fn replicas_behind_a_trimmed_log_restore_from_snapshots_and_serve_after_a_failover() -> anyhow::Result<()> {
    let repository_dir = TestDir::new();
    let (_, destination) = repository_in(&repository_dir);
    let mut cluster = Cluster::start(3, Some(example_config("cluster-3/n1.toml")), |_, spec| {
        spec.env("RESTATE_AUTO_PROVISION", "true")
            .env(DESTINATION, destination.as_str())
    });
    cluster.wait_all_alive(crate::invocations::START_TIMEOUT).await?;
    let effects = cluster.dir.path().join("side-effects.txt");
    let service = SdkService::typescript_scenarios(&effects);
    let client = Client::new(&cluster.nodes[0]);
    client.register(json!({"uri": service.uri})).await?;
    client.eventually("Counter/k0/get", json!(null), json!(0)).await?;
    let names = node_ids(&cluster);
    let mut totals = vec![0i64; KEYS];
    // Each add carries an idempotency key, so one whose outcome was unknown (leaders still
    // settling in the new cluster) is sent again safely.
    let add_round = async |round: i64, totals: &mut Vec<i64>| -> anyhow::Result<()> {
        for (key, total) in totals.iter_mut().enumerate() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let answer = loop {
                let answer = client
                    .call_keyed(
                        &format!("Counter/k{key}/add"),
                        &format!("round-{round}-k{key}"),
                        json!(round),
                    )
                    .await?;
                if answer.status == 200 || std::time::Instant::now() > deadline {
                    break answer;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            };
            assert_eq!(answer.status, 200, "{}", answer.body);
            *total += round;
            assert_eq!(answer.json(), json!(*total));
        }
        Ok(())
    };
    add_round(1, &mut totals).await?;
    let url = cluster.address_list();

    // Node 3 paused: its replicas are running but apply nothing while the logs are trimmed.
    cluster.nodes[2].signal(Signal::SIGSTOP);
    add_round(2, &mut totals).await?;
    let trimmed = trim_logs_with_snapshots(&url)?;
    cluster.nodes[2].signal(Signal::SIGCONT);
    wait_caught_up(&url, &names["node-3"], &trimmed, &cluster).await?;
    assert!(
        cluster.nodes[2]
            .log()
            .contains("the replica restarts from a snapshot past its log's trim point"),
        "{}",
        cluster.nodes[2].log()
    );

    // Node 3 down: it comes back with a store behind the trim point.
    let restores =
        |node: &restate_cluster_tests::TestNode| node.log().matches("restored the partition from a snapshot").count();
    let restored_before = restores(&cluster.nodes[2]);
    cluster.nodes[2].kill();
    add_round(3, &mut totals).await?;
    let trimmed = trim_logs_with_snapshots(&url)?;
    cluster.nodes[2].restart();
    cluster.nodes[2].wait_alive(crate::invocations::START_TIMEOUT).await?;
    wait_caught_up(&url, &names["node-3"], &trimmed, &cluster).await?;
    assert!(
        restores(&cluster.nodes[2]) > restored_before,
        "node 3 restored its stale replicas when it started: {}",
        cluster.nodes[2].log()
    );

    // Node 1 killed: the partitions it shared with node 3 are served by the restored replicas.
    cluster.nodes[0].kill();
    let survivor = Client::new(&cluster.nodes[1]);
    for (key, total) in totals.iter().enumerate() {
        survivor
            .eventually(&format!("Counter/k{key}/get"), json!(null), json!(total))
            .await?;
    }
    let answer = survivor.call("Counter/k1/add", json!(100)).await?;
    assert_eq!(answer.json(), json!(totals[1] + 100), "{}", answer.body);
    Ok(())
}

const KEYS: usize = 12;

/// Node id (`N2`) by name (`node-2`).
fn node_ids(cluster: &Cluster) -> std::collections::HashMap<String, String> {
    let nodes = restatectl_json(&["-s", &cluster.address_list(), "nodes", "list", "--json"]);
    nodes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| Some((n["name"].as_str()?.to_owned(), n["node_id"].as_str()?.to_owned())))
        .collect()
}

/// `snapshots create --trim-log`; returns each partition's trim point afterwards.
fn trim_logs_with_snapshots(url: &str) -> anyhow::Result<std::collections::BTreeMap<u64, u64>> {
    let created = restatectl_json(&["-s", url, "snapshots", "create", "--trim-log", "--json"]);
    let mut trimmed = std::collections::BTreeMap::new();
    for row in created.as_array().into_iter().flatten() {
        let partition = row["partition_id"].as_u64().unwrap_or_default();
        let lsn = row["min_applied_lsn"].as_u64().unwrap_or_default();
        assert_eq!(
            row["trim_point"].as_u64(),
            Some(lsn + 1),
            "trimmed to what the snapshot holds: {row}"
        );
        trimmed.insert(partition, lsn + 1);
    }
    anyhow::ensure!(trimmed.len() == 24, "a snapshot of every partition: {created}");
    Ok(trimmed)
}

/// Waits until every replica of `node` applied past its partition's trim point, without failure.
async fn wait_caught_up(
    url: &str,
    node: &str,
    trimmed: &std::collections::BTreeMap<u64, u64>,
    cluster: &Cluster,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let partitions = restatectl_json(&["-s", url, "partitions", "list", "--json"]);
        let mut behind = Vec::new();
        for partition in partitions.as_array().into_iter().flatten() {
            let id = partition["partition_id"].as_u64().unwrap_or_default();
            let placed_here = partition["replica_set"]
                .as_array()
                .is_some_and(|set| set.iter().any(|n| n == node));
            if !placed_here {
                continue;
            }
            let replica = partition["replicas"]
                .as_array()
                .and_then(|replicas| replicas.iter().find(|r| r["node"] == node).cloned());
            let caught_up = replica.as_ref().is_some_and(|r| {
                r["failure"].is_null() && r["applied_lsn"].as_u64() >= trimmed.get(&id).map(|t| t - 1)
            });
            if !caught_up {
                behind.push(format!("{id}: {replica:?}"));
            }
        }
        if behind.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{node}'s replicas did not catch up: {behind:?}\n{}",
            restate_cluster_tests::tail(&cluster.nodes[2].log(), 60)
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// The newest snapshot is corrupt: the replica that lost its store restores the older retained
/// one and reads the log on from there, so nothing is lost.
#[tokio::test]
async fn a_corrupt_snapshot_falls_back_to_an_older_retained_one() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let (mut node, client, _service) =
        node_with_repository(&dir, &[("RESTATE_WORKER__SNAPSHOTS__NUM_RETAINED", "2")]).await?;
    let (repository, _) = repository_in(&dir);
    let url = node.fabric_url();
    client.call("Counter/c/add", json!(1)).await?;
    restatectl_json(&["-s", &url, "snapshots", "create", "--json"]);
    let total = client.call("Counter/c/add", json!(2)).await?.json();
    assert_eq!(total, json!(3));
    let newest = restatectl_json(&["-s", &url, "snapshots", "create", "--json"]);

    node.kill();
    for row in newest.as_array().into_iter().flatten() {
        let location = row["location"].as_str().unwrap_or_default();
        let path = std::path::Path::new(location.trim_start_matches("file://")).join("data.sst");
        std::fs::write(&path, b"not an sst file")?;
    }
    assert!(repository.is_dir());
    std::fs::remove_dir_all(partition_store_dir(&dir))?;
    node.restart();
    node.wait_alive(crate::invocations::START_TIMEOUT).await?;
    let answer = client.call("Counter/c/get", json!(null)).await?;
    assert_eq!(answer.json(), total, "{}", node.log());
    assert!(
        node.log().contains("cannot restore a snapshot; trying an older one"),
        "{}",
        node.log()
    );
    Ok(())
}

/// A log trimmed past what a replica holds, with no snapshot to restore from: the partition is
/// failed with the reason and the fix (calls to it say so instead of hanging), the node stays up.
#[tokio::test]
async fn a_replica_behind_a_trimmed_log_without_a_snapshot_says_what_it_needs() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let (mut node, client, _service) = node_with_repository(&dir, &[]).await?;
    assert_eq!(client.call("Counter/lost/add", json!(7)).await?.status, 200);
    let url = node.fabric_url();
    // Trim every log to its tail: no snapshot holds what is dropped.
    let logs = restatectl_json(&["-s", &url, "logs", "list", "--json"]);
    for log in logs.as_array().into_iter().flatten() {
        let (Some(id), Some(tail)) = (log["log_id"].as_u64(), log["tail_lsn"].as_u64()) else {
            continue;
        };
        let trimmed = restatectl(&[
            "-s",
            &url,
            "logs",
            "trim",
            &id.to_string(),
            "--trim-point",
            &tail.to_string(),
        ]);
        assert!(trimmed.status.success(), "{}", String::from_utf8_lossy(&trimmed.stderr));
    }
    node.kill();
    std::fs::remove_dir_all(partition_store_dir(&dir))?;
    node.restart();
    node.wait_alive(crate::invocations::START_TIMEOUT).await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let partitions = restatectl_json(&["-s", &url, "partitions", "list", "--json"]);
        let failures: Vec<String> = partitions
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| p["replicas"].as_array().cloned().unwrap_or_default())
            .filter_map(|r| r["failure"].as_str().map(str::to_owned))
            .collect();
        if let Some(failure) = failures.iter().find(|f| f.contains("holds no snapshot")) {
            assert!(failure.contains("restatectl snapshots create"), "{failure}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no replica says it needs a snapshot: {partitions}\n{}",
            node.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let refused = client.call("Counter/lost/get", json!(null)).await?;
    assert_ne!(refused.status, 200, "{}", refused.body);
    assert!(refused.body.contains("snapshot"), "{}", refused.body);
    Ok(())
}
