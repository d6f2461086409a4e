//! Partition snapshots (`restatectl snapshots create`) into a `file://` repository, in the
//! reference's layout, and what the operator is told without a repository.

use restate_cluster_tests::servers::SdkService;
use restate_cluster_tests::{TestDir, restatectl, restatectl_json};
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
    let (_, destination) = repository_in(&dir);
    let mut node = start_node(&dir, &[(DESTINATION, destination.as_str())]).await?;
    let effects = dir.path().join("side-effects.txt");
    let service = SdkService::typescript_scenarios(&effects);
    let client = Client::new(&node);
    client.register(json!({"uri": service.uri})).await?;
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
    let store = dir.path().join("node-1").join("node-1").join("db");
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
