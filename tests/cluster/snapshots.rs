//! Partition snapshots (`restatectl snapshots create`) into a `file://` repository, in the
//! reference's layout, and what the operator is told without a repository.

use restate_cluster_tests::servers::SdkService;
use restate_cluster_tests::{TestDir, restatectl, restatectl_json};
use serde_json::{Value, json};

use crate::invocations::{Client, start_node};

fn read_json(path: &std::path::Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn snapshots_of_every_led_partition_land_in_the_repository_and_only_the_newest_is_kept() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let repository = dir.path().join("snapshots");
    let destination = format!("file://{}", repository.display());
    let node = start_node(
        &dir,
        &[("RESTATE_WORKER__SNAPSHOTS__DESTINATION", destination.as_str())],
    )
    .await?;
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
    let node = start_node(&dir, &[("RESTATE_WORKER__SNAPSHOTS__DESTINATION", "ftp://elsewhere")]).await?;
    let refused = restatectl(&["-s", &node.fabric_url(), "snapshots", "create"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("ftp://elsewhere") && stderr.contains("not supported"),
        "{stderr}"
    );
    Ok(())
}
