//! The cluster controller places `default-replication` replicas of each partition on the
//! worker nodes, balanced; each node runs only the replicas placed on it, calls through any
//! node's ingress reach the partitions it does not run, and a node that joins later gets its
//! share of replicas.

use std::collections::BTreeMap;
use std::time::Duration;

use restate_cluster_tests::servers::SdkService;
use restate_cluster_tests::{Cluster, NodeSpec, Ports, TestNode, example_config, restatectl_json};
use serde_json::{Value, json};

use crate::invocations::{Client, START_TIMEOUT};

/// Longest wait for the placement to settle and every replica to run.
const SETTLE_WITHIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn replicas_are_placed_balanced_and_a_node_that_joins_gets_its_share() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3, Some(example_config("cluster-3/n1.toml")), |_, spec| {
        spec.env("RESTATE_AUTO_PROVISION", "true")
    });
    cluster.wait_all_alive(START_TIMEOUT).await?;
    let per_node = wait_for_placement(&cluster.address_list(), 3)
        .await
        .map_err(|listing| anyhow::anyhow!("the placement did not settle on 3 nodes: {listing:#}"))?;
    // 24 partitions, 2 replicas each, on 3 nodes.
    assert!(per_node.values().all(|n| *n == 16), "{per_node:?}");

    let effects = cluster.dir.path().join("side-effects.txt");
    let service = SdkService::typescript_scenarios(&effects);
    let clients: Vec<Client> = cluster.nodes.iter().map(Client::new).collect();
    clients[0].register(json!({"uri": service.uri})).await?;
    // Keys spread over the partitions: each node's ingress reaches those it runs no replica of.
    for (i, client) in clients.iter().enumerate() {
        for key in 0..12 {
            client
                .eventually(&format!("Counter/c{key}/add"), json!(1), json!(i + 1))
                .await?;
        }
    }

    // A fourth worker node joins: the controller gives it a quarter of the replicas.
    let spec = NodeSpec::new("node-4")
        .config_file(example_config("cluster-3/n1.toml"))
        .env("RESTATE_ROLES", "[worker,log-server,http-ingress]")
        .env(
            "RESTATE_METADATA_CLIENT__ADDRESSES",
            format!("[{}]", cluster.address_list()),
        );
    let mut joined = TestNode::start(cluster.dir.path(), spec, Ports::free());
    joined.wait_alive(START_TIMEOUT).await?;
    let addresses = format!("{},{}", cluster.address_list(), joined.fabric_url());
    let per_node = wait_for_placement(&addresses, 4)
        .await
        .map_err(|listing| anyhow::anyhow!("the placement did not settle on 4 nodes: {listing:#}"))?;
    assert!(per_node.values().all(|n| *n == 12), "{per_node:?}");
    // Every count moved on, whichever node runs the partitions now.
    let client = Client::new(&joined);
    for key in 0..12 {
        client
            .eventually(&format!("Counter/c{key}/add"), json!(1), json!(4))
            .await?;
    }
    Ok(())
}

/// Polls `restatectl partitions list --json` until every partition has a replica set of two
/// distinct nodes out of `nodes`, exactly the set's members run it, one of them leads, and
/// every node holds replicas; returns how many replicas each node runs, or the last listing.
async fn wait_for_placement(addresses: &str, nodes: usize) -> Result<BTreeMap<String, usize>, Value> {
    let deadline = tokio::time::Instant::now() + SETTLE_WITHIN;
    loop {
        let listing = restatectl_json(&["-s", addresses, "partitions", "list", "--json"]);
        let partitions = listing.as_array().cloned().unwrap_or_default();
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        let settled = partitions.len() == 24
            && partitions.iter().all(|p| {
                let set: Vec<String> = p["replica_set"]
                    .as_array()
                    .map(|s| s.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                let mut running: Vec<String> = p["replicas"]
                    .as_array()
                    .map(|r| r.iter().filter_map(|r| r["node"].as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                running.sort();
                let mut members = set.clone();
                members.sort();
                members.dedup();
                for node in &set {
                    *per_node.entry(node.clone()).or_default() += 1;
                }
                let leader_in_set = p["leader"].as_str().is_some_and(|l| set.iter().any(|n| n == l));
                members.len() == 2 && running == members && leader_in_set
            })
            && per_node.len() == nodes;
        if settled {
            return Ok(per_node);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(listing);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
