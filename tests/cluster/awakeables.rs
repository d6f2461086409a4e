//! Awakeables: a handler waits for an id that the ingress (`/restate/awakeables/…`) or another
//! handler completes, also across a `kill -9` of the node while it waits suspended.

use std::time::{Duration, Instant};

use restate_cluster_tests::TestDir;
use restate_cluster_tests::servers::SdkService;
use serde_json::json;

use crate::invocations::{Client, START_TIMEOUT, side_effects, start_node, wait_for_side_effect};

const WAIT: Duration = Duration::from_secs(30);

/// The awakeable id the `Awaiter/awakeable` invocation tagged `tag` recorded.
async fn awakeable_id(effects: &std::path::Path, tag: &str) -> anyhow::Result<String> {
    let prefix = format!("awakeable {tag} ");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(line) = side_effects(effects).keys().find(|line| line.starts_with(&prefix)) {
            return Ok(line[prefix.len()..].to_owned());
        }
        anyhow::ensure!(Instant::now() < deadline, "no awakeable recorded for {tag}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn awakeables_are_completed_through_the_ingress_and_by_handlers() -> anyhow::Result<()> {
    let dir = TestDir::new();
    // Idle attempts suspend quickly, so the completions also resume suspended invocations.
    let mut node = start_node(&dir, &[("RESTATE_WORKER__INVOKER__INACTIVITY_TIMEOUT", "300ms")]).await?;
    let effects = dir.path().join("side-effects.txt");
    let service = SdkService::typescript_scenarios(&effects);
    let client = Client::new(&node);
    client.register(json!({"uri": service.uri})).await?;

    let mut ids = std::collections::HashMap::new();
    for tag in ["a1", "a2", "a3", "a4"] {
        let accepted = client.call("Awaiter/awakeable/send", json!(tag)).await?;
        assert_eq!(accepted.status, 202, "{}\n{}", accepted.body, node.log());
        ids.insert(
            tag,
            accepted.json()["invocationId"].as_str().unwrap_or_default().to_owned(),
        );
    }
    let a1 = awakeable_id(&effects, "a1").await?;
    assert!(a1.starts_with("sign_1"), "{a1}");
    let resolved = client
        .request(
            reqwest::Method::POST,
            &format!("{}restate/awakeables/{a1}/resolve", client.ingress),
            Some(json!("yes")),
        )
        .await?;
    assert_eq!((resolved.status, resolved.body.as_str()), (202, ""));
    wait_for_side_effect(&effects, "resolved a1 yes", WAIT).await?;

    let a2 = awakeable_id(&effects, "a2").await?;
    let rejected = client
        .http()
        .post(format!("{}restate/a/{a2}/reject", client.ingress))
        .header("content-type", "text/plain")
        .body("nope")
        .send()
        .await?;
    assert_eq!(rejected.status().as_u16(), 202);
    wait_for_side_effect(&effects, "rejected a2 nope", WAIT).await?;

    // Another handler completes one.
    let a3 = awakeable_id(&effects, "a3").await?;
    let by_handler = client
        .call("Awaiter/resolve", json!({"id": a3, "value": "from-handler"}))
        .await?;
    assert_eq!(by_handler.json(), json!("resolved"), "{}", by_handler.body);
    wait_for_side_effect(&effects, "resolved a3 from-handler", WAIT).await?;
    // Its `ctx.run` is durable once it ended (killed before that, the run would run again:
    // `ctx.run` is at least once).
    let a3_output = client
        .ingress_get(&format!("restate/invocation/{}/attach", ids["a3"]))
        .await?;
    assert_eq!(a3_output.json(), json!("from-handler"), "{}", a3_output.body);

    // The node dies while a4 waits; after the restart the awakeable still completes it, once.
    let a4 = awakeable_id(&effects, "a4").await?;
    node.kill();
    node.restart();
    node.wait_alive(START_TIMEOUT).await?;
    let client = Client::new(&node);
    let resolved = client
        .request(
            reqwest::Method::POST,
            &format!("{}restate/awakeables/{a4}/resolve", client.ingress),
            Some(json!("after-restart")),
        )
        .await?;
    assert_eq!(resolved.status, 202, "{}", resolved.body);
    wait_for_side_effect(&effects, "resolved a4 after-restart", WAIT).await?;

    // Completing again changes nothing; bad ids are refused with the reason.
    let again = client
        .request(
            reqwest::Method::POST,
            &format!("{}restate/awakeables/{a1}/resolve", client.ingress),
            Some(json!("twice")),
        )
        .await?;
    assert_eq!(again.status, 202);
    let bad = client
        .request(
            reqwest::Method::POST,
            &format!("{}restate/awakeables/sign_1bad/resolve", client.ingress),
            Some(json!("x")),
        )
        .await?;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("bad awakeable id 'sign_1bad'")
    );
    // An id naming the cancel signal (or another reserved index) of a known invocation is not
    // an awakeable: refused, and the invocation is not cancelled through it.
    let a5 = {
        let accepted = client.call("Awaiter/awakeable/send", json!("a5")).await?;
        awakeable_id(&effects, "a5").await?;
        accepted.json()["invocationId"].as_str().unwrap_or_default().to_owned()
    };
    let cancel = restate_types::AwakeableId {
        invocation: a5.parse()?,
        signal_index: 1,
    };
    let forged = client
        .request(
            reqwest::Method::POST,
            &format!("{}restate/awakeables/{cancel}/resolve", client.ingress),
            Some(json!("x")),
        )
        .await?;
    assert_eq!(forged.status, 400, "{}", forged.body);
    assert!(forged.body.contains("signal index 1 is reserved"), "{}", forged.body);
    let status = client
        .query(&format!("SELECT status FROM sys_invocation WHERE id = '{a5}'"))
        .await?;
    assert_ne!(status[0]["status"], json!("completed"), "{status:?}");
    let wrong_method = client
        .request(
            reqwest::Method::GET,
            &format!("{}restate/awakeables/{a1}/resolve", client.ingress),
            None,
        )
        .await?;
    assert_eq!(wrong_method.status, 405);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = side_effects(&effects);
    for (line, count) in &counts {
        assert_eq!(*count, 1, "'{line}' happened {count} times: {counts:?}");
    }
    assert!(!counts.keys().any(|line| line.contains("twice")));
    Ok(())
}
