//! The operator tool against live clusters: status, nodes, liveness, the cluster controller,
//! cluster configuration, and its error messages.

use std::time::{Duration, Instant};

use restate_cluster_tests::{Cluster, NodeSpec, Ports, TestDir, TestNode, example_config, restatectl, restatectl_json};

const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Liveness changes must show within this bound (detector: dead after 2 s of silence).
const LIVENESS_BOUND: Duration = Duration::from_secs(10);

/// Waits until `nodes list --json` satisfies `accept`; returns the last answer.
async fn wait_nodes(
    addresses: &str,
    accept: impl Fn(&[serde_json::Value]) -> bool,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let deadline = Instant::now() + LIVENESS_BOUND;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        let output = restatectl(&["-s", addresses, "nodes", "list", "--json"]);
        if output.status.success() {
            last = serde_json::from_slice::<serde_json::Value>(&output.stdout)?
                .as_array()
                .cloned()
                .unwrap_or_default();
            if accept(&last) {
                return Ok(last);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("nodes did not reach the expected state within {LIVENESS_BOUND:?}: {last:?}")
}

fn liveness_of<'a>(nodes: &'a [serde_json::Value], name: &str) -> &'a str {
    nodes
        .iter()
        .find(|n| n["name"] == name)
        .and_then(|n| n["liveness"].as_str())
        .unwrap_or("missing")
}

