use std::time::{Duration, Instant};

use restate_cluster_tests::{NodeSpec, Ports, TestDir, TestNode, example_config, restatectl};

const START_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn single_node_serves_health_on_every_port_and_stops_on_sigterm() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let spec = NodeSpec::new("node-1").config_file(example_config("single-node.toml"));
    let mut node = TestNode::start(dir.path(), spec, Ports::free());

    let health = node.wait_alive(START_TIMEOUT).await?;
    assert_eq!(health["node_name"], "node-1");
    assert_eq!(health["cluster_name"], "restate-single");
    assert_eq!(health["roles"].as_array().map(Vec::len), Some(5), "{health}");
    assert!(health["version"].is_string());
    for url in [node.admin_url(), node.ingress_url()] {
        let other = node.wait_health(&url, START_TIMEOUT, |_| true).await?;
        assert_eq!(other["node_name"], "node-1", "{url}: {other}");
    }

    let metrics = reqwest::get(format!("{}metrics", node.fabric_url()))
        .await?
        .text()
        .await?;
    assert!(metrics.contains("restate_node_alive 1"), "{metrics}");
    assert!(metrics.contains("restate_role_ready{role=\"admin\"} 1"), "{metrics}");

    // Nothing is registered yet: the ingress says so.
    let invoke = reqwest::Client::new()
        .post(format!("{}Greeter/greet", node.ingress_url()))
        .body("\"hi\"")
        .send()
        .await?;
    assert_eq!(invoke.status(), 404);
    assert!(invoke.text().await?.contains("service 'Greeter' not found"));

    let output = restatectl(&["-s", &node.fabric_url(), "nodes", "list", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(listed[0]["name"], "node-1");
    assert_eq!(listed[0]["status"], "ALIVE");

    let table = restatectl(&["--address", &node.fabric_url(), "nodes", "list"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("node-1") && table.contains("ALIVE"), "{table}");

    let stopping = Instant::now();
    let status = node.terminate(Duration::from_secs(15))?;
    assert!(status.success(), "exit status {status}:\n{}", node.log());
    assert!(stopping.elapsed() < Duration::from_secs(15));
    assert!(node.log().contains("node stopped"));
    Ok(())
}

#[tokio::test]
async fn environment_selects_roles_and_a_second_node_joins() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let mut first = TestNode::start(dir.path(), NodeSpec::new("n-first"), Ports::free());
    first.wait_alive(START_TIMEOUT).await?;
    let spec = NodeSpec::new("n-env").env("RESTATE_ROLES", "[worker,admin]").env(
        "RESTATE_METADATA_CLIENT__ADDRESSES",
        format!("[{}]", first.fabric_url()),
    );
    let mut node = TestNode::start(dir.path(), spec, Ports::free());
    let health = node.wait_alive(START_TIMEOUT).await?;
    assert_eq!(health["roles"], serde_json::json!(["worker", "admin"]), "{health}");
    assert_eq!(health["node_id"], "N2:1", "{health}");
    // No ingress role: its port stays closed.
    assert!(reqwest::get(format!("{}health", node.ingress_url())).await.is_err());
    node.terminate(Duration::from_secs(15))?;
    Ok(())
}

#[test]
fn restatectl_names_an_unreachable_address() {
    let port = restate_cluster_tests::free_port();
    let address = format!("http://127.0.0.1:{port}/");
    let output = restatectl(&["-s", &address, "nodes", "list"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("cannot reach {address}")), "{stderr}");
}
