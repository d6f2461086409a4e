//! The Rust SDK (`restate-sdk` 0.13, `examples/rust`) through the ingress of one node.

use std::time::{Duration, Instant};

use restate_cluster_tests::servers::SdkService;
use restate_cluster_tests::{TestDir, binary};
use serde_json::json;

use crate::invocations::{Client, side_effects, start_node, wait_for_side_effect};

#[tokio::test]
async fn rust_sdk_services_objects_sleep_run_calls_and_errors() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let node = start_node(&dir, &[]).await?;
    let effects = dir.path().join("side-effects.txt");
    let effects_path = effects.display().to_string();
    let service = SdkService::binary(
        &binary("restate-sdk-test-service"),
        &[("SIDE_EFFECT_FILE", &effects_path)],
        "the Rust SDK test service",
    );
    let client = Client::new(&node);
    client.register(json!({"uri": service.uri})).await?;

    let greet = client.call("Greeter/greet", json!("Sam")).await?;
    assert_eq!(
        (greet.status, greet.json()),
        (200, json!("Hello Sam!")),
        "{}",
        greet.body
    );

    crate::invocations::concurrent_counter_adds(&node, &client).await?;

    let started = Instant::now();
    assert_eq!(client.call("Sleeper/sleep", json!(1000)).await?.json(), json!("slept"));
    assert!(started.elapsed() >= Duration::from_secs(1));

    assert_eq!(
        client.call("Runner/sideEffect", json!("rs-run")).await?.json(),
        json!("ran rs-run")
    );
    assert_eq!(side_effects(&effects).get("rs-run"), Some(&1));

    let called = client.call("Caller/callGreet", json!("Bob")).await?;
    assert_eq!(called.json(), json!("called: Hello Bob!"), "{}", called.body);
    assert_eq!(
        client
            .call("Caller/sendAdd", json!({"key": "bob", "delta": 2}))
            .await?
            .json(),
        json!("sent")
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.post_empty("Counter/bob/get").await?.json() != json!(2) {
        anyhow::ensure!(Instant::now() < deadline, "the one-way send did not arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let failed = client.call("Failing/terminal", json!("boom")).await?;
    assert_eq!(failed.status, 400, "{}", failed.body);
    assert_eq!(failed.json()["message"], json!("boom"));

    let retried = client.call("Failing/failTwice", json!("k1")).await?;
    assert_eq!(retried.json(), json!("succeeded after 3 attempts"), "{}", retried.body);

    let accepted = client
        .call("Runner/sideEffect/send?delay=500ms", json!("rs-delayed"))
        .await?;
    assert_eq!(accepted.status, 202);
    wait_for_side_effect(&effects, "rs-delayed", Duration::from_secs(30)).await?;
    Ok(())
}
