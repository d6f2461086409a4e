//! Bifrost with real processes: the local loglet across kill -9, the replicated loglet while
//! nodes (including the sequencer's) are killed, and trims.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use restate_cluster_tests::{
    Cluster, Entry, NodeSpec, Ports, TestDir, TestNode, example_config, logs, restatectl, restatectl_json,
};

const START_TIMEOUT: Duration = Duration::from_secs(60);

fn records(entries: &[Entry]) -> Vec<(u64, Vec<u8>)> {
    entries
        .iter()
        .filter_map(|e| match e {
            Entry::Record(lsn, payload) => Some((*lsn, payload.clone())),
            Entry::TrimGap(..) => None,
        })
        .collect()
}

#[tokio::test]
async fn local_loglet_keeps_every_acknowledged_record_across_kill_9() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let spec = NodeSpec::new("solo")
        .config_file(example_config("single-node.toml"))
        .env("RESTATE_BIFROST__DEFAULT_PROVIDER", "local");
    let mut node = TestNode::start(dir.path(), spec, Ports::free());
    node.wait_alive(START_TIMEOUT).await?;
    let url = node.fabric_url();
    let follower = logs::Follower::start(&url, 1003, 1).await?;

    // 10 000 records from 8 concurrent appenders, 25 per append.
    let mut tasks = Vec::new();
    for writer in 0..8u32 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for batch in 0..50u32 {
                let payloads: Vec<Vec<u8>> = (0..25)
                    .map(|i| format!("w{writer}-b{batch}-r{i}").into_bytes())
                    .collect();
                let first = logs::append(&url, 1003, payloads.clone()).await?;
                for (i, payload) in payloads.into_iter().enumerate() {
                    acknowledged.push((first + i as u64, payload));
                }
            }
            anyhow::Ok(acknowledged)
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await??);
    }
    assert_eq!(acknowledged.len(), 10_000);
    acknowledged.sort();
    let followed = records(&follower.wait_for(10_000, Duration::from_secs(20)).await?);
    assert_eq!(followed, acknowledged, "the follower saw every record once, in order");
    drop(follower);

    node.kill();
    node.restart();
    node.wait_alive(START_TIMEOUT).await?;
    let read = records(&logs::read_all(&url, 1003, 1).await?);
    assert_eq!(read.len(), 10_000, "every acknowledged record reads back");
    assert_eq!(read, acknowledged, "in LSN order, with the acknowledged payloads");
    let listed = restatectl_json(&["-s", &url, "logs", "list", "--json"]);
    assert_eq!(listed[0]["segments"][0]["kind"], "local", "{listed}");
    Ok(())
}

/// A writer of unique payloads through any alive node; counts what was acknowledged.
struct Writer {
    urls: Vec<String>,
    next_url: usize,
    sequence: u64,
    acknowledged: Vec<Vec<u8>>,
    failed: u64,
}

impl Writer {
    fn new(urls: Vec<String>) -> Self {
        Self {
            urls,
            next_url: 0,
            sequence: 0,
            acknowledged: Vec::new(),
            failed: 0,
        }
    }

    async fn run_for(&mut self, duration: Duration, skip: &HashSet<usize>) {
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            while skip.contains(&(self.next_url % self.urls.len())) {
                self.next_url += 1;
            }
            let url = self.urls[self.next_url % self.urls.len()].clone();
            self.sequence += 1;
            let payload = format!("record-{}", self.sequence).into_bytes();
            match logs::append(&url, 1007, vec![payload.clone()]).await {
                Ok(_) => self.acknowledged.push(payload),
                Err(_) => {
                    // Unknown or failed: this payload may or may not be in the log.
                    self.failed += 1;
                    self.next_url += 1;
                }
            }
        }
    }
}

