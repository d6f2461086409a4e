//! Chaos: a 3-node cluster under random faults — kill -9 and restart, SIGSTOP/SIGCONT
//! pauses, network partitions of one node, trims just below a log's tail — while
//! `restate-bench log --verify` appends through every node and compare-and-swap clients
//! write metadata keys through every admin API, and clients add to counter objects through
//! every node's ingress while workflows started before the faults are completed during them.
//! Afterwards: every acknowledged record is read back exactly once, in order, the metadata
//! history is linearizable, every counter holds its acknowledged adds (and at most the adds
//! whose outcome was unknown on top), and every workflow completed with its result.
//!
//! `RESTATE_CHAOS_DURATION` (default `45s`) and `RESTATE_CHAOS_SEED` (default random) set
//! the run; `benches/chaos.sh --duration 10m` runs it long. One fault at a time, so a
//! majority is always up.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use restate_cluster_tests::chaos::{MetadataHistory, NetworkFaults};
use restate_cluster_tests::linearizability::{self, Verdict};
use restate_cluster_tests::servers::SdkService;
use restate_cluster_tests::{Cluster, MetadataHttp, PutOutcome, TestNode, binary, example_config, logs};
use serde_json::json;

use crate::invocations::{Client, add_until_stopped};

const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The log that is also trimmed just below its tail now and then.
const TRIMMED_LOG: u32 = 1009;
/// A log that is never trimmed: every record of the run is checked.
const KEPT_LOG: u32 = 1010;
/// Appends that tell whether the cluster serves again.
const PROBE_LOG: u32 = 1011;
const KEYS: usize = 3;
const CLIENTS_PER_KEY: usize = 2;
/// Workflows started before the faults, whose promise is resolved during them.
const WORKFLOWS: usize = 4;

