//! The replicated metadata store with real processes: provisioning, CAS through the admin
//! API, restarts, leader kills, whole-cluster restarts and concurrent auto-provisioning.

use std::time::{Duration, Instant};

use restate_cluster_tests::{
    Cluster, MetadataHttp, NodeSpec, Ports, PutOutcome, TestDir, TestNode, example_config, restatectl, restatectl_json,
};

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A single writer doing compare-and-swap increments of one key through the admin APIs of
/// the nodes (moving on when a node fails). Unknown outcomes are resolved by re-reading: a
/// single writer knows that a version one above its own is its own write.
struct CounterWriter {
    http: MetadataHttp,
    key: String,
    admin_urls: Vec<String>,
    next_url: usize,
    version: u32,
    value: u64,
    /// Writes answered 200.
    acknowledged: u64,
    /// Writes known to be applied (acknowledged, or seen applied after an unknown outcome).
    applied: u64,
}

impl CounterWriter {
    async fn new(http: MetadataHttp, key: &str, admin_urls: Vec<String>) -> anyhow::Result<Self> {
        let url = admin_urls[0].clone();
        assert_eq!(
            http.put(&url, key, "does-not-exist", 1, b"0".to_vec()).await,
            PutOutcome::Written
        );
        Ok(Self {
            http,
            key: key.to_owned(),
            admin_urls,
            next_url: 0,
            version: 1,
            value: 0,
            acknowledged: 0,
            applied: 0,
        })
    }

    fn url(&self) -> String {
        self.admin_urls[self.next_url % self.admin_urls.len()].clone()
    }

