//! Partitions across three nodes: `kill -9` each node in turn and pause one with `SIGSTOP`
//! while clients add to counters through every node's ingress. Calls through the surviving
//! nodes keep succeeding, nothing acknowledged is lost or applied twice, and work started
//! before the faults (sleeping invocations, a delayed send) completes once after them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use restate_cluster_tests::chaos::NetworkFaults;
use restate_cluster_tests::servers::SdkService;
use restate_cluster_tests::{Cluster, MetadataHttp, TestNode, example_config, restatectl_json};
use serde_json::json;

use crate::invocations::{Client, START_TIMEOUT, add_until_stopped, side_effects, wait_for_side_effect};

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
                let (sent, acknowledged) = add_until_stopped(&client, &key, &stop, Some(&progress.acknowledged)).await;
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

/// A leader cut off from the other nodes (nftables drops what it sends to their fabric ports
/// and what they send to its) while its invocation runs one journaled step after another.
/// The others take over; the cut-off leader stops running the invocation before they start it
/// (its lease runs out before their failover silence), so no two executions ever run a step at
/// the same time, and the invocation completes once with every step's result.
#[tokio::test]
async fn a_cut_off_leader_stops_its_invocation_before_another_node_runs_it() -> anyhow::Result<()> {
    let network = match NetworkFaults::new(3) {
        Ok(network) => network,
        Err(reason) => {
            eprintln!("not run: this machine cannot cut a node off ({reason})");
            return Ok(());
        }
    };
    let mut cluster = Cluster::start(3, Some(example_config("cluster-3/n1.toml")), |i, spec| {
        spec.env("RESTATE_AUTO_PROVISION", "true").cgroup(network.cgroup(i))
    });
    cluster.wait_all_alive(START_TIMEOUT).await?;
    let effects = cluster.dir.path().join("side-effects.txt");
    let service = SdkService::typescript_scenarios(&effects);
    let clients: Vec<Client> = cluster.nodes.iter().map(Client::new).collect();
    clients[0].register(json!({"uri": service.uri})).await?;
    for client in &clients {
        client.eventually("Counter/warmup/add", json!(0), json!(0)).await?;
    }
    wait_for_balanced_leaders(&cluster)
        .await
        .map_err(|listing| anyhow::anyhow!("leaders did not spread: {listing}"))?;

    const STEPS: u64 = 40;
    let started = clients[0]
        .call("Runner/steps/send", json!({"tag": "cut", "steps": STEPS, "ms": 100}))
        .await?;
    assert_eq!(started.status, 202, "{}", started.body);
    let id = invocation_id(&started.json());
    let names = node_names(&cluster);
    let (partition, leader) = leader_of_invocation(&cluster, &names, &id).await?;
    wait_for_line(&effects, "cut 3 end").await?;

    let fabric_ports: Vec<u16> = cluster.nodes.iter().map(|n| n.ports.fabric).collect();
    network.partition(leader, &fabric_ports).map_err(anyhow::Error::msg)?;
    // Another node takes the partition over while the leader is cut off.
    let others: Vec<String> = (0..3)
        .filter(|i| *i != leader)
        .map(|i| cluster.nodes[i].fabric_url())
        .collect();
    let deadline = tokio::time::Instant::now() + RESUME_WITHIN;
    let old_leader = format!("node-{}", leader + 1);
    loop {
        // While the metadata servers left elect a leader, restatectl may time out: ask again.
        let output = restate_cluster_tests::restatectl(&["-s", &others.join(","), "partitions", "list", "--json"]);
        let listing: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        let now = listing
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["partition_id"] == partition))
            .and_then(|p| p["leader"].as_str().map(str::to_owned));
        if now.is_some_and(|node| names.get(&node).is_some_and(|name| *name != old_leader)) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no other node took partition {partition} over: {listing}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    network.heal().map_err(anyhow::Error::msg)?;

    let output = wait_for_output(&clients[(leader + 1) % 3], &id).await?;
    assert_eq!(output, json!(STEPS));
    // Every execution of a step, in the order they began: none began before the one before
    // it ended, whichever node ran them.
    let mut executions = step_executions(&effects, "cut");
    executions.sort_by_key(|e| (e.1, e.2));
    for pair in executions.windows(2) {
        let ((step_a, began_a, ended_a), (step_b, began_b, _)) = (pair[0], pair[1]);
        assert!(
            began_b >= ended_a,
            "step {step_b} began at {began_b} while step {step_a} (begun {began_a}) ran until {ended_a}: two nodes ran the invocation at once"
        );
    }
    let ran: HashSet<u64> = executions.iter().map(|e| e.0).collect();
    assert_eq!(ran.len() as u64, STEPS, "{executions:?}");
    assert!(
        executions.len() as u64 <= STEPS + 2,
        "steps ran again more than the one or two in flight at the cut: {executions:?}"
    );
    Ok(())
}

/// The partition an invocation belongs to and the index of the node leading it.
async fn leader_of_invocation(
    cluster: &Cluster,
    names: &HashMap<String, String>,
    id: &str,
) -> anyhow::Result<(u64, usize)> {
    let key = id
        .parse::<restate_types::InvocationId>()
        .map_err(|e| anyhow::anyhow!("bad invocation id {id}: {e}"))?
        .partition_key;
    let (_, table) = MetadataHttp::new()
        .get(&cluster.nodes[0].admin_url(), "partition_table")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no partition table"))?;
    let table: restate_types::metadata::PartitionTable = serde_json::from_slice(&table)?;
    let partition = table
        .partitions
        .iter()
        .find(|p| (p.key_range_start..=p.key_range_end).contains(&key))
        .map(|p| u64::from(p.id))
        .ok_or_else(|| anyhow::anyhow!("no partition owns key {key}"))?;
    let listing = restatectl_json(&["-s", &cluster.address_list(), "partitions", "list", "--json"]);
    let leader = listing
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["partition_id"] == partition))
        .and_then(|p| p["leader"].as_str())
        .and_then(|node| names.get(node))
        .and_then(|name| name.strip_prefix("node-")?.parse::<usize>().ok())
        .ok_or_else(|| anyhow::anyhow!("partition {partition} has no leader: {listing}"))?;
    Ok((partition, leader - 1))
}

