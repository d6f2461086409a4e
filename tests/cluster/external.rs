//! Nodes on external metadata stores: etcd, DynamoDB and S3 (real local servers).

use std::time::Duration;

use restate_cluster_tests::servers::{Etcd, Moto};
use restate_cluster_tests::{
    Cluster, MetadataHttp, NodeSpec, Ports, PutOutcome, TestDir, TestNode, example_config, restatectl_json,
};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const NO_METADATA_SERVER: &str = "[admin,worker,log-server,http-ingress]";

fn fingerprints(cluster: &Cluster) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut fingerprints = Vec::new();
    for node in &cluster.nodes {
        let marker = std::fs::read_to_string(node.base_dir.join(&node.name).join(".cluster-marker"))?;
        let marker: serde_json::Value = serde_json::from_str(&marker)?;
        fingerprints.push(marker["cluster_fingerprint"].clone());
    }
    Ok(fingerprints)
}

/// Creates `key` with a value unique to this call, retrying while etcd elects a new leader;
/// an answer that left the outcome open is resolved by reading the key (the value is ours
/// alone).
async fn put_eventually(http: &MetadataHttp, url: &str, key: &str) -> anyhow::Result<()> {
    let body = format!("{key}-{}", std::process::id()).into_bytes();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match http.put(url, key, "does-not-exist", 1, body.clone()).await {
            PutOutcome::Written => return Ok(()),
            PutOutcome::PreconditionFailed(_) if http.get(url, key).await? == Some((1, body.clone())) => return Ok(()),
            PutOutcome::PreconditionFailed(message) => anyhow::bail!("{key}: {message}"),
            PutOutcome::Failed(message) if std::time::Instant::now() > deadline => anyhow::bail!("{key}: {message}"),
            PutOutcome::Failed(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test]
async fn three_nodes_on_etcd_provision_once_and_survive_a_lost_node() -> anyhow::Result<()> {
    let etcd_dir = TestDir::new();
    let mut etcd = Etcd::start(etcd_dir.path(), 3);
    let endpoints = format!("[{}]", etcd.endpoints.join(","));
    let mut cluster = Cluster::start(3, Some(example_config("cluster-3/n1.toml")), |_, spec| {
        spec.env("RESTATE_ROLES", NO_METADATA_SERVER)
            .env("RESTATE_AUTO_PROVISION", "true")
            .env("RESTATE_METADATA_CLIENT__TYPE", "etcd")
            .env("RESTATE_METADATA_CLIENT__ADDRESSES", endpoints.clone())
    });
    cluster.wait_all_alive(START_TIMEOUT).await?;
    let fingerprints = fingerprints(&cluster)?;
    assert!(
        fingerprints.windows(2).all(|w| w[0] == w[1]),
        "one cluster expected: {fingerprints:?}"
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
    assert_eq!(nodes["value"]["nodes"].as_object().map(|n| n.len()), Some(3), "{nodes}");

    // A node and an etcd member go away: the rest keeps working.
    cluster.nodes[1].kill();
    etcd.kill_member(2);
    let http = MetadataHttp::new();
    for (i, node) in [&cluster.nodes[0], &cluster.nodes[2]].into_iter().enumerate() {
        put_eventually(&http, &node.admin_url(), &format!("after-loss-{i}")).await?;
    }
    cluster.nodes[1].restart();
    let health = cluster.nodes[1].wait_alive(START_TIMEOUT).await?;
    assert!(
        health["node_id"].as_str().is_some_and(|id| id.ends_with(":2")),
        "{health}"
    );
    Ok(())
}

#[tokio::test]
async fn two_clusters_share_one_dynamodb_table_through_key_prefixes() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let moto = Moto::start(dir.path());
    moto.create_table("shared-metadata");
    let start = |name: &str, cluster: &str| {
        let mut spec = NodeSpec::new(name)
            .env("RESTATE_CLUSTER_NAME", cluster)
            .env("RESTATE_ROLES", NO_METADATA_SERVER)
            .env("RESTATE_METADATA_CLIENT__KEY_PREFIX", format!("{cluster}/"));
        for (key, value) in moto.dynamodb_env("shared-metadata") {
            spec = spec.env(&key, value);
        }
        TestNode::start(dir.path(), spec, Ports::free())
    };
    let mut blue = start("blue-1", "blue");
    let mut green = start("green-1", "green");
    let blue_health = blue.wait_alive(START_TIMEOUT).await?;
    let green_health = green.wait_alive(START_TIMEOUT).await?;
    // Each is the first node of its own cluster.
    assert_eq!(blue_health["node_id"], "N1:1");
    assert_eq!(green_health["node_id"], "N1:1");
    let http = MetadataHttp::new();
    assert_eq!(
        http.put(&blue.admin_url(), "colour", "does-not-exist", 1, b"blue".to_vec())
            .await,
        PutOutcome::Written
    );
    assert_eq!(
        http.get(&green.admin_url(), "colour").await?,
        None,
        "green must not see blue's keys"
    );
    assert_eq!(
        http.put(&green.admin_url(), "colour", "does-not-exist", 1, b"green".to_vec())
            .await,
        PutOutcome::Written
    );
    assert_eq!(
        http.get(&blue.admin_url(), "colour").await?,
        Some((1, b"blue".to_vec()))
    );
    Ok(())
}

#[tokio::test]
async fn unusable_external_stores_fail_start_up_with_the_fix() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let moto = Moto::start(dir.path());
    let run = |name: &str, env: Vec<(String, String)>| -> anyhow::Result<String> {
        let mut spec = NodeSpec::new(name).env("RESTATE_ROLES", NO_METADATA_SERVER);
        for (key, value) in env {
            spec = spec.env(&key, value);
        }
        let mut node = TestNode::start(dir.path(), spec, Ports::free());
        let status = node.wait_exit(START_TIMEOUT)?;
        assert!(!status.success(), "{name} must not start");
        Ok(node.log())
    };

    // No etcd listens there: the address is named once the connect timeout passes.
    let port = restate_cluster_tests::free_port();
    let log = run(
        "no-etcd",
        vec![
            ("RESTATE_METADATA_CLIENT__TYPE".into(), "etcd".into()),
            (
                "RESTATE_METADATA_CLIENT__ADDRESSES".into(),
                format!("[127.0.0.1:{port}]"),
            ),
            ("RESTATE_METADATA_CLIENT__CONNECT_TIMEOUT".into(), "1s".into()),
        ],
    )?;
    assert!(
        log.contains(&format!("cannot reach the etcd metadata store at 127.0.0.1:{port}")),
        "{log}"
    );

    // A missing table: the exact command that creates it.
    let log = run("no-table", moto.dynamodb_env("missing-table"))?;
    assert!(
        log.contains("aws dynamodb create-table --table-name missing-table --attribute-definitions AttributeName=pk,AttributeType=S"),
        "{log}"
    );

    // A missing bucket.
    let log = run("no-bucket", moto.s3_env("s3://missing-bucket/metadata"))?;
    assert!(log.contains("bucket `missing-bucket` does not exist"), "{log}");
    // Secrets never reach the log.
    assert!(
        !log.contains("RESTATE_METADATA_CLIENT__AWS_SECRET_ACCESS_KEY")
            && !log.contains("secret_access_key = \"test\"")
    );
    Ok(())
}

/// An "S3" that stores objects but ignores `If-None-Match` and `If-Match`.
async fn careless_object_store() -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::put;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    type Objects = Arc<Mutex<HashMap<String, Vec<u8>>>>;
    async fn store(State(objects): State<Objects>, Path(path): Path<String>, body: Bytes) -> (HeaderMap, StatusCode) {
        objects.lock().map(|mut o| o.insert(path, body.to_vec())).ok();
        let mut headers = HeaderMap::new();
        headers.insert("etag", "\"careless\"".parse().unwrap_or_else(|_| unreachable!()));
        (headers, StatusCode::OK)
    }
    async fn remove(State(objects): State<Objects>, Path(path): Path<String>) -> StatusCode {
        objects.lock().map(|mut o| o.remove(&path)).ok();
        StatusCode::NO_CONTENT
    }
    let objects: Objects = Arc::default();
    let app = Router::new()
        .route("/{*path}", put(store).delete(remove))
        .with_state(objects);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{address}"), server))
}

