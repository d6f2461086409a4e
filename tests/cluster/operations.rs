//! Operator changes through the admin API on a real node: journal retention keeps ended
//! invocations (output by id, restart as new, purge-journal, purge), and state edits
//! (`POST /services/{s}/state`) take effect between two handlers.

use serde_json::json;

use crate::invocations::scenario_node;

#[tokio::test]
async fn ended_invocations_are_kept_restarted_as_new_and_purged() -> anyhow::Result<()> {
    let setup = scenario_node(&[]).await?;
    let client = &setup.client;

    // A plain call, no idempotency key: kept for the journal retention (1 day by default).
    let greeted = client.call("Greeter/greet", json!("Sam")).await?;
    assert_eq!(greeted.json(), json!("Hello Sam!"), "{}", greeted.body);
    let id = greeted.header("x-restate-id").unwrap_or_default().to_owned();
    let output = client.ingress_get(&format!("restate/invocation/{id}/output")).await?;
    assert_eq!(
        (output.status, output.json()),
        (200, json!("Hello Sam!")),
        "{}",
        output.body
    );

    // Restarted as new: same input, new id, new run.
    let restarted = client.admin_patch(&format!("invocations/{id}/restart-as-new")).await?;
    assert_eq!(restarted.status, 200, "{}", restarted.body);
    let new_id = restarted.json()["new_invocation_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(new_id.starts_with("inv_1") && new_id != id, "{}", restarted.body);
    let attached = client
        .ingress_get(&format!("restate/invocation/{new_id}/attach"))
        .await?;
    assert_eq!(
        (attached.status, attached.json()),
        (200, json!("Hello Sam!")),
        "{}",
        attached.body
    );

    // Refusals name the reason.
    let from = client
        .admin_patch(&format!("invocations/{id}/restart-as-new?from=3"))
        .await?;
    assert_eq!(from.status, 400, "{}", from.body);
    let unknown = client
        .admin_patch("invocations/inv_1b9bKJ4Qs3uL6vbMCc9CvNAoV8qLKqWWS1/restart-as-new")
        .await?;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    let running = client
        .request(
            reqwest::Method::POST,
            &format!("{}Sleeper/sleep/send", client.ingress),
            Some(json!(600_000)),
        )
        .await?;
    let sleeping = running.json()["invocationId"].as_str().unwrap_or_default().to_owned();
    let still_running = client
        .admin_patch(&format!("invocations/{sleeping}/restart-as-new"))
        .await?;
    assert_eq!(still_running.status, 409, "{}", still_running.body);
    let purge_running = client
        .admin_patch(&format!("invocations/{sleeping}/purge-journal"))
        .await?;
    assert_eq!(purge_running.status, 409, "{}", purge_running.body);

    // Without its journal the input is gone: 410; the result is still there.
    let purged = client.admin_patch(&format!("invocations/{id}/purge-journal")).await?;
    assert_eq!(purged.status, 200, "{}", purged.body);
    let gone = client.admin_patch(&format!("invocations/{id}/restart-as-new")).await?;
    assert_eq!(gone.status, 410, "{}", gone.body);
    let output = client.ingress_get(&format!("restate/invocation/{id}/output")).await?;
    assert_eq!(output.status, 200, "{}", output.body);

    let purged = client.admin_patch(&format!("invocations/{id}/purge")).await?;
    assert_eq!(purged.status, 200, "{}", purged.body);
    let output = client.ingress_get(&format!("restate/invocation/{id}/output")).await?;
    assert_eq!(output.status, 404, "{}", output.body);
    Ok(())
}

#[tokio::test]
async fn journal_retention_zero_forgets_ended_invocations() -> anyhow::Result<()> {
    let setup = scenario_node(&[("RESTATE_DEFAULT_JOURNAL_RETENTION", "0s")]).await?;
    let client = &setup.client;
    let greeted = client.call("Greeter/greet", json!("Sam")).await?;
    let id = greeted.header("x-restate-id").unwrap_or_default().to_owned();
    let output = client.ingress_get(&format!("restate/invocation/{id}/output")).await?;
    assert_eq!(output.status, 404, "{}", output.body);
    Ok(())
}

#[tokio::test]
async fn state_edits_replace_an_objects_state() -> anyhow::Result<()> {
    let setup = scenario_node(&[]).await?;
    let client = &setup.client;
    let state_url = format!("{}services/Counter/state", client.admin);
    let edit = |body: serde_json::Value| client.request(reqwest::Method::POST, &state_url, Some(body));

    client.call("Counter/alice/add", json!(5)).await?;
    // `41` as the JSON bytes the SDK stores.
    let edited = edit(json!({"object_key": "alice", "new_state": {"total": b"41".to_vec()}})).await?;
    assert_eq!(edited.status, 202, "{}", edited.body);
    client.eventually("Counter/alice/get", json!(null), json!(41)).await?;
    let added = client.call("Counter/alice/add", json!(1)).await?;
    assert_eq!(added.json(), json!(42), "{}", added.body);

    // A version that no longer matches changes nothing; the current one does.
    let stale = edit(json!({"object_key": "alice", "new_state": {"total": b"0".to_vec()}, "version": "stale"})).await?;
    assert_eq!(stale.status, 202, "{}", stale.body);
    let current = restate_types::state_version(&[(b"total".to_vec(), b"42".to_vec())]);
    let edited =
        edit(json!({"object_key": "alice", "new_state": {"total": b"7".to_vec()}, "version": current})).await?;
    assert_eq!(edited.status, 202, "{}", edited.body);
    client.eventually("Counter/alice/get", json!(null), json!(7)).await?;

    // Clearing: an empty state.
    let cleared = edit(json!({"object_key": "alice", "new_state": {}})).await?;
    assert_eq!(cleared.status, 202, "{}", cleared.body);
    client.eventually("Counter/alice/keys", json!(null), json!([])).await?;

    // Plain services have no state; unknown services are not found; bad bodies say why.
    let plain = client
        .request(
            reqwest::Method::POST,
            &format!("{}services/Greeter/state", client.admin),
            Some(json!({"object_key": "x", "new_state": {"a": [1]}})),
        )
        .await?;
    assert_eq!(plain.status, 400, "{}", plain.body);
    let unknown = client
        .request(
            reqwest::Method::POST,
            &format!("{}services/Nope/state", client.admin),
            Some(json!({"object_key": "x", "new_state": {"a": [1]}})),
        )
        .await?;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    let bad = edit(json!({"key": "x"})).await?;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("object_key"),
        "{}",
        bad.body
    );
    Ok(())
}
