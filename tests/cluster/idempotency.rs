//! Idempotency keys, attach and output, and the retention of completed invocations.

use std::time::{Duration, Instant};

use restate_cluster_tests::TestDir;
use restate_cluster_tests::servers::SdkService;
use serde_json::json;

use crate::invocations::{Client, START_TIMEOUT, side_effects, start_node};

#[tokio::test]
async fn idempotency_keys_attach_output_and_retention() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let mut node = start_node(&dir, &[("RESTATE_WORKER__CLEANUP_INTERVAL", "500ms")]).await?;
    let effects = dir.path().join("side-effects.txt");
    let service = SdkService::typescript_scenarios(&effects);
    let client = Client::new(&node);
    client.register(json!({"uri": service.uri})).await?;

    // The same key twice: one execution, the same id and answer.
    let first = client.call_keyed("Runner/sideEffect", "ik-1", json!("once")).await?;
    let second = client.call_keyed("Runner/sideEffect", "ik-1", json!("once")).await?;
    assert_eq!(
        (first.status, first.body.as_str()),
        (200, "\"ran once\""),
        "{}",
        first.body
    );
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("x-restate-id"), first.header("x-restate-id"));
    assert_eq!(side_effects(&effects).get("once"), Some(&1));

    // Sends: accepted once, then previously accepted with the same id.
    let sent = client.call_keyed("Sleeper/sleep/send", "ik-2", json!(1500)).await?;
    let again = client.call_keyed("Sleeper/sleep/send", "ik-2", json!(1500)).await?;
    assert_eq!(sent.json()["status"], json!("Accepted"), "{}", sent.body);
    assert_eq!(again.json()["status"], json!("PreviouslyAccepted"), "{}", again.body);
    let id = sent.json()["invocationId"].as_str().unwrap_or_default().to_owned();
    assert_eq!(again.json()["invocationId"], json!(id));

    // Output while it runs, attach until it ends, output afterwards (by id and by key).
    let running = client.ingress_get(&format!("restate/invocation/{id}/output")).await?;
    assert_eq!(running.status, 470, "{}", running.body);
    assert_eq!(
        running.json()["message"],
        json!("the invocation exists but has not completed yet")
    );
    let attached = client.ingress_get(&format!("restate/invocation/{id}/attach")).await?;
    assert_eq!(
        (attached.status, attached.json()),
        (200, json!("slept")),
        "{}",
        attached.body
    );
    let output = client.ingress_get(&format!("restate/invocation/{id}/output")).await?;
    assert_eq!(output.json(), json!("slept"), "{}", output.body);
    let by_key = client
        .ingress_get("restate/invocation/Sleeper/sleep/ik-2/output")
        .await?;
    assert_eq!((by_key.status, by_key.json()), (200, json!("slept")), "{}", by_key.body);
    assert_eq!(by_key.header("x-restate-id"), Some(id.as_str()));

    // Unknown and malformed ids.
    let unknown = client
        .ingress_get("restate/invocation/Sleeper/sleep/no-such-key/attach")
        .await?;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert_eq!(unknown.json()["message"], json!("invocation not found"));
    let bad = client.ingress_get("restate/invocation/inv_1xxxx/output").await?;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.json()["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("bad invocation id 'inv_1xxxx'")
    );

    // Completed results survive kill -9; the duplicate still does not run again.
    node.kill();
    node.restart();
    node.wait_alive(START_TIMEOUT).await?;
    let client = Client::new(&node);
    let after = client.call_keyed("Runner/sideEffect", "ik-1", json!("once")).await?;
    assert_eq!(after.body, first.body);
    assert_eq!(side_effects(&effects).get("once"), Some(&1));

    // A short retention: the cleaner forgets the result, and the key runs anew.
    let patched = client
        .request(
            reqwest::Method::PATCH,
            &format!("{}services/Runner", client.admin),
            Some(json!({"idempotency_retention": "1s"})),
        )
        .await?;
    assert_eq!(patched.status, 200, "{}", patched.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    for round in 0.. {
        // The ingress picks the new retention up within its schema refresh.
        let short = client
            .call_keyed("Runner/sideEffect", &format!("ik-short-{round}"), json!("short"))
            .await?;
        assert_eq!(short.status, 200, "{}", short.body);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let id = short.header("x-restate-id").unwrap_or_default().to_owned();
        let gone = client.ingress_get(&format!("restate/invocation/{id}/output")).await?;
        if gone.status == 404 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the result was kept past its retention: {}",
            gone.body
        );
    }
    Ok(())
}