/// The name (`node-2`) of each node by id (`N2`).
fn node_names(cluster: &Cluster) -> HashMap<String, String> {
    let nodes = restatectl_json(&["-s", &cluster.address_list(), "nodes", "list", "--json"]);
    nodes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| Some((n["node_id"].as_str()?.to_owned(), n["name"].as_str()?.to_owned())))
        .collect()
}

async fn wait_for_line(effects: &std::path::Path, prefix: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !side_effects(effects).keys().any(|line| line.starts_with(prefix)) {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no line {prefix}… appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// (step, began, ended) of every execution of a step of `Runner/steps` tagged `tag`, in file
/// order; an execution that never ended counts as running until now.
fn step_executions(effects: &std::path::Path, tag: &str) -> Vec<(u64, u64, u64)> {
    let mut open: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut done = Vec::new();
    for line in std::fs::read_to_string(effects).unwrap_or_default().lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let [line_tag, step, what, at] = fields[..] else {
            continue;
        };
        let (Ok(step), Ok(at)) = (step.parse::<u64>(), at.parse::<u64>()) else {
            continue;
        };
        if line_tag != tag {
            continue;
        }
        match what {
            "begin" => open.entry(step).or_default().push(at),
            "end" => {
                if let Some(began) = open.get_mut(&step).and_then(|b| (!b.is_empty()).then(|| b.remove(0))) {
                    done.push((step, began, at));
                }
            }
            _ => {}
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    for (step, begun) in open {
        done.extend(begun.into_iter().map(|began| (step, began, now)));
    }
    done
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
                let placed = p["replica_set"].as_array().map_or(3, Vec::len);
                replicas.len() == placed && replicas.iter().filter(|r| r["mode"] == "Leader").count() == 1
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

/// Two of three nodes killed: the log cannot store two copies of anything, so calls through
/// the survivor are refused with the reason (and that retrying is safe) instead of waiting out
/// the append timeout; once the nodes are back, calls succeed again.
#[tokio::test]
async fn with_two_of_three_nodes_down_calls_are_refused_at_once_with_the_reason() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3, Some(example_config("cluster-3/n1.toml")), |_, spec| {
        spec.env("RESTATE_AUTO_PROVISION", "true")
    });
    cluster.wait_all_alive(START_TIMEOUT).await?;
    let effects = cluster.dir.path().join("side-effects.txt");
    let service = SdkService::typescript_scenarios(&effects);
    let survivor = Client::new(&cluster.nodes[0]);
    survivor.register(json!({"uri": service.uri})).await?;
    // Wait with a read: an add retried until it answers 1 never gets there once a failed
    // attempt (its outcome unknown while the new cluster settles its leaders) was stored.
    survivor.eventually("Counter/q/get", json!(null), json!(0)).await?;
    let mut base = json!(null);
    for _ in 0..50 {
        let added = survivor.call("Counter/q/add", json!(1)).await?;
        if added.status == 200 {
            base = added.json();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let base = base
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("Counter/q/add never answered 200"))?;

    cluster.nodes[1].kill();
    cluster.nodes[2].kill();
    // The first call may store a copy before the failure shows: its outcome is then unknown
    // (and it says so). The next one stores nothing and is refused.
    let first = survivor.call("Counter/q/add", json!(1)).await;
    let first = match first {
        Ok(first) => first,
        Err(error) => anyhow::bail!("{error}: {}", cluster.nodes[0].log()),
    };
    println!("first: {} {}", first.status, first.body);
    let first_unknown = first.status == 500 && first.body.contains("it is unknown whether");
    assert!(first.status == 503 || first_unknown, "{} {}", first.status, first.body);
    let started = std::time::Instant::now();
    let refused = survivor.call("Counter/q/add", json!(1)).await;
    let refused = match refused {
        Ok(refused) => refused,
        Err(error) => anyhow::bail!("{error}: {}", cluster.nodes[0].log()),
    };
    println!("refused after {:?}: {}", started.elapsed(), refused.body);
    assert_eq!(refused.status, 503, "{}", refused.body);
    // The reason: the log has too few log-servers left, or (when the key's partition is
    // placed on the two nodes that are down) no live node runs a replica of it (known dead
    // already, or refusing the connection).
    let log_quorum_lost = refused.body.contains("log-servers are alive");
    let replicas_gone = refused.body.contains("knows no live worker node")
        || refused.body.contains("no worker node that does answered");
    assert!(
        (log_quorum_lost || replicas_gone) && refused.body.contains("retrying is safe"),
        "{}",
        refused.body
    );

    cluster.nodes[1].restart();
    cluster.nodes[2].restart();
    cluster.wait_all_alive(START_TIMEOUT).await?;
    let deadline = tokio::time::Instant::now() + RESUME_WITHIN * 2;
    loop {
        let answer = survivor.call("Counter/q/get", json!(null)).await?;
        if answer.status == 200 {
            let total = answer.json();
            assert!(
                total == json!(base) || (first_unknown && total == json!(base + 1)),
                "the refused add was not stored: {total} (before the faults: {base})"
            );
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "calls did not succeed again: {} {}",
            answer.status,
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
