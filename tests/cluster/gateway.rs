//! A node without the worker role (only `admin` and `http-ingress`) serves invocations through
//! the partition API: its ingress and admin API reach the partitions on another node over the
//! fabric, and answers come back to the node that was asked. Its SQL reads the other node's
//! partitions.

use std::time::Duration;

use restate_cluster_tests::servers::SdkService;
use restate_cluster_tests::{NodeSpec, Ports, TestDir, TestNode, example_config};
use serde_json::json;

use crate::invocations::{Client, START_TIMEOUT, side_effects, wait_for_side_effect};

#[tokio::test]
async fn a_node_without_the_worker_role_serves_calls_through_the_partitions_of_another_node() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let mut worker = TestNode::start(
        dir.path(),
        NodeSpec::new("worker").config_file(example_config("single-node.toml")),
        Ports::free(),
    );
    worker.wait_alive(START_TIMEOUT).await?;
    let gateway_spec = NodeSpec::new("gateway")
        .env("RESTATE_CLUSTER_NAME", "restate-single")
        .env("RESTATE_ROLES", "[admin,http-ingress]")
        .env(
            "RESTATE_METADATA_CLIENT__ADDRESSES",
            format!("[{}]", worker.fabric_url()),
        );
    let mut gateway = TestNode::start(dir.path(), gateway_spec, Ports::free());
    gateway.wait_alive(START_TIMEOUT).await?;

    let effects = dir.path().join("side-effects.txt");
    let service = SdkService::typescript_scenarios(&effects);
    let client = Client::new(&gateway);
    client.register(json!({"uri": service.uri})).await?;

    // Calls: the gateway's ingress forwards them and waits for the result on the worker.
    // Wait with a read (an add retried until it answers 1 never gets there once a failed
    // attempt whose outcome was unknown was stored), then add twice.
    client.eventually("Counter/a/get", json!(null), json!(0)).await?;
    let answer = client.call("Counter/a/add", json!(1)).await?;
    assert_eq!((answer.status, answer.json()), (200, json!(1)), "{}", answer.body);
    let answer = client.call("Counter/a/add", json!(2)).await?;
    assert_eq!((answer.status, answer.json()), (200, json!(3)), "{}", answer.body);

    // A workflow started, its promise resolved and its result attached, all through the gateway.
    let started = client.call("Signup/w1/run/send", json!("Ada")).await?;
    assert_eq!(started.status, 202, "{}", started.body);
    let code = client.call("Signup/w1/submitCode", json!("1234")).await?;
    assert_eq!(code.status, 200, "{}", code.body);
    let attached = client.ingress_get("restate/workflow/Signup/w1/attach").await?;
    assert_eq!(
        (attached.status, attached.json()),
        (200, json!("welcome Ada 1234")),
        "{}",
        attached.body
    );

    // An awakeable completed through the gateway's ingress.
    let waiting = client.call("Awaiter/awakeable/send", json!("g")).await?;
    assert_eq!(waiting.status, 202, "{}", waiting.body);
    let waiting_id = waiting.json()["invocationId"].as_str().unwrap_or_default().to_owned();
    let awakeable = awakeable_id(&effects, "g").await?;
    let resolved = client
        .call(&format!("restate/awakeables/{awakeable}/resolve"), json!("done"))
        .await?;
    assert_eq!(resolved.status, 202, "{}", resolved.body);
    let result = client
        .ingress_get(&format!("restate/invocation/{waiting_id}/attach"))
        .await?;
    assert_eq!((result.status, result.json()), (200, json!("done")), "{}", result.body);
    let output = client
        .ingress_get(&format!("restate/invocation/{waiting_id}/output"))
        .await?;
    assert_eq!((output.status, output.json()), (200, json!("done")), "{}", output.body);

    // Operator actions through the gateway's admin API: kill a sleeper, replace a key's state.
    let sleeper = client
        .call("Runner/sleepThenEffect/send", json!({"tag": "never", "ms": 60_000}))
        .await?;
    let sleeper_id = sleeper.json()["invocationId"].as_str().unwrap_or_default().to_owned();
    wait_for_side_effect(&effects, "never", Duration::from_secs(30)).await?;
    let running = client
        .ingress_get(&format!("restate/invocation/{sleeper_id}/output"))
        .await?;
    assert_eq!(running.status, 470, "{}", running.body);
    let killed = client.admin_patch(&format!("invocations/{sleeper_id}/kill")).await?;
    assert_eq!(killed.status, 200, "{}", killed.body);
    let output = client
        .ingress_get(&format!("restate/invocation/{sleeper_id}/output"))
        .await?;
    assert_ne!(output.status, 470, "a killed invocation has ended: {}", output.body);
    let patched = client
        .request(
            reqwest::Method::POST,
            &format!("{}services/Counter/state", client.admin),
            Some(json!({"object_key": "a", "new_state": {"total": b"10".to_vec()}})),
        )
        .await?;
    assert_eq!(patched.status, 202, "{}", patched.body);
    client.eventually("Counter/a/get", json!(null), json!(10)).await?;

    // SQL on the gateway reads the partitions on the worker node.
    let state = client
        .query("SELECT key, value_utf8 FROM state WHERE service_name = 'Counter' AND service_key = 'a'")
        .await?;
    assert_eq!(state, vec![json!({"key": "total", "value_utf8": "10"})]);
    let workflows = client
        .query("SELECT status FROM sys_invocation WHERE target_service_name = 'Signup' AND target_handler_name = 'run'")
        .await?;
    assert_eq!(workflows, vec![json!({"status": "completed"})]);
    let journal = client
        .query(&format!(
            "SELECT count(*) AS n FROM sys_journal WHERE id = '{waiting_id}'"
        ))
        .await?;
    assert!(journal[0]["n"].as_i64().unwrap_or_default() >= 3, "{journal:?}");
    let promises = client
        .query("SELECT service_key, key, completed FROM sys_promise")
        .await?;
    assert_eq!(
        promises,
        vec![json!({"service_key": "w1", "key": "code", "completed": true})]
    );

    // With the only worker gone the gateway answers at once that retrying is safe, instead of
    // hanging; once it is back, calls go through again.
    // The first call may still go out on the connection the kill broke: whether the worker
    // stored it is then unknown, and the answer says so.
    worker.kill();
    let first = client.call("Counter/a/add", json!(1)).await?;
    assert!(
        first.status == 503 || (first.status == 500 && first.body.contains("it is unknown whether")),
        "{} {}",
        first.status,
        first.body
    );
    let refused = client.call("Counter/a/add", json!(1)).await?;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.body.contains("retrying is safe"), "{}", refused.body);
    worker.restart();
    worker.wait_alive(START_TIMEOUT).await?;
    // Neither refused call was stored; the one whose fate was unknown may have been.
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    let mut total = client.call("Counter/a/get", json!(null)).await?;
    while total.status != 200 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        total = client.call("Counter/a/get", json!(null)).await?;
    }
    assert!(
        total.status == 200 && (total.json() == json!(10) || total.json() == json!(11)),
        "{}",
        total.body
    );
    assert_eq!(
        side_effects(&effects).get("never:done"),
        None,
        "the killed sleeper ran on"
    );
    Ok(())
}

/// The id of the awakeable the `Awaiter/awakeable` invocation tagged `tag` recorded.
async fn awakeable_id(effects: &std::path::Path, tag: &str) -> anyhow::Result<String> {
    let prefix = format!("awakeable {tag} ");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(line) = side_effects(effects).keys().find(|line| line.starts_with(&prefix)) {
            return Ok(line[prefix.len()..].to_owned());
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "no awakeable recorded for {tag}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