    /// Reads the counter from any node that answers, for up to 30 s.
    async fn read(&mut self) -> anyhow::Result<(u32, u64)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.http.get(&self.url(), &self.key).await {
                Ok(Some((version, body))) => return Ok((version, String::from_utf8(body)?.parse()?)),
                Ok(None) => anyhow::bail!("the counter vanished"),
                Err(error) if Instant::now() > deadline => return Err(error),
                Err(_) => {
                    self.next_url += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Brings the writer's view up to date after an unclear answer.
    async fn resolve(&mut self) -> anyhow::Result<()> {
        let (version, value) = self.read().await?;
        if version == self.version + 1 && value == self.value + 1 {
            self.applied += 1;
        } else {
            assert_eq!(
                (version, value),
                (self.version, self.value),
                "the counter moved in a way a single writer cannot explain"
            );
        }
        self.version = version;
        self.value = value;
        Ok(())
    }

    async fn increment(&mut self) -> anyhow::Result<()> {
        let url = self.url();
        let body = (self.value + 1).to_string().into_bytes();
        match self
            .http
            .put(&url, &self.key, &self.version.to_string(), self.version + 1, body)
            .await
        {
            PutOutcome::Written => {
                self.version += 1;
                self.value += 1;
                self.acknowledged += 1;
                self.applied += 1;
                Ok(())
            }
            PutOutcome::PreconditionFailed(_) => self.resolve().await,
            PutOutcome::Failed(_) => {
                self.next_url += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                self.resolve().await
            }
        }
    }

    async fn run_for(&mut self, duration: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            self.increment().await?;
        }
        Ok(())
    }

    /// The final value must equal every increment known applied: none lost, none doubled.
    async fn verify(&mut self) -> anyhow::Result<()> {
        let (version, value) = self.read().await?;
        assert_eq!(value, self.applied, "final value vs applied increments");
        assert_eq!(
            u64::from(version),
            self.applied + 1,
            "final version vs applied increments"
        );
        assert!(self.acknowledged <= self.applied);
        assert!(self.acknowledged > 0, "no increment was acknowledged at all");
        Ok(())
    }
}

fn admin_urls(cluster: &Cluster) -> Vec<String> {
    cluster.nodes.iter().map(TestNode::admin_url).collect()
}

/// Waits until every running metadata server is a member and all report the same applied index.
async fn wait_members_agree(cluster: &Cluster, members: usize, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        let output = restatectl(&[
            "-s",
            &cluster.address_list(),
            "metadata-server",
            "list-servers",
            "--json",
        ]);
        if output.status.success() {
            let servers: serde_json::Value = serde_json::from_slice(&output.stdout)?;
            let rows = servers.as_array().cloned().unwrap_or_default();
            let applied: Vec<u64> = rows.iter().filter_map(|s| s["applied"].as_u64()).collect();
            let all_members = rows.iter().all(|s| s["status"] == "MEMBER")
                && rows
                    .iter()
                    .all(|s| s["members"].as_array().map(Vec::len) == Some(members));
            if rows.len() == members && all_members && applied.windows(2).all(|w| w[0] == w[1]) {
                return Ok(());
            }
            last = servers.to_string();
        } else {
            last = String::from_utf8_lossy(&output.stderr).into_owned();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("metadata servers did not converge within {timeout:?}: {last}")
}

#[tokio::test]
async fn single_node_put_get_cas_and_restart() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let spec = NodeSpec::new("solo").config_file(example_config("single-node.toml"));
    let mut node = TestNode::start(dir.path(), spec, Ports::free());
    node.wait_alive(START_TIMEOUT).await?;
    let http = MetadataHttp::new();
    let admin = node.admin_url();

    assert_eq!(http.get(&admin, "greeting").await?, None);
    assert_eq!(
        http.put(&admin, "greeting", "does-not-exist", 1, b"hello".to_vec())
            .await,
        PutOutcome::Written
    );
    assert_eq!(
        http.put(&admin, "greeting", "1", 2, b"hello again".to_vec()).await,
        PutOutcome::Written
    );
    match http.put(&admin, "greeting", "1", 3, b"stale".to_vec()).await {
        PutOutcome::PreconditionFailed(message) => {
            assert!(
                message.contains("expected version 1") && message.contains("stored version is 2"),
                "{message}"
            )
        }
        other => panic!("a stale CAS must fail its precondition, got {other:?}"),
    }
    match http
        .put(&admin, "greeting", "does-not-exist", 1, b"again".to_vec())
        .await
    {
        PutOutcome::PreconditionFailed(_) => {}
        other => panic!("creating an existing key must fail, got {other:?}"),
    }
    assert_eq!(http.get(&admin, "greeting").await?, Some((2, b"hello again".to_vec())));

    // Oversized values and system keys are refused without writing.
    // 1.5 MiB: above the replicated store's 1 MiB value limit. (A client
    // of its own: a refused upload may leave its connection unusable.)
    match MetadataHttp::new()
        .put(&admin, "huge", "*", 1, vec![b'x'; 3 * 512 * 1024])
        .await
    {
        PutOutcome::Failed(message) => assert!(
            message.contains("413") && message.contains("above the metadata store's limit"),
            "{message}"
        ),
        other => panic!("an oversized value must be refused, got {other:?}"),
    }
    assert_eq!(http.get(&admin, "huge").await?, None);
    match http.put(&admin, "nodes_config", "*", 99, b"{}".to_vec()).await {
        PutOutcome::Failed(message) => assert!(
            message.contains("403") && message.contains("managed by the cluster"),
            "{message}"
        ),
        other => panic!("system keys must be refused, got {other:?}"),
    }

    // restatectl reads the same data through the node's metadata proxy.
    let got = restatectl_json(&[
        "-s",
        &node.fabric_url(),
        "metadata",
        "get",
        "--key",
        "greeting",
        "--json",
    ]);
    assert_eq!(got["version"], 2);
    let provisioned_again = restatectl(&["-s", &node.fabric_url(), "provision", "--yes"]);
    assert!(!provisioned_again.status.success());
    let stderr = String::from_utf8_lossy(&provisioned_again.stderr);
    assert!(stderr.contains("already provisioned"), "{stderr}");

    // Kill -9 and restart: acknowledged data is still there, generation bumped.
    node.kill();
    node.restart();
    let health = node.wait_alive(START_TIMEOUT).await?;
    assert_eq!(health["node_id"], "N1:2", "{health}");
    assert_eq!(http.get(&admin, "greeting").await?, Some((2, b"hello again".to_vec())));
    Ok(())
}

/// Starts the 3-node example cluster (auto-provision off), provisions it with restatectl.
async fn provisioned_cluster(count: usize) -> anyhow::Result<Cluster> {
    let file = example_config("cluster-3/n1.toml");
    let mut cluster = Cluster::start(count, Some(file), |_, spec| spec);
    for node in &mut cluster.nodes {
        node.wait_awaiting_provisioning(START_TIMEOUT).await?;
    }
    let first = cluster.nodes[0].fabric_url();
    let output = restatectl(&["-s", &first, "provision", "--yes"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Partition replication: {node: 2}"), "{stdout}");
    cluster.wait_all_alive(START_TIMEOUT).await?;
    wait_members_agree(&cluster, count, START_TIMEOUT).await?;
    Ok(cluster)
}

async fn survive_killing(count: usize, victims: usize) -> anyhow::Result<()> {
    let mut cluster = provisioned_cluster(count).await?;
    let mut writer = CounterWriter::new(MetadataHttp::new(), "counter", admin_urls(&cluster)).await?;
    writer.run_for(Duration::from_secs(2)).await?;

    let leader = cluster.metadata_leader().expect("a metadata leader");
    let mut killed = vec![leader];
    for i in 0..count {
        if killed.len() < victims && i != leader {
            killed.push(i);
        }
    }
    for &i in &killed {
        cluster.nodes[i].kill();
    }
    let before = writer.applied;
    writer.run_for(Duration::from_secs(5)).await?;
    assert!(
        writer.applied > before,
        "writes did not resume after killing {victims} of {count} nodes"
    );

    for &i in &killed {
        cluster.nodes[i].restart();
    }
    writer.run_for(Duration::from_secs(1)).await?;
    cluster.wait_all_alive(START_TIMEOUT).await?;
    wait_members_agree(&cluster, count, START_TIMEOUT).await?;
    writer.verify().await
}

#[tokio::test]
async fn three_nodes_survive_leader_kill_without_losing_or_doubling_writes() -> anyhow::Result<()> {
    survive_killing(3, 1).await
}

#[tokio::test]
async fn five_nodes_survive_two_kills() -> anyhow::Result<()> {
    survive_killing(5, 2).await
}

#[tokio::test]
async fn whole_cluster_restart_keeps_every_acknowledged_key() -> anyhow::Result<()> {
    let mut cluster = provisioned_cluster(3).await?;
    let http = MetadataHttp::new();
    let urls = admin_urls(&cluster);
    for i in 0..20u32 {
        let url = &urls[i as usize % urls.len()];
        let outcome = http
            .put(
                url,
                &format!("key-{i}"),
                "does-not-exist",
                1,
                format!("value-{i}").into_bytes(),
            )
            .await;
        assert_eq!(outcome, PutOutcome::Written, "key-{i}");
    }
    for node in &mut cluster.nodes {
        node.kill();
    }
    for node in &mut cluster.nodes {
        node.restart();
    }
    cluster.wait_all_alive(START_TIMEOUT).await?;
    for i in 0..20u32 {
        let url = &urls[(i as usize + 1) % urls.len()];
        assert_eq!(
            http.get(url, &format!("key-{i}")).await?,
            Some((1, format!("value-{i}").into_bytes())),
            "key-{i} after a whole-cluster restart"
        );
    }
    Ok(())
}

#[tokio::test]
async fn concurrent_auto_provisioning_gives_exactly_one_cluster() -> anyhow::Result<()> {
    for round in 0..3 {
        let file = example_config("cluster-3/n1.toml");
        let mut cluster = Cluster::start(3, Some(file), |_, spec| spec.env("RESTATE_AUTO_PROVISION", "true"));
        cluster.wait_all_alive(START_TIMEOUT).await?;
        wait_members_agree(&cluster, 3, START_TIMEOUT).await?;
        let mut fingerprints = Vec::new();
        for node in &cluster.nodes {
            let marker = std::fs::read_to_string(node.base_dir.join(&node.name).join(".cluster-marker"))?;
            let marker: serde_json::Value = serde_json::from_str(&marker)?;
            fingerprints.push(marker["cluster_fingerprint"].clone());
        }
        assert!(fingerprints[0].is_u64(), "round {round}: {fingerprints:?}");
        assert!(
            fingerprints.windows(2).all(|w| w[0] == w[1]),
            "round {round}: two clusters: {fingerprints:?}"
        );
        let nodes = restatectl_json(&[
            "-s",
            &cluster.address_list(),
            "metadata",
            "get",
            "--key",
            "nodes_config",
            "--json",
        ]);
        assert_eq!(
            nodes["value"]["nodes"].as_object().map(|n| n.len()),
            Some(3),
            "round {round}: {nodes}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn wiped_member_rejoins_as_a_new_member_and_catches_up_from_a_snapshot() -> anyhow::Result<()> {
    let file = example_config("cluster-3/n1.toml");
    // Every role, the log-server's too: the wiped node's log store is gone, so its log-server
    // must not serve (its empty answers would count toward seals) while the node itself
    // comes back as a metadata member.
    let mut cluster = Cluster::start(3, Some(file), |_, spec| {
        spec.env("RESTATE_AUTO_PROVISION", "true")
            .env("RESTATE_METADATA_SERVER__LOG_TRIM_THRESHOLD", "20")
    });
    cluster.wait_all_alive(START_TIMEOUT).await?;
    wait_members_agree(&cluster, 3, START_TIMEOUT).await?;
    let storage_of = |cluster: &Cluster, node: &str| -> Option<u64> {
        let servers = restatectl_json(&[
            "-s",
            &cluster.address_list(),
            "metadata-server",
            "list-servers",
            "--json",
        ]);
        servers.as_array()?.iter().find(|s| s["node"] == node)?["storage_id"].as_u64()
    };
    let third = cluster.nodes[2].wait_alive(START_TIMEOUT).await?;
    let third_id = third["node_id"].as_str().unwrap_or_default().to_owned();
    let plain_id = third_id.split(':').next().unwrap_or_default().to_owned();
    let old_storage = storage_of(&cluster, &plain_id).expect("the third node's storage id");

    let http = MetadataHttp::new();
    let urls = admin_urls(&cluster);
    cluster.nodes[2].kill();
    for i in 0..60u32 {
        // The killed node may have led: the first writes wait for the election.
        let outcome = put_through_election(&http, &urls[i as usize % 2], &format!("k{i}"), vec![b'v'; 64]).await?;
        assert_eq!(outcome, PutOutcome::Written, "k{i}");
    }
    // The node loses its disk and comes back under the same name.
    let node_dir = cluster.nodes[2].base_dir.join(&cluster.nodes[2].name);
    std::fs::remove_dir_all(&node_dir)?;
    cluster.nodes[2].restart();
    let health = cluster.nodes[2].wait_alive(START_TIMEOUT).await?;
    assert_eq!(
        health["node_id"],
        format!("{plain_id}:2"),
        "the node keeps its id by name, with the next generation: {health}"
    );
    let log_server = &health["role_status"]["log-server"];
    assert_eq!(log_server["status"], "FAILED", "{health}");
    assert!(
        log_server["detail"].as_str().unwrap_or_default().contains("data-loss"),
        "{health}"
    );
    let nodes = restatectl_json(&["-s", &cluster.address_list(), "nodes", "list", "--json"]);
    let wiped = nodes
        .as_array()
        .and_then(|n| n.iter().find(|n| n["node_id"] == plain_id.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(wiped["storage_state"], "data-loss", "{nodes}");
    wait_members_agree(&cluster, 3, START_TIMEOUT).await?;

    let new_storage = storage_of(&cluster, &plain_id).expect("the third node's storage id");
    assert_ne!(
        old_storage, new_storage,
        "{plain_id} must be a member with its new storage, not its old self"
    );
    let servers = restatectl_json(&[
        "-s",
        &cluster.address_list(),
        "metadata-server",
        "list-servers",
        "--json",
    ]);
    for server in servers.as_array().into_iter().flatten() {
        assert!(
            server["snapshot_index"].as_u64() > Some(0),
            "no snapshot taken: {server}"
        );
    }
    // The wiped node serves everything written while it was away (its reads go to the
    // leader; its own replica is checked by the equal applied index above).
    for i in 0..60u32 {
        assert_eq!(
            http.get(&urls[2], &format!("k{i}")).await?.map(|(v, _)| v),
            Some(1),
            "k{i}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn nodes_of_another_cluster_are_refused() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let single = example_config("single-node.toml");
    let mut first = TestNode::start(dir.path(), NodeSpec::new("first").config_file(&single), Ports::free());
    let mut second = TestNode::start(dir.path(), NodeSpec::new("second").config_file(&single), Ports::free());
    first.wait_alive(START_TIMEOUT).await?;
    second.wait_alive(START_TIMEOUT).await?;

    // A different cluster name is refused with both names.
    let stranger = NodeSpec::new("stranger")
        .env("RESTATE_CLUSTER_NAME", "other-cluster")
        .env("RESTATE_ROLES", "[worker]")
        .env(
            "RESTATE_METADATA_CLIENT__ADDRESSES",
            format!("[{}]", first.fabric_url()),
        );
    let mut stranger = TestNode::start(dir.path(), stranger, Ports::free());
    let status = stranger.wait_exit(START_TIMEOUT)?;
    assert!(!status.success());
    let log = stranger.log();
    assert!(
        log.contains("cluster `restate-single`") && log.contains("cluster `other-cluster`"),
        "{log}"
    );

    // Same name, another cluster: a node that joined `first` is refused by `second`, because
    // its requests carry the fingerprint of the cluster it belongs to.
    let member = NodeSpec::new("member")
        .env("RESTATE_CLUSTER_NAME", "restate-single")
        .env("RESTATE_ROLES", "[worker]")
        .env(
            "RESTATE_METADATA_CLIENT__ADDRESSES",
            format!("[{}]", first.fabric_url()),
        );
    let mut member = TestNode::start(dir.path(), member, Ports::free());
    member.wait_alive(START_TIMEOUT).await?;
    member.terminate(Duration::from_secs(15))?;
    member.spec_mut().env.push((
        "RESTATE_METADATA_CLIENT__ADDRESSES".into(),
        format!("[{}]", second.fabric_url()),
    ));
    member.restart();
    let status = member.wait_exit(START_TIMEOUT)?;
    assert!(!status.success());
    let log = member.log();
    assert!(log.contains("cluster fingerprint mismatch"), "{log}");
    Ok(())
}

#[tokio::test]
async fn operators_remove_and_add_metadata_members() -> anyhow::Result<()> {
    let mut cluster = provisioned_cluster(3).await?;
    let addresses = cluster.address_list();
    let voters = |cluster: &Cluster| -> usize {
        let servers = restatectl_json(&[
            "-s",
            &cluster.address_list(),
            "metadata-server",
            "list-servers",
            "--json",
        ]);
        servers
            .as_array()
            .and_then(|s| s.iter().find(|s| s["status"] == "MEMBER"))
            .and_then(|s| s["members"].as_array().map(Vec::len))
            .unwrap_or(0)
    };
    let third = cluster.nodes[2].wait_alive(START_TIMEOUT).await?;
    let third_id = third["node_id"]
        .as_str()
        .unwrap_or_default()
        .split(':')
        .next()
        .unwrap_or_default()
        .to_owned();

    let removed = restatectl(&["-s", &addresses, "metadata-server", "remove-node", "--node", &third_id]);
    assert!(removed.status.success(), "{}", String::from_utf8_lossy(&removed.stderr));
    assert_eq!(voters(&cluster), 2);
    // The store keeps working with the two remaining members.
    let http = MetadataHttp::new();
    assert_eq!(
        http.put(
            &cluster.nodes[2].admin_url(),
            "after-removal",
            "does-not-exist",
            1,
            b"x".to_vec()
        )
        .await,
        PutOutcome::Written
    );

    let added = restatectl(&["-s", &addresses, "metadata-server", "add-node", "--node", &third_id]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    wait_members_agree(&cluster, 3, START_TIMEOUT).await?;
    cluster.nodes[0].kill();
    // Node 0 may have led: the put goes through once the other two elected a leader, which
    // needs the re-added member's vote.
    let outcome = put_through_election(&http, &cluster.nodes[2].admin_url(), "after-readding", b"x".to_vec()).await?;
    assert_eq!(
        outcome,
        PutOutcome::Written,
        "the re-added member must count towards the quorum"
    );
    Ok(())
}

#[tokio::test]
async fn the_last_metadata_member_cannot_be_removed() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let mut node = TestNode::start(dir.path(), NodeSpec::new("only"), Ports::free());
    node.wait_alive(START_TIMEOUT).await?;
    let output = restatectl(&[
        "-s",
        &node.fabric_url(),
        "metadata-server",
        "remove-node",
        "--node",
        "N1",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("last member"), "{stderr}");
    Ok(())
}

/// Creates `key` with `value`, retrying while a leader is being elected (no leader: 503; a
/// call cut by the old leader's death: outcome unknown, then the key is read back).
async fn put_through_election(http: &MetadataHttp, url: &str, key: &str, value: Vec<u8>) -> anyhow::Result<PutOutcome> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let outcome = http.put(url, key, "does-not-exist", 1, value.clone()).await;
        match &outcome {
            PutOutcome::Failed(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // An earlier attempt whose answer was lost did write it.
            PutOutcome::PreconditionFailed(_) if http.get(url, key).await?.map(|(_, v)| v) == Some(value.clone()) => {
                return Ok(PutOutcome::Written);
            }
            _ => return Ok(outcome),
        }
    }
}
