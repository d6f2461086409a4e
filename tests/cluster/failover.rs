//! Partitions across three nodes: `kill -9` each node in turn and pause one with `SIGSTOP`
//! while clients add to counters through every node's ingress. Calls through the surviving
//! nodes keep succeeding, nothing acknowledged is lost or applied twice, and work started
//! before the faults (sleeping invocations, a delayed send) completes once after them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use restate_cluster_tests::servers::SdkService;
use restate_cluster_tests::{Cluster, TestNode, example_config, restatectl_json};
use serde_json::json;

use crate::invocations::{Client, START_TIMEOUT, side_effects, wait_for_side_effect};

const KEYS: usize = 6;
const WRITERS_PER_NODE: usize = 2;
/// How long calls through the surviving nodes may take to succeed again after a fault (far
/// above the sub-second failover the benchmark measures; this checks that service resumes).
const RESUME_WITHIN: Duration = Duration::from_secs(20);

/// What the writers through one node's ingress did.
#[derive(Default)]
struct NodeProgress {
    acknowledged: AtomicU64,
}

#[tokio::test]
async fn calls_keep_succeeding_through_the_other_nodes_while_each_node_is_killed_or_paused() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3, Some(example_config("cluster-3/n1.toml")), |_, spec| {
        spec.env("RESTATE_AUTO_PROVISION", "true")
    });
    cluster.wait_all_alive(START_TIMEOUT).await?;
    let effects = cluster.dir.path().join("side-effects.txt");
    let service = SdkService::typescript_scenarios(&effects);
    let clients: Vec<Arc<Client>> = cluster.nodes.iter().map(|n| Arc::new(Client::new(n))).collect();
    clients[0].register(json!({"uri": service.uri})).await?;
    for client in &clients {
        client.eventually("Counter/warmup/add", json!(0), json!(0)).await?;
    }

    // Work in flight across the faults: sleepers after a `ctx.run`, and a delayed send.
    let mut in_flight: Vec<(String, serde_json::Value)> = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let answer = client
            .call(
                "Runner/sleepThenEffect/send",
                json!({"tag": format!("sleeper-{i}"), "ms": 8000}),
            )
            .await?;
        assert_eq!(answer.status, 202, "{}", answer.body);
        in_flight.push((invocation_id(&answer.json()), json!(format!("sleeper-{i}"))));
    }
    let delayed = clients[1]
        .call("Runner/sideEffect/send?delay=10s", json!("timer"))
        .await?;
    assert_eq!(delayed.status, 202, "{}", delayed.body);
    in_flight.push((invocation_id(&delayed.json()), json!("ran timer")));
    // The sleepers' first `ctx.run` is journaled before any fault: it must never run again.
    for i in 0..3 {
        wait_for_side_effect(&effects, &format!("sleeper-{i}"), Duration::from_secs(30)).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let progress: Vec<Arc<NodeProgress>> = (0..3).map(|_| Arc::default()).collect();
    let mut writers = tokio::task::JoinSet::new();
    for (node, client) in clients.iter().enumerate() {
        for writer in 0..WRITERS_PER_NODE {
            let (client, stop, progress) = (client.clone(), stop.clone(), progress[node].clone());
            writers.spawn(async move {
                let key = format!("k{}", (node * WRITERS_PER_NODE + writer) % KEYS);
                let (mut sent, mut acknowledged) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    match client.call(&format!("Counter/{key}/add"), json!(1)).await {
                        Ok(answer) if answer.status == 200 => {
                            sent += 1;
                            acknowledged += 1;
                            progress.acknowledged.fetch_add(1, Ordering::Relaxed);
                        }
                        // Stored or not, the add may count.
                        Ok(_) => sent += 1,
                        Err(error) if error.downcast_ref::<reqwest::Error>().is_some_and(|e| e.is_connect()) => {
                            // This writer's node is down: nothing was sent.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(_) => sent += 1,
                    }
                }
                (key, sent, acknowledged)
            });
        }
    }

    let faults = [
        (0, Some(Signal::SIGKILL)),
        (1, Some(Signal::SIGKILL)),
        (2, Some(Signal::SIGKILL)),
        (1, None),
    ];
    for (victim, signal) in faults {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before = survivors_acknowledged(&progress, victim);
        match signal {
            Some(_) => cluster.nodes[victim].kill(),
            None => cluster.nodes[victim].signal(Signal::SIGSTOP),
        }
        let resumed = wait_for_progress(&progress, victim, before + 20).await;
        let fault = if signal.is_some() { "kill -9" } else { "SIGSTOP" };
        if signal.is_none() {
            cluster.nodes[victim].signal(Signal::SIGCONT);
        }
        assert!(
            resumed,
            "after {fault} of node {}, calls through the other nodes did not succeed again within {RESUME_WITHIN:?}; \
             node logs:\n{}",
            victim + 1,
            logs(&cluster.nodes)
        );
        if signal.is_some() {
            cluster.nodes[victim].restart();
            cluster.nodes[victim].wait_alive(START_TIMEOUT).await?;
        }
    }
    // Once every node is back, each partition has one leader and every node leads its share.
    let spread = wait_for_balanced_leaders(&cluster).await;
    assert!(
        spread.is_ok(),
        "leaders did not spread over the nodes again: {spread:?}; node logs:\n{}",
        logs(&cluster.nodes)
    );
    stop.store(true, Ordering::Relaxed);
    let mut sent: HashMap<String, u64> = HashMap::new();
    let mut acknowledged: HashMap<String, u64> = HashMap::new();
    while let Some(result) = writers.join_next().await {
        let (key, s, a) = result?;
        *sent.entry(key.clone()).or_default() += s;
        *acknowledged.entry(key).or_default() += a;
    }

    // Every acknowledged add is counted once, and every key reads through every node.
    for key in 0..KEYS {
        let key = format!("k{key}");
        for client in &clients {
            let answer = client.call(&format!("Counter/{key}/get"), json!(null)).await?;
            assert_eq!(answer.status, 200, "{}", answer.body);
            let total = answer.json().as_u64().unwrap_or_default();
            let (acknowledged, sent) = (acknowledged[&key], sent[&key]);
            assert!(
                acknowledged <= total && total <= sent,
                "{key}: total {total}, acknowledged {acknowledged}, sent {sent}"
            );
        }
    }
    // Each sleeper and the delayed send end once, with their result. A `ctx.run` that was
    // running when its partition's leadership moved may run again on the new leader (its
    // result was not journaled yet: at least once, as in Restate); one journaled before the
    // faults never runs again.
    for (id, expected) in &in_flight {
        let output = wait_for_output(&clients[0], id).await?;
        assert_eq!(&output, expected, "invocation {id}");
    }
    let counts = side_effects(&effects);
    for i in 0..3 {
        assert_eq!(counts.get(&format!("sleeper-{i}")), Some(&1), "{counts:?}");
        assert!(counts.contains_key(&format!("sleeper-{i}:done")), "{counts:?}");
    }
    assert!(counts.contains_key("timer"), "{counts:?}");
    Ok(())
}