fn duration_from_env() -> Duration {
    let text = std::env::var("RESTATE_CHAOS_DURATION").unwrap_or_else(|_| "45s".into());
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let value: u64 = number
        .parse()
        .unwrap_or_else(|_| panic!("RESTATE_CHAOS_DURATION `{text}`: expected e.g. 45s or 10m"));
    match unit {
        "" | "s" => Duration::from_secs(value),
        "m" => Duration::from_secs(value * 60),
        other => panic!("RESTATE_CHAOS_DURATION `{text}`: unknown unit `{other}` (s or m)"),
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill,
    Pause,
    Partition,
    TrimNearTail,
}

#[tokio::test]
async fn chaos_keeps_acknowledged_records_and_linearizable_metadata() -> anyhow::Result<()> {
    let duration = duration_from_env();
    let seed: u64 = std::env::var("RESTATE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("chaos: seed {seed} (RESTATE_CHAOS_SEED={seed} repeats the fault schedule), {duration:?}");
    let mut rng = StdRng::seed_from_u64(seed);
    let network = match NetworkFaults::new(3) {
        Ok(network) => Some(network),
        Err(reason) => {
            eprintln!("chaos: no network partitions in this run: {reason}");
            None
        }
    };
    let mut cluster = Cluster::start(3, Some(example_config("cluster-3/n1.toml")), |i, spec| {
        let spec = spec.env("RESTATE_AUTO_PROVISION", "true");
        match &network {
            Some(network) => spec.cgroup(network.cgroup(i)),
            None => spec,
        }
    });
    cluster.wait_all_alive(START_TIMEOUT).await?;
    let fabric_urls: Vec<String> = cluster.nodes.iter().map(TestNode::fabric_url).collect();
    let admin_urls: Vec<String> = cluster.nodes.iter().map(TestNode::admin_url).collect();
    let fabric_ports: Vec<u16> = cluster.nodes.iter().map(|n| n.ports.fabric).collect();

    // The log writers: separate processes, each judged by its own read-back.
    let mut benches = Vec::new();
    for log_id in [TRIMMED_LOG, KEPT_LOG] {
        let out = cluster.dir.path().join(format!("bench-{log_id}.out"));
        let process = Command::new(binary("restate-bench"))
            .args([
                "log",
                "--address",
                &fabric_urls.join(","),
                "--log-id",
                &log_id.to_string(),
            ])
            .args(["--duration", &format!("{}s", duration.as_secs() + 5)])
            .args(["--concurrency", "2", "--verify"])
            .stdout(Stdio::from(std::fs::File::create(&out)?))
            .stderr(Stdio::inherit())
            .spawn()?;
        benches.push((log_id, process, out));
    }

    // The invocation workload: one counter per node, added to through that node's ingress.
    let effects = cluster.dir.path().join("side-effects.txt");
    let service = SdkService::typescript_scenarios(&effects);
    let ingress: Vec<Arc<Client>> = cluster.nodes.iter().map(|n| Arc::new(Client::new(n))).collect();
    ingress[0].register(json!({"uri": service.uri})).await?;
    for client in &ingress {
        client.eventually("Counter/warmup/add", json!(0), json!(0)).await?;
    }
    for workflow in 0..WORKFLOWS {
        let started = ingress[workflow % 3]
            .call(
                &format!("Signup/chaos-{workflow}/run/send"),
                json!(format!("w{workflow}")),
            )
            .await?;
        anyhow::ensure!(started.status == 202, "workflow {workflow}: {}", started.body);
    }
    let stop_adding = Arc::new(AtomicBool::new(false));
    let mut adders = Vec::new();
    for (node, client) in ingress.iter().enumerate() {
        let (client, stop) = (client.clone(), stop_adding.clone());
        adders.push(tokio::spawn(async move {
            let key = format!("chaos-{node}");
            let (sent, acknowledged) = add_until_stopped(&client, &key, &stop, None).await;
            (key, sent, acknowledged)
        }));
    }

    // The metadata clients.
    let history = MetadataHistory::new(Duration::from_secs(5));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for key in 0..KEYS {
        for client in 0..CLIENTS_PER_KEY {
            let (history, stop, urls) = (history.clone(), stop.clone(), admin_urls.clone());
            let mut rng = StdRng::seed_from_u64(seed ^ (key * 16 + client) as u64);
            clients.push(tokio::spawn(async move {
                let key = format!("chaos-{key}");
                let mut written = 0u64;
                let mut sequence = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let url = &urls[rng.random_range(0..urls.len())];
                    let Some(seen) = history.read(url, &key).await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    sequence += 1;
                    let expected = seen.map_or(0, |r| r.version);
                    let url = &urls[rng.random_range(0..urls.len())];
                    let value = format!("c{client}-{sequence}");
                    if history.cas(url, &key, expected, value).await == linearizability::Outcome::Written {
                        written += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(rng.random_range(10..40))).await;
                }
                written
            }));
        }
    }

    // Each workflow's promise is resolved at a random moment during the faults, through a
    // node chosen at random (another one while that one does not answer).
    let mut resolvers = Vec::new();
    for workflow in 0..WORKFLOWS {
        let clients = ingress.clone();
        let delay = Duration::from_millis(rng.random_range(0..duration.as_millis().max(1) as u64));
        let first = rng.random_range(0..3);
        resolvers.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let deadline = Instant::now() + START_TIMEOUT * 2;
            let mut attempt = first;
            loop {
                let answer = clients[attempt % 3]
                    .call(
                        &format!("Signup/chaos-{workflow}/submitCode"),
                        json!(format!("code-{workflow}")),
                    )
                    .await;
                // Resolved; or the handler refused a second resolution of the same code.
                if let Ok(answer) = &answer
                    && (answer.status == 200 || answer.header("x-restate-error-source") == Some("invocation"))
                {
                    return Ok(());
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "workflow {workflow}: the code was never accepted: {answer:?}"
                );
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }

    // The faults, one at a time.
    let started = Instant::now();
    let mut injected: Vec<(f64, &'static str, usize)> = Vec::new();
    tokio::time::sleep(Duration::from_secs(2)).await;
    while started.elapsed() < duration {
        let node = rng.random_range(0..3);
        let kind = match rng.random_range(0..4) {
            0 => Fault::Kill,
            1 => Fault::Pause,
            2 if network.is_some() => Fault::Partition,
            2 => Fault::Pause,
            _ => Fault::TrimNearTail,
        };
        let hold = Duration::from_millis(rng.random_range(1000..4000));
        let at = started.elapsed().as_secs_f64();
        match kind {
            Fault::Kill => {
                injected.push((at, "kill", node));
                cluster.nodes[node].kill();
                tokio::time::sleep(hold).await;
                cluster.nodes[node].restart();
                cluster.nodes[node].wait_alive(START_TIMEOUT).await?;
            }
            Fault::Pause => {
                injected.push((at, "pause", node));
                cluster.nodes[node].signal(Signal::SIGSTOP);
                tokio::time::sleep(hold).await;
                cluster.nodes[node].signal(Signal::SIGCONT);
            }
            Fault::Partition => {
                injected.push((at, "partition", node));
                if let Some(network) = &network {
                    network.partition(node, &fabric_ports).map_err(anyhow::Error::msg)?;
                    tokio::time::sleep(hold).await;
                    network.heal().map_err(anyhow::Error::msg)?;
                }
            }
            Fault::TrimNearTail => {
                injected.push((at, "trim", node));
                if let Ok(tail) = logs::find_tail(&fabric_urls[node], TRIMMED_LOG).await
                    && tail > 3
                {
                    let _ = logs::trim(&fabric_urls[node], TRIMMED_LOG, tail - 2).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
    }

    // Faults stop: how long until every node serves metadata writes and log appends again.
    let healed = Instant::now();
    let http = MetadataHttp::new();
    for (i, node) in cluster.nodes.iter_mut().enumerate() {
        node.signal(Signal::SIGCONT);
        if !node.is_running() {
            node.restart();
        }
        loop {
            let put = http
                .put(
                    &admin_urls[i],
                    &format!("recovered-{i}"),
                    "does-not-exist",
                    1,
                    b"ok".to_vec(),
                )
                .await;
            let appended = logs::append(&fabric_urls[i], PROBE_LOG, vec![b"ok".to_vec()]).await;
            if matches!(put, PutOutcome::Written | PutOutcome::PreconditionFailed(_)) && appended.is_ok() {
                break;
            }
            anyhow::ensure!(
                healed.elapsed() < START_TIMEOUT,
                "node-{} does not serve again: {put:?} / {appended:?}",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let recovered = healed.elapsed();

    stop.store(true, Ordering::Relaxed);
    let mut written = 0;
    for client in clients {
        written += client.await?;
    }
    let bench_deadline = Instant::now() + Duration::from_secs(180);
    let mut log_verdicts = serde_json::Map::new();
    let mut bench_failures = Vec::new();
    for (log_id, mut process, out) in benches {
        let status = loop {
            if let Some(status) = process.try_wait()? {
                break status;
            }
            anyhow::ensure!(
                Instant::now() < bench_deadline,
                "restate-bench (log {log_id}) did not finish"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let output = std::fs::read_to_string(&out)?;
        let verdict: serde_json::Value = output
            .lines()
            .last()
            .and_then(|line| serde_json::from_str(line).ok())
            .unwrap_or_else(|| panic!("restate-bench (log {log_id}) printed no verdict ({status}):\n{output}"));
        if !status.success() || verdict["verdict"] != "ok" || verdict["acknowledged"].as_u64() == Some(0) {
            bench_failures.push(format!("log {log_id}: {status}: {verdict}"));
        }
        log_verdicts.insert(format!("log-{log_id}"), verdict);
    }

    // Every counter holds its acknowledged adds, plus at most those with an unknown outcome,
    // read through every node; every workflow completed once with its result.
    stop_adding.store(true, Ordering::Relaxed);
    let (mut adds_acknowledged, mut adds_unknown) = (0, 0);
    for adder in adders {
        let (key, sent, acknowledged) = adder.await?;
        adds_acknowledged += acknowledged;
        adds_unknown += sent - acknowledged;
        for client in &ingress {
            let total = read_counter(client, &key).await?;
            anyhow::ensure!(
                acknowledged <= total && total <= sent,
                "counter {key}: total {total}, acknowledged {acknowledged}, sent {sent}"
            );
        }
    }
    for resolver in resolvers {
        resolver.await??;
    }
    for workflow in 0..WORKFLOWS {
        let client = &ingress[workflow % 3];
        let answer = client
            .ingress_get(&format!("restate/workflow/Signup/chaos-{workflow}/attach"))
            .await?;
        anyhow::ensure!(
            answer.status == 200 && answer.json() == json!(format!("welcome w{workflow} code-{workflow}")),
            "workflow {workflow}: {} {}",
            answer.status,
            answer.body
        );
    }

    let events = history.events();
    let metadata_verdict = linearizability::check(&events, 20_000_000);
    let by_kind: serde_json::Map<String, serde_json::Value> = ["kill", "pause", "partition", "trim"]
        .iter()
        .map(|k| (k.to_string(), injected.iter().filter(|f| f.1 == *k).count().into()))
        .collect();
    let summary = serde_json::json!({
        "seed": seed,
        "faults": injected.len(),
        "by_kind": by_kind,
        "logs": log_verdicts,
        "metadata": {
            "operations": events.len(),
            "acknowledged_writes": written,
            "verdict": format!("{metadata_verdict:?}"),
        },
        "recovered_ms": recovered.as_millis() as u64,
        "invocations": {
            "adds_acknowledged": adds_acknowledged,
            "adds_unknown_outcome": adds_unknown,
            "workflows_completed": WORKFLOWS,
        },
    });
    eprintln!("chaos: faults {injected:?}");
    println!("{summary}");
    assert!(bench_failures.is_empty(), "the log check failed: {bench_failures:?}");
    assert_eq!(metadata_verdict, Verdict::Linearizable, "{summary}");
    assert!(written > 0, "{summary}");
    assert!(adds_acknowledged > 0, "{summary}");
    Ok(())
}

/// A counter's total, read until a node answers (a partition may still be moving).
async fn read_counter(client: &Client, key: &str) -> anyhow::Result<u64> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let answer = client.call(&format!("Counter/{key}/get"), json!(null)).await?;
        if answer.status == 200 {
            return Ok(answer.json().as_u64().unwrap_or_default());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "counter {key}: {} {}",
            answer.status,
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