#[tokio::test(flavor = "multi_thread")]
async fn object_store_that_ignores_conditional_writes_is_refused() -> anyhow::Result<()> {
    let (endpoint, server) = careless_object_store().await?;
    let dir = TestDir::new();
    let spec = NodeSpec::new("careful")
        .env("RESTATE_ROLES", NO_METADATA_SERVER)
        .env("RESTATE_METADATA_CLIENT__TYPE", "object-store")
        .env("RESTATE_METADATA_CLIENT__PATH", "s3://bucket/metadata")
        .env("RESTATE_METADATA_CLIENT__AWS_ENDPOINT_URL", endpoint)
        .env("RESTATE_METADATA_CLIENT__AWS_ALLOW_HTTP", "true")
        .env("RESTATE_METADATA_CLIENT__AWS_REGION", "us-east-1")
        .env("RESTATE_METADATA_CLIENT__AWS_ACCESS_KEY_ID", "test")
        .env("RESTATE_METADATA_CLIENT__AWS_SECRET_ACCESS_KEY", "test");
    let mut node = TestNode::start(dir.path(), spec, Ports::free());
    let status = node.wait_exit(START_TIMEOUT)?;
    assert!(!status.success());
    let log = node.log();
    assert!(log.contains("does not honour conditional writes"), "{log}");
    assert!(log.contains("If-None-Match: *"), "{log}");
    server.abort();
    Ok(())
}