fn invocation_id(accepted: &serde_json::Value) -> String {
    accepted["invocationId"].as_str().unwrap_or_default().to_owned()
}

/// Polls `GET /restate/invocation/{id}/output` until the invocation completed; its result.
async fn wait_for_output(client: &Client, id: &str) -> anyhow::Result<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let answer = client.ingress_get(&format!("restate/invocation/{id}/output")).await?;
        if answer.status == 200 {
            return Ok(answer.json());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "invocation {id} did not complete: {} {}",
            answer.status,
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `restatectl partitions list --json` until every partition has exactly one leader and
/// every node leads some; the last listing if that does not happen within `RESUME_WITHIN`.
async fn wait_for_balanced_leaders(cluster: &Cluster) -> Result<(), serde_json::Value> {
    let deadline = tokio::time::Instant::now() + RESUME_WITHIN;
    loop {
        let listing = restatectl_json(&["-s", &cluster.address_list(), "partitions", "list", "--json"]);
        let partitions = listing.as_array().cloned().unwrap_or_default();
        let one_leader_each = !partitions.is_empty()
            && partitions.iter().all(|p| {
                let replicas = p["replicas"].as_array().cloned().unwrap_or_default();
                replicas.len() == 3 && replicas.iter().filter(|r| r["mode"] == "Leader").count() == 1
            });
        let leaders: HashSet<String> = partitions
            .iter()
            .filter_map(|p| p["leader"].as_str().map(str::to_owned))
            .collect();
        if one_leader_each && leaders.len() == 3 {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(listing);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn survivors_acknowledged(progress: &[Arc<NodeProgress>], victim: usize) -> u64 {
    progress
        .iter()
        .enumerate()
        .filter(|(node, _)| *node != victim)
        .map(|(_, p)| p.acknowledged.load(Ordering::Relaxed))
        .sum()
}

/// Waits until the writers through the surviving nodes acknowledged `target` adds in all.
async fn wait_for_progress(progress: &[Arc<NodeProgress>], victim: usize, target: u64) -> bool {
    let deadline = tokio::time::Instant::now() + RESUME_WITHIN;
    while tokio::time::Instant::now() < deadline {
        if survivors_acknowledged(progress, victim) >= target {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn logs(nodes: &[TestNode]) -> String {
    nodes
        .iter()
        .map(|node| {
            format!(
                "--- {}\n{}",
                node.fabric_url(),
                restate_cluster_tests::tail(&node.log(), 40)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