#[tokio::test]
async fn status_shows_liveness_and_the_controller_moves_when_its_node_dies() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3, Some(example_config("cluster-3/n1.toml")), |_, spec| {
        spec.env("RESTATE_AUTO_PROVISION", "true")
    });
    cluster.wait_all_alive(START_TIMEOUT).await?;
    let all = cluster.address_list();
    let listed = wait_nodes(&all, |nodes| {
        nodes.len() == 3 && nodes.iter().all(|n| n["liveness"] == "ALIVE")
    })
    .await?;
    for node in &listed {
        assert_eq!(node["roles"].as_array().map(Vec::len), Some(5), "{node}");
        assert_eq!(node["generation"], 1, "{node}");
    }
    let status = restatectl_json(&["-s", &all, "status", "--json"]);
    assert_eq!(status["controller"], "N1", "{status}");
    // The spelling some Restate docs use.
    let docs = restatectl_json(&["status", "--addresses", &all, "--json"]);
    assert_eq!(docs["controller"], "N1", "{docs}");
    assert_eq!(status["configuration"]["num_partitions"], 24, "{status}");
    let human = restatectl(&["-s", &all, "status", "--extra"]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("(controller)") && human.contains("Metadata servers"),
        "{human}"
    );

    // Kill the node that runs the active controller (N1).
    let victim = cluster
        .nodes
        .iter()
        .position(|n| {
            listed
                .iter()
                .any(|l| l["node_id"] == "N1" && l["name"] == n.name.as_str())
        })
        .expect("N1 is one of the nodes");
    let victim_name = cluster.nodes[victim].name.clone();
    cluster.nodes[victim].kill();
    let survivors: Vec<String> = cluster
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, n)| n.fabric_url())
        .collect();
    let survivors = survivors.join(",");
    let killed_at = Instant::now();
    let nodes = wait_nodes(&survivors, |nodes| liveness_of(nodes, &victim_name) == "DEAD").await?;
    eprintln!("the killed node showed as DEAD after {:?}", killed_at.elapsed());
    // One truth per node: a dead node has no current status, only its last sighting.
    let dead = nodes
        .iter()
        .find(|n| n["name"] == victim_name.as_str())
        .cloned()
        .unwrap_or_default();
    assert!(dead["status"].is_null(), "{dead}");
    assert!(dead["uptime_s"].is_null(), "{dead}");
    assert!(dead["last_seen_ms_ago"].as_u64().is_some(), "{dead}");
    let status = restatectl_json(&["-s", &survivors, "status", "--json"]);
    assert_eq!(
        status["controller"], "N2",
        "the controller moves to the next admin: {status}"
    );
    // /health and the admin API's /cluster-health report the same view.
    let survivor = &cluster.nodes[(victim + 1) % 3];
    // Each node's failure detector decides on its own: this one may call the victim DEAD a
    // moment after the node restatectl asked.
    let victim_liveness = |health: &serde_json::Value| {
        health["cluster"]["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == victim_name.as_str()))
            .map(|n| n["liveness"].clone())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let health: serde_json::Value = loop {
        let health: serde_json::Value = reqwest::get(format!("{}health", survivor.fabric_url()))
            .await?
            .json()
            .await?;
        if victim_liveness(&health) == Some(serde_json::json!("DEAD")) || Instant::now() > deadline {
            break health;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let cluster_health: serde_json::Value = reqwest::get(format!("{}cluster-health", survivor.admin_url()))
        .await?
        .json()
        .await?;
    assert_eq!(health["cluster"]["controller"], "N2", "{health}");
    assert_eq!(cluster_health["controller"], "N2", "{cluster_health}");
    let dead_in_health = health["cluster"]["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == victim_name.as_str()))
        .map(|n| n["liveness"].clone());
    assert_eq!(dead_in_health, Some(serde_json::json!("DEAD")), "{health}");

    // Back again: alive, one generation later, and the controller returns to N1.
    cluster.nodes[victim].restart();
    cluster.nodes[victim].wait_alive(START_TIMEOUT).await?;
    let listed = wait_nodes(&all, |nodes| {
        nodes.iter().all(|n| n["liveness"] == "ALIVE")
            && nodes
                .iter()
                .any(|n| n["name"] == victim_name.as_str() && n["generation"] == 2)
    })
    .await?;
    assert_eq!(listed.len(), 3);
    Ok(())
}

#[tokio::test]
async fn config_set_changes_what_config_get_returns_and_refuses_what_is_not_allowed() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let spec = NodeSpec::new("solo")
        .config_file(example_config("single-node.toml"))
        .env("RESTATE_BIFROST__DEFAULT_PROVIDER", "local");
    let mut node = TestNode::start(dir.path(), spec, Ports::free());
    node.wait_alive(START_TIMEOUT).await?;
    let address = node.fabric_url();
    let get = || restatectl_json(&["-s", &address, "config", "get", "--json"]);
    assert_eq!(get()["log_provider"], "local");

    // The single-node → multi-node guide: switch the log provider to replicated.
    let output = restatectl(&[
        "-s",
        &address,
        "config",
        "set",
        "--log-provider",
        "replicated",
        "--log-replication",
        "1",
        "--yes",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("log provider") && stdout.contains("replicated"),
        "{stdout}"
    );
    let now = get();
    assert_eq!(now["log_provider"], "replicated");
    assert_eq!(now["log_replication"], "{node: 1}");

    let refused = |args: &[&str], reason: &str| {
        let mut all = vec!["-s", address.as_str(), "config", "set"];
        all.extend_from_slice(args);
        all.push("--yes");
        let output = restatectl(&all);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} must be refused");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    };
    refused(&["--log-provider", "local"], "can only change to `replicated`");
    refused(&["--num-partitions", "8"], "can only be set while it is 0");
    refused(&["--log-replication", "2"], "needs at least 2 log-servers");
    refused(&["--partition-replication", "3"], "needs at least 3 worker nodes");
    assert_eq!(get(), now, "refused changes change nothing");
    Ok(())
}

#[tokio::test]
async fn restatectl_explains_unprovisioned_and_foreign_clusters() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let spec = NodeSpec::new("waiting").env("RESTATE_AUTO_PROVISION", "false");
    let mut node = TestNode::start(dir.path(), spec, Ports::free());
    node.wait_awaiting_provisioning(START_TIMEOUT).await?;
    let address = node.fabric_url();
    for command in [&["status"][..], &["nodes", "list"][..]] {
        let mut args = vec!["-s", address.as_str()];
        args.extend_from_slice(command);
        let output = restatectl(&args);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("not provisioned") && stderr.contains("restatectl provision"),
            "{command:?}: {stderr}"
        );
    }
    let output = restatectl(&["-s", &address, "--cluster-name", "production", "status"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("belongs to cluster `localcluster`, not to cluster `production`"),
        "{stderr}"
    );
    Ok(())
}