async fn verify(url: &str, writer: &Writer) -> anyhow::Result<()> {
    let read = records(&logs::read_all(url, 1007, 1).await?);
    for (i, (lsn, _)) in read.iter().enumerate() {
        assert_eq!(*lsn, i as u64 + 1, "the log is gapless");
    }
    let mut seen = HashSet::new();
    for (lsn, payload) in &read {
        assert!(seen.insert(payload.clone()), "record at {lsn} appears twice");
    }
    let positions: Vec<usize> = writer
        .acknowledged
        .iter()
        .map(|payload| {
            read.iter()
                .position(|(_, p)| p == payload)
                .unwrap_or_else(|| panic!("acknowledged {} is missing", String::from_utf8_lossy(payload)))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "acknowledged records keep their order"
    );
    Ok(())
}

async fn replicated_survives_losing(victim_is_sequencer: bool) -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3, Some(example_config("cluster-3/n1.toml")), |_, spec| {
        spec.env("RESTATE_AUTO_PROVISION", "true")
    });
    cluster.wait_all_alive(START_TIMEOUT).await?;
    let urls: Vec<String> = cluster.nodes.iter().map(TestNode::fabric_url).collect();
    let mut writer = Writer::new(urls.clone());
    writer.run_for(Duration::from_secs(2), &HashSet::new()).await;
    let described = restatectl_json(&["-s", &cluster.address_list(), "logs", "describe", "1007", "--json"]);
    assert_eq!(described["segments"][0]["replication"], "{node: 2}", "{described}");
    let sequencer_index = tail_sequencer(&cluster, 1007);
    let victim = if victim_is_sequencer {
        sequencer_index
    } else {
        (sequencer_index + 1) % 3
    };

    let survivor = (victim + 1) % 3;
    let follower = logs::Follower::start(&urls[survivor], 1007, 1).await?;
    cluster.nodes[victim].kill();
    let before = writer.acknowledged.len();
    writer.run_for(Duration::from_secs(6), &HashSet::from([victim])).await;
    assert!(
        writer.acknowledged.len() > before + 10,
        "appends must continue while a node is down ({} → {})",
        before,
        writer.acknowledged.len()
    );
    if victim_is_sequencer {
        let described = restatectl_json(&["-s", &urls[(victim + 1) % 3], "logs", "describe", "1007", "--json"]);
        assert!(
            described["segments"].as_array().map(Vec::len) > Some(1),
            "the chain gets a new segment with a new sequencer: {described}"
        );
    }
    verify(&urls[survivor], &writer).await?;
    let read = logs::read_all(&urls[survivor], 1007, 1).await?;
    let followed = follower.wait_for(read.len(), Duration::from_secs(20)).await?;
    assert_eq!(
        followed[..read.len()],
        read[..],
        "a follower through a surviving node sees the same log"
    );

    // The restarted node reads the whole log and takes part again.
    cluster.nodes[victim].restart();
    cluster.nodes[victim].wait_alive(START_TIMEOUT).await?;
    writer.run_for(Duration::from_secs(1), &HashSet::new()).await;
    verify(&urls[victim], &writer).await?;
    Ok(())
}

/// The index in `cluster.nodes` of the node running the sequencer of the log's tail segment.
fn tail_sequencer(cluster: &Cluster, log_id: u32) -> usize {
    let described = restatectl_json(&[
        "-s",
        &cluster.address_list(),
        "logs",
        "describe",
        &log_id.to_string(),
        "--json",
    ]);
    let segments = described["segments"].as_array().cloned().unwrap_or_default();
    let sequencer = segments
        .last()
        .and_then(|s| s["sequencer"].as_str())
        .unwrap_or_default()
        .to_owned();
    let sequencer_id = sequencer.split(':').next().unwrap_or_default().to_owned();
    let nodes = restatectl_json(&["-s", &cluster.address_list(), "nodes", "list", "--json"]);
    let sequencer_name = nodes
        .as_array()
        .and_then(|n| n.iter().find(|n| n["node_id"] == sequencer_id.as_str()))
        .and_then(|n| n["name"].as_str())
        .unwrap_or_default()
        .to_owned();
    cluster
        .nodes
        .iter()
        .position(|n| n.name == sequencer_name)
        .unwrap_or_else(|| panic!("the sequencer {sequencer} is one of the nodes: {described}"))
}

