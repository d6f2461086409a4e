//! Cancel and kill through the admin API: a sleeping invocation is canceled through its SDK
//! (signal 1, the handler fails with 409 "canceled"), or killed at once.

use restate_cluster_tests::TestDir;
use restate_cluster_tests::servers::SdkService;
use serde_json::json;

use crate::invocations::{Client, start_node};

async fn send_sleep(client: &Client, key: &str) -> anyhow::Result<String> {
    let response = client
        .http()
        .post(format!("{}Sleeper/sleep/send", client.ingress))
        .header("idempotency-key", key)
        .json(&json!(600_000))
        .send()
        .await?;
    anyhow::ensure!(response.status().as_u16() == 202, "send answered {}", response.status());
    let body: serde_json::Value = response.json().await?;
    Ok(body["invocationId"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn cancel_and_kill_end_sleeping_invocations() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let node = start_node(&dir, &[("RESTATE_WORKER__INVOKER__INACTIVITY_TIMEOUT", "300ms")]).await?;
    let effects = dir.path().join("side-effects.txt");
    let service = SdkService::typescript_scenarios(&effects);
    let client = Client::new(&node);
    client.register(json!({"uri": service.uri})).await?;
    let admin = |path: String| format!("{}{path}", client.admin);

    let canceled = send_sleep(&client, "to-cancel").await?;
    let killed = send_sleep(&client, "to-kill").await?;
    // Let both start (and suspend on their timers).
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;

    let cancel = client
        .request(
            reqwest::Method::PATCH,
            &admin(format!("invocations/{canceled}/cancel")),
            None,
        )
        .await?;
    assert_eq!(cancel.status, 202, "{}", cancel.body);
    let result = client
        .request(
            reqwest::Method::GET,
            &format!("{}restate/invocation/{canceled}/attach", client.ingress),
            None,
        )
        .await?;
    // The SDK ends the handler with its cancellation error (the TypeScript SDK says "Cancelled").
    assert_eq!(result.status, 409, "{}", result.body);
    assert_eq!(result.json()["source"], json!("invocation"), "{}", result.body);

    let kill = client
        .request(
            reqwest::Method::PATCH,
            &admin(format!("invocations/{killed}/kill")),
            None,
        )
        .await?;
    assert_eq!(kill.status, 200, "{}", kill.body);
    let result = client
        .request(
            reqwest::Method::GET,
            &format!("{}restate/invocation/{killed}/output", client.ingress),
            None,
        )
        .await?;
    assert_eq!(
        (result.status, result.json()["message"].clone()),
        (409, json!("killed")),
        "{}",
        result.body
    );

    // Completed, unknown and malformed ids.
    let again = client
        .request(
            reqwest::Method::PATCH,
            &admin(format!("invocations/{killed}/cancel")),
            None,
        )
        .await?;
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(
        again.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("already completed")
    );
    let unknown = "inv_1j3OsqQPRzR97ms55EYVgziYOU2byMLXnf";
    let missing = client
        .request(
            reqwest::Method::DELETE,
            &admin(format!("invocations/{unknown}?mode=kill")),
            None,
        )
        .await?;
    assert_eq!(missing.status, 404, "{}", missing.body);
    let bad = client
        .request(
            reqwest::Method::PATCH,
            &admin("invocations/inv_1xxxx/kill".into()),
            None,
        )
        .await?;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("bad invocation id 'inv_1xxxx'")
    );
    Ok(())
}

#[tokio::test]
async fn pause_resume_and_purge() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let node = start_node(&dir, &[]).await?;
    let effects = dir.path().join("side-effects.txt");
    let service = SdkService::typescript_scenarios(&effects);
    let client = Client::new(&node);
    client.register(json!({"uri": service.uri})).await?;
    let response = client
        .http()
        .post(format!("{}Sleeper/sleep/send", client.ingress))
        .header("idempotency-key", "to-pause")
        .json(&json!(1000))
        .send()
        .await?;
    let id = response.json::<serde_json::Value>().await?["invocationId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // A running invocation cannot be purged.
    let purge = client.admin_patch(&format!("invocations/{id}/purge")).await?;
    assert_eq!(purge.status, 409, "{}", purge.body);
    assert!(purge.body.contains("has not completed"), "{}", purge.body);

    let pause = client.admin_patch(&format!("invocations/{id}/pause")).await?;
    assert_eq!(pause.status, 200, "{}", pause.body);
    // Its timer fires meanwhile, but it stays paused.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        client
            .ingress_get(&format!("restate/invocation/{id}/output"))
            .await?
            .status,
        470
    );

    let resume = client.admin_patch(&format!("invocations/{id}/resume")).await?;
    assert_eq!(resume.status, 200, "{}", resume.body);
    let attached = client
        .request(
            reqwest::Method::GET,
            &format!("{}restate/invocation/{id}/attach", client.ingress),
            None,
        )
        .await?;
    assert_eq!(attached.json(), json!("slept"), "{}", attached.body);

    let purge = client.admin_patch(&format!("invocations/{id}/purge")).await?;
    assert_eq!(purge.status, 200, "{}", purge.body);
    assert_eq!(
        client
            .ingress_get(&format!("restate/invocation/{id}/output"))
            .await?
            .status,
        404
    );
    let again = client.admin_patch(&format!("invocations/{id}/resume")).await?;
    assert_eq!(again.status, 404, "{}", again.body);
    Ok(())
}
