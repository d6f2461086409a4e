//! Workflows: `run` once per key, shared handlers beside it, durable promises, attach/output.

use std::time::{Duration, Instant};

use restate_cluster_tests::TestDir;
use restate_cluster_tests::servers::SdkService;
use serde_json::json;

use crate::invocations::{Client, start_node};

#[tokio::test]
async fn a_workflow_runs_once_per_key_and_waits_for_its_promise() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let node = start_node(&dir, &[]).await?;
    let effects = dir.path().join("side-effects.txt");
    let service = SdkService::typescript_scenarios(&effects);
    let client = Client::new(&node);
    client.register(json!({"uri": service.uri})).await?;

    let submitted = client.call("Signup/w1/run/send", json!("Ann")).await?;
    assert_eq!(submitted.json()["status"], json!("Accepted"), "{}", submitted.body);
    let again = client.call("Signup/w1/run/send", json!("Ann")).await?;
    assert_eq!(again.json()["status"], json!("PreviouslyAccepted"), "{}", again.body);
    assert_eq!(again.json()["invocationId"], submitted.json()["invocationId"]);
    let duplicate = client.call("Signup/w1/run", json!("Ann")).await?;
    assert_eq!(duplicate.status, 409, "{}", duplicate.body);
    assert_eq!(
        duplicate.json()["message"],
        json!("the workflow method was already invoked")
    );

    // A shared handler sees the run's state while it waits.
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.post_empty("Signup/w1/status").await?.json() != json!("waiting") {
        anyhow::ensure!(Instant::now() < deadline, "the run did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pending = client.ingress_get("restate/workflow/Signup/w1/output").await?;
    assert_eq!(pending.status, 470, "{}", pending.body);

    let accepted = client.call("Signup/w1/submitCode", json!("42")).await?;
    assert_eq!(accepted.json(), json!("accepted"), "{}", accepted.body);
    let result = client.ingress_get("restate/workflow/Signup/w1/attach").await?;
    assert_eq!(
        (result.status, result.json()),
        (200, json!("welcome Ann 42")),
        "{}",
        result.body
    );
    let output = client.ingress_get("restate/workflow/Signup/w1/output").await?;
    assert_eq!(output.json(), json!("welcome Ann 42"));
    assert_eq!(client.post_empty("Signup/w1/status").await?.json(), json!("done"));

    // The promise is completed once; the run is not repeated.
    let twice = client.call("Signup/w1/submitCode", json!("43")).await?;
    assert_eq!(twice.status, 409, "{}", twice.body);
    let rerun = client.call("Signup/w1/run", json!("Bob")).await?;
    assert_eq!(rerun.status, 409, "{}", rerun.body);

    // Bad requests.
    let keyed = client
        .http()
        .post(format!("{}Signup/w2/run", client.ingress))
        .header("idempotency-key", "k")
        .json(&json!("x"))
        .send()
        .await?;
    assert_eq!(keyed.status().as_u16(), 400);
    let unknown = client.ingress_get("restate/workflow/Signup/nobody/output").await?;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    Ok(())
}

/// `kill -9` while the run waits for its promise, and again after it ended: the run resumes
/// where it was (its `ctx.run` is not repeated), the promise completes it, and afterwards the
/// result, the once-per-key rule and the completed promise all survive.
#[tokio::test]
async fn a_workflow_survives_kill_9_while_waiting_and_after_it_ended() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let mut node = start_node(&dir, &[]).await?;
    let effects = dir.path().join("side-effects.txt");
    let service = SdkService::typescript_scenarios(&effects);
    let client = Client::new(&node);
    client.register(json!({"uri": service.uri})).await?;

    let submitted = client.call("Signup/k1/run/send", json!("Kim")).await?;
    assert_eq!(submitted.json()["status"], json!("Accepted"), "{}", submitted.body);
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.post_empty("Signup/k1/status").await?.json() != json!("waiting") {
        anyhow::ensure!(Instant::now() < deadline, "the run did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    node.kill();
    node.restart();
    node.wait_alive(crate::invocations::START_TIMEOUT).await?;
    let client = Client::new(&node);
    assert_eq!(client.post_empty("Signup/k1/status").await?.json(), json!("waiting"));
    let again = client.call("Signup/k1/run/send", json!("Kim")).await?;
    assert_eq!(again.json()["status"], json!("PreviouslyAccepted"), "{}", again.body);
    let accepted = client.call("Signup/k1/submitCode", json!("9")).await?;
    assert_eq!(accepted.json(), json!("accepted"), "{}", accepted.body);
    let result = client.ingress_get("restate/workflow/Signup/k1/attach").await?;
    assert_eq!(
        (result.status, result.json()),
        (200, json!("welcome Kim 9")),
        "{}",
        result.body
    );

    node.kill();
    node.restart();
    node.wait_alive(crate::invocations::START_TIMEOUT).await?;
    let client = Client::new(&node);
    let output = client.ingress_get("restate/workflow/Signup/k1/output").await?;
    assert_eq!(
        (output.status, output.json()),
        (200, json!("welcome Kim 9")),
        "{}",
        output.body
    );
    let rerun = client.call("Signup/k1/run", json!("Kim")).await?;
    assert_eq!(rerun.status, 409, "{}", rerun.body);
    let twice = client.call("Signup/k1/submitCode", json!("10")).await?;
    assert_eq!(twice.status, 409, "{}", twice.body);
    let runs = crate::invocations::side_effects(&effects);
    assert_eq!(
        runs.get("signup k1"),
        Some(&1),
        "the run's ctx.run executed once: {runs:?}"
    );
    Ok(())
}

#[tokio::test]
async fn python_sdk_workflow_and_awakeable() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let node = start_node(&dir, &[]).await?;
    let effects = dir.path().join("side-effects.txt");
    let service = SdkService::python_scenarios(&effects);
    let client = Client::new(&node);
    client.register(json!({"uri": service.uri})).await?;

    let submitted = client.call("Signup/p1/run/send", json!("Py")).await?;
    assert_eq!(submitted.json()["status"], json!("Accepted"), "{}", submitted.body);
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.post_empty("Signup/p1/status").await?.json() != json!("waiting") {
        anyhow::ensure!(Instant::now() < deadline, "the run did not start:\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        client.call("Signup/p1/submitCode", json!("7")).await?.json(),
        json!("accepted")
    );
    let result = client
        .request(
            reqwest::Method::GET,
            &format!("{}restate/workflow/Signup/p1/attach", client.ingress),
            None,
        )
        .await?;
    assert_eq!(result.json(), json!("welcome Py 7"), "{}", result.body);

    let accepted = client.call("Awaiter/awakeable/send", json!("pa")).await?;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let prefix = "awakeable pa ";
    let id = loop {
        if let Some(line) = crate::invocations::side_effects(&effects)
            .keys()
            .find(|l| l.starts_with(prefix))
        {
            break line[prefix.len()..].to_owned();
        }
        anyhow::ensure!(Instant::now() < deadline, "no awakeable was recorded:\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let resolved = client
        .request(
            reqwest::Method::POST,
            &format!("{}restate/awakeables/{id}/resolve", client.ingress),
            Some(json!("yes")),
        )
        .await?;
    assert_eq!(resolved.status, 202, "{}", resolved.body);
    crate::invocations::wait_for_side_effect(&effects, "resolved pa yes", Duration::from_secs(30)).await?;
    Ok(())
}