/// A trim just below the tail, then kill -9 of the sequencer's node: the seal must neither
/// end the segment below acknowledged (trimmed) records nor start the next one below the
/// trim point; a node that cached the chain before the trim reads a trim gap, not an error.
#[tokio::test]
async fn trim_near_the_tail_then_sequencer_failover_keeps_every_record() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3, Some(example_config("cluster-3/n1.toml")), |_, spec| {
        spec.env("RESTATE_AUTO_PROVISION", "true")
    });
    cluster.wait_all_alive(START_TIMEOUT).await?;
    let urls: Vec<String> = cluster.nodes.iter().map(TestNode::fabric_url).collect();
    let mut writer = Writer::new(urls.clone());
    writer.run_for(Duration::from_secs(2), &HashSet::new()).await;
    let victim = tail_sequencer(&cluster, 1007);
    let reader = (victim + 1) % 3;
    let trimmer = (victim + 2) % 3;
    // The reader caches the chain as it is before the trim.
    let before_trim = logs::read_all(&urls[reader], 1007, 1).await?;
    let old_tail = before_trim.last().map_or(1, Entry::next_lsn);
    let trim_point = logs::trim(&urls[trimmer], 1007, old_tail - 1).await?;
    assert_eq!(trim_point, old_tail - 1);
    cluster.nodes[victim].kill();
    let before = writer.acknowledged.len();
    writer.run_for(Duration::from_secs(5), &HashSet::from([victim])).await;
    assert!(
        writer.acknowledged.len() > before + 10,
        "appends continue after the failover"
    );

    let described = restatectl_json(&["-s", &urls[reader], "logs", "describe", "1007", "--json"]);
    let segments = described["segments"].as_array().cloned().unwrap_or_default();
    assert!(segments.len() > 1, "a new segment: {described}");
    for segment in &segments[1..] {
        assert!(
            segment["base_lsn"].as_u64() >= Some(old_tail),
            "a later segment starts at or after the old tail {old_tail}: {described}"
        );
    }
    assert!(described["tail_lsn"].as_u64() > Some(trim_point), "{described}");
    let entries = logs::read_all(&urls[reader], 1007, 1).await?;
    assert_eq!(
        entries[0],
        Entry::TrimGap(1, trim_point),
        "{:?}",
        &entries[..2.min(entries.len())]
    );
    let read = records(&entries);
    assert_eq!(read[0].0, trim_point, "the record at the trim point is kept");
    for (i, (lsn, _)) in read.iter().enumerate() {
        assert_eq!(*lsn, trim_point + i as u64, "gapless after the trim point");
    }
    let payloads: HashSet<&Vec<u8>> = read.iter().map(|(_, p)| p).collect();
    assert_eq!(payloads.len(), read.len(), "no record twice");
    for payload in &writer.acknowledged[before..] {
        assert!(
            payloads.contains(payload),
            "acknowledged {} is missing",
            String::from_utf8_lossy(payload)
        );
    }
    Ok(())
}

#[tokio::test]
async fn replicated_log_survives_losing_the_sequencer() -> anyhow::Result<()> {
    replicated_survives_losing(true).await
}

#[tokio::test]
async fn replicated_log_survives_losing_a_log_server() -> anyhow::Result<()> {
    replicated_survives_losing(false).await
}

#[tokio::test]
async fn trimmed_records_read_as_a_trim_gap() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let mut node = TestNode::start(dir.path(), NodeSpec::new("trimmer"), Ports::free());
    node.wait_alive(START_TIMEOUT).await?;
    let url = node.fabric_url();
    let payloads: Vec<Vec<u8>> = (1..=100).map(|i| format!("r{i}").into_bytes()).collect();
    assert_eq!(logs::append(&url, 1001, payloads).await?, 1);
    let output = restatectl(&["-s", &url, "logs", "trim", "1001", "--trim-point", "51"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // Trim points only move forward.
    assert_eq!(logs::trim(&url, 1001, 20).await?, 51);
    let entries = logs::read_all(&url, 1001, 1).await?;
    assert_eq!(entries[0], Entry::TrimGap(1, 51));
    assert_eq!(entries[1], Entry::Record(51, b"r51".to_vec()));
    assert_eq!(records(&entries).len(), 50);
    let listed = restatectl_json(&["-s", &url, "logs", "list", "--json"]);
    let trimmed = listed
        .as_array()
        .and_then(|logs| logs.iter().find(|l| l["log_id"] == 1001))
        .cloned()
        .unwrap_or_default();
    assert_eq!(trimmed["trim_point"], 51, "{listed}");
    Ok(())
}

#[tokio::test]
async fn appends_wait_for_enough_log_servers_and_say_why() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let spec = NodeSpec::new("alone")
        .env("RESTATE_DEFAULT_REPLICATION", "2")
        .env("RESTATE_BIFROST__APPEND_TIMEOUT", "2s");
    let mut node = TestNode::start(dir.path(), spec, Ports::free());
    node.wait_alive(START_TIMEOUT).await?;
    let error = logs::append(&node.fabric_url(), 1001, vec![b"r".to_vec()])
        .await
        .expect_err("replication 2 cannot be met by one log-server");
    assert_eq!(error.code(), tonic::Code::Unavailable, "{error:?}");
    let message = error.message();
    assert!(
        message.contains("needs at least 2 read-write log-servers, but the cluster has 1"),
        "{message}"
    );
    assert!(message.contains("append-timeout"), "{message}");
    let log = node.log();
    assert!(
        log.contains("auto-provision: log replication {node: 2} needs at least 2 nodes with the log-server role"),
        "provisioning warns about the replication: {}",
        restate_cluster_tests::tail(&log, 20)
    );
    Ok(())
}

/// Appends until one gives the wanted outcome (the log-server follows a storage-state change
/// at its next metadata refresh).
async fn append_until(url: &str, want_success: bool) -> Result<u64, tonic::Status> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let outcome = logs::append(url, 1001, vec![b"probe".to_vec()]).await;
        if outcome.is_ok() == want_success || Instant::now() > deadline {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn read_only_storage_stops_new_records_until_set_back() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let spec = NodeSpec::new("keeper").env("RESTATE_BIFROST__APPEND_TIMEOUT", "5s");
    let mut node = TestNode::start(dir.path(), spec, Ports::free());
    node.wait_alive(START_TIMEOUT).await?;
    let url = node.fabric_url();
    assert_eq!(logs::append(&url, 1001, vec![b"before".to_vec()]).await?, 1);
    let set = |state: &str, force: bool| {
        let mut args = vec![
            "-s",
            &url,
            "nodes",
            "set-storage-state",
            "--nodes",
            "N1",
            "--storage-state",
            state,
        ];
        if force {
            args.push("--force");
        }
        restatectl(&args)
    };

    // The last read-write log-server is not taken away without --force.
    let refused = set("read-only", false);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("leaves 0 read-write log-server(s)") && stderr.contains("--force"),
        "{stderr}"
    );
    let refused = set("data-loss", false);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("set by the node itself"));
    let typo = set("readonly", false);
    assert!(String::from_utf8_lossy(&typo.stderr).contains("expected one of"));

    let forced = set("read-only", true);
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    assert!(String::from_utf8_lossy(&forced.stdout).contains("read-only"));
    let listed = restatectl_json(&["-s", &url, "nodes", "list", "--json"]);
    assert_eq!(listed[0]["storage_state"], "read-only", "{listed}");

    let error = append_until(&url, false)
        .await
        .expect_err("a read-only log-server takes no records");
    assert!(
        error.message().contains("read-write"),
        "the reason names the storage state: {error:?}"
    );
    // Records already stored stay readable.
    assert_eq!(
        records(&logs::read_all(&url, 1001, 1).await?)[0],
        (1, b"before".to_vec())
    );

    let restored = set("read-write", false);
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    let lsn = append_until(&url, true).await?;
    assert!(lsn > 1);
    Ok(())
}

#[tokio::test]
async fn a_follower_sees_records_as_they_are_committed_and_trim_gaps() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let mut node = TestNode::start(dir.path(), NodeSpec::new("follower"), Ports::free());
    node.wait_alive(START_TIMEOUT).await?;
    let url = node.fabric_url();
    // Following a log that does not exist yet waits for its first records.
    let follower = logs::Follower::start(&url, 1005, 1).await?;
    for batch in 0..3 {
        let payloads: Vec<Vec<u8>> = (0..10).map(|i| format!("b{batch}-r{i}").into_bytes()).collect();
        logs::append(&url, 1005, payloads).await?;
        let seen = follower.wait_for(10 * (batch + 1), Duration::from_secs(10)).await?;
        assert_eq!(seen.len(), 10 * (batch + 1), "nothing is seen twice: {seen:?}");
    }
    assert_eq!(follower.snapshot(), logs::read_all(&url, 1005, 1).await?);

    logs::trim(&url, 1005, 11).await?;
    let late = logs::Follower::start(&url, 1005, 1).await?;
    let seen = late.wait_for(21, Duration::from_secs(10)).await?;
    assert_eq!(
        seen[0],
        Entry::TrimGap(1, 11),
        "a follower from before the trim point sees the gap"
    );
    assert_eq!(seen[1], Entry::Record(11, b"b1-r0".to_vec()));
    let lsn = logs::append(&url, 1005, vec![b"after-trim".to_vec()]).await?;
    let seen = late.wait_for(22, Duration::from_secs(10)).await?;
    assert_eq!(seen[21], Entry::Record(lsn, b"after-trim".to_vec()));
    Ok(())
}

/// The sequencer's node is paused right after it acknowledged a record, and nothing is
/// appended after it: a follower through another node still sees that record while the node
/// stays paused (the record is committed, but the other nodes learn the segment's end only
/// from a seal, which a reader that finds the sequencer gone now makes itself).
#[tokio::test]
async fn a_follower_sees_the_last_record_of_a_paused_sequencer_with_nothing_appended_after_it() -> anyhow::Result<()> {
    const LOG: u32 = 1012;
    let mut cluster = Cluster::start(3, Some(example_config("cluster-3/n1.toml")), |_, spec| {
        spec.env("RESTATE_AUTO_PROVISION", "true")
    });
    cluster.wait_all_alive(START_TIMEOUT).await?;
    let urls: Vec<String> = cluster.nodes.iter().map(TestNode::fabric_url).collect();
    logs::append(&urls[0], LOG, vec![b"first".to_vec()]).await?;
    let sequencer = tail_sequencer(&cluster, LOG);
    let reader = (sequencer + 1) % 3;
    let follower = logs::Follower::start(&urls[reader], LOG, 1).await?;
    follower.wait_for(1, Duration::from_secs(20)).await?;

    let last = logs::append(&urls[sequencer], LOG, vec![b"last before the pause".to_vec()]).await?;
    cluster.nodes[sequencer].signal(nix::sys::signal::Signal::SIGSTOP);
    let seen = follower.wait_for(2, Duration::from_secs(20)).await;
    // The follower waits on for the next record; finding the sequencer gone, it (or the
    // controller) seals the segment. (It may have seen the last record before the pause.)
    let deadline = Instant::now() + Duration::from_secs(20);
    let described = loop {
        let described = restatectl_json(&["-s", &urls[reader], "logs", "describe", &LOG.to_string(), "--json"]);
        if described["segments"].as_array().map(Vec::len) > Some(1) || Instant::now() > deadline {
            break described;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    cluster.nodes[sequencer].signal(nix::sys::signal::Signal::SIGCONT);
    let seen = seen?;
    assert_eq!(
        seen[1],
        Entry::Record(last, b"last before the pause".to_vec()),
        "{seen:?}"
    );
    assert!(
        described["segments"].as_array().map(Vec::len) > Some(1),
        "the paused sequencer's segment is sealed and the log continues elsewhere: {described}"
    );
    Ok(())
}
