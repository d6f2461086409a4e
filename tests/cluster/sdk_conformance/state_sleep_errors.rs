//! State, sleep and timers, user errors and retries.

use super::*;

// ---------------------------------------------------------------------------------------------
// State

#[tokio::test]
async fn state() -> anyhow::Result<()> {
    state_scenarios(&[]).await
}

#[tokio::test]
async fn state_one_partition_always_suspending() -> anyhow::Result<()> {
    state_scenarios(ONE_PARTITION_ALWAYS_SUSPENDING).await
}

async fn state_scenarios(env: &[(&str, &str)]) -> anyhow::Result<()> {
    let s = setup(env).await?;
    let client = &s.client;

    // add: each answer has the value before and after.
    let first = client.call_keyed("ConfCounter/adds/add", "add-1", json!(1)).await?;
    assert_eq!(
        (first.status, first.json()),
        (200, json!({"oldValue": 0, "newValue": 1})),
        "{}\n{}",
        first.body,
        s.node.log()
    );
    let second = client.call_keyed("ConfCounter/adds/add", "add-2", json!(2)).await?;
    assert_eq!(second.json(), json!({"oldValue": 1, "newValue": 3}), "{}", second.body);
    // The same idempotency key again: the first answer, no third add.
    let again = client.call_keyed("ConfCounter/adds/add", "add-2", json!(2)).await?;
    assert_eq!(again.json(), second.json(), "{}", again.body);
    assert_eq!(client.post_empty("ConfCounter/adds/get").await?.json(), json!(3));

    // proxyOneWayAdd: three one-way adds through a proxy service.
    for i in 0..3 {
        let request = proxy_request("ConfCounter", Some("proxied"), "add", &json!(1));
        let sent = client
            .call_keyed("ConfProxy/oneWayCall", &format!("proxy-add-{i}"), request)
            .await?;
        assert_eq!(sent.status, 200, "{}", sent.body);
        assert!(
            sent.json().as_str().is_some_and(|id| id.starts_with("inv_")),
            "{}",
            sent.body
        );
    }
    client
        .eventually("ConfCounter/proxied/get", json!(null), json!(3))
        .await?;

    // listStateAndClearAll: clearAll answers and removes every entry of one object only.
    for (map, key, value) in [
        ("map", "my-key-0", "my-value-0"),
        ("map", "my-key-1", "my-value-1"),
        ("map1", "my-key-2", "my-value-2"),
    ] {
        let set = client
            .call_keyed(
                &format!("ConfMap/{map}/set"),
                &format!("set-{map}-{key}"),
                json!({"key": key, "value": value}),
            )
            .await?;
        assert_eq!(set.status, 200, "{}", set.body);
    }
    assert_eq!(
        client.post_empty("ConfMap/map/keys").await?.json(),
        json!(["my-key-0", "my-key-1"])
    );
    let cleared = client
        .call_keyed("ConfMap/map/clearAll", "clear-map", json!(null))
        .await?;
    let mut removed: Vec<String> = cleared
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|entry| entry["key"].as_str().map(str::to_owned))
        .collect();
    removed.sort();
    assert_eq!(removed, ["my-key-0", "my-key-1"], "{}", cleared.body);
    for key in ["my-key-0", "my-key-1"] {
        assert_eq!(client.call("ConfMap/map/get", json!(key)).await?.json(), json!(""));
    }
    assert_eq!(client.post_empty("ConfMap/map/keys").await?.json(), json!([]));
    assert_eq!(
        client.call("ConfMap/map1/get", json!("my-key-2")).await?.json(),
        json!("my-value-2")
    );

    // Clearing one entry.
    let reset = client
        .call_keyed("ConfCounter/adds/reset", "reset-adds", json!(null))
        .await?;
    assert_eq!(reset.status, 200, "{}", reset.body);
    assert_eq!(client.post_empty("ConfCounter/adds/get").await?.json(), json!(0));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Sleep

#[tokio::test]
async fn sleep() -> anyhow::Result<()> {
    sleep_scenarios(&[]).await
}

#[tokio::test]
async fn sleep_one_partition_always_suspending() -> anyhow::Result<()> {
    sleep_scenarios(ONE_PARTITION_ALWAYS_SUSPENDING).await
}

async fn sleep_scenarios(env: &[(&str, &str)]) -> anyhow::Result<()> {
    let s = setup(env).await?;

    // One short timer: the answer comes no sooner than it fires.
    let started = Instant::now();
    let slept = s
        .client
        .call_keyed("ConfSleep/one/sleep", "sleep-one", json!(10))
        .await?;
    assert_eq!(slept.json(), json!("slept"), "{}\n{}", slept.body, s.node.log());
    assert!(started.elapsed() >= Duration::from_millis(10));

    // manySleeps: 50 invocations at once, each waiting for 20 timers of 10-50 ms together.
    let many = async {
        let mut invocations = tokio::task::JoinSet::new();
        for i in 0..50 {
            let client = Client::new(&s.node);
            let timers: Vec<u64> = (0..20).map(|_| rand::random_range(10..=50)).collect();
            invocations.spawn(async move {
                client
                    .call_keyed(
                        &format!("ConfSleep/many-{i}/sleepMany"),
                        &format!("many-{i}"),
                        json!(timers),
                    )
                    .await
            });
        }
        while let Some(joined) = invocations.join_next().await {
            let answer = joined??;
            anyhow::ensure!(
                answer.status == 200 && answer.json() == json!(20),
                "a sleepMany answered {}: {}",
                answer.status,
                answer.body
            );
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(60), many)
        .await
        .map_err(|_| anyhow::anyhow!("50 x 20 timers did not all fire within 60 s"))??;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// UserErrors

#[tokio::test]
async fn user_errors() -> anyhow::Result<()> {
    user_errors_in(&[]).await
}

#[tokio::test]
async fn user_errors_one_partition_always_suspending() -> anyhow::Result<()> {
    user_errors_in(ONE_PARTITION_ALWAYS_SUSPENDING).await
}

async fn user_errors_in(variant: &[(&str, &str)]) -> anyhow::Result<()> {
    let s = setup_with(&[], variant).await?;
    let client = &s.client;

    // A terminal error, several times in a row (the deployment stays usable after each).
    for round in 0..3 {
        let failed = client
            .call_keyed(
                &format!("ConfFailing/fail-{round}/terminallyFailingCall"),
                &format!("fail-{round}"),
                json!({"errorMessage": "my error"}),
            )
            .await?;
        assert_failed(&failed, "my error");
        assert_eq!(failed.json()["source"], json!("invocation"), "{}", failed.body);
    }
    // Its code becomes the ingress's status.
    let coded = client
        .call_keyed(
            "ConfFailing/coded/terminallyFailingCall",
            "coded",
            json!({"errorMessage": "unprocessable", "code": 422}),
        )
        .await?;
    assert_eq!(
        (coded.status, coded.json()["code"].clone()),
        (422, json!(422)),
        "{}",
        coded.body
    );

    // A callee's terminal error fails the caller with the same message (and code).
    let propagated = client
        .call_keyed(
            "ConfFailing/caller/callTerminallyFailingCall",
            "propagated",
            json!({"errorMessage": "propagated error", "code": 418}),
        )
        .await?;
    assert_failed(&propagated, "propagated error");
    assert_eq!(propagated.status, 418, "{}", propagated.body);

    // A terminal error thrown inside ctx.run.
    let side_effect = client
        .call_keyed(
            "ConfFailing/run/terminallyFailingSideEffect",
            "side-effect",
            json!({"errorMessage": "failed side effect"}),
        )
        .await?;
    assert_failed(&side_effect, "failed side effect");

    // setStateThenFailShouldPersistState: the state written before the failure is kept.
    let failed = client
        .call_keyed("ConfCounter/my-failure-counter/addThenFail", "add-then-fail", json!(1))
        .await?;
    assert_failed(&failed, "my-failure-counter");
    assert_eq!(
        client.post_empty("ConfCounter/my-failure-counter/get").await?.json(),
        json!(1)
    );

    // invocationWithEventualSuccess: retried after 3 retryable failures, answers attempt 4.
    let eventual = client
        .call_keyed(
            "ConfFailing/eventual/failingCallWithEventualSuccess",
            "eventual",
            json!(null),
        )
        .await?;
    assert_eq!(
        (eventual.status, eventual.json()),
        (200, json!(4)),
        "{}\n{}",
        eventual.body,
        s.node.log()
    );
    Ok(())
}

/// Upstream's `...WithMetadata` cases: the error's metadata map is in the ingress's JSON.
#[tokio::test]
async fn user_errors_with_metadata() -> anyhow::Result<()> {
    user_errors_with_metadata_in(&[]).await
}

#[tokio::test]
async fn user_errors_with_metadata_one_partition_always_suspending() -> anyhow::Result<()> {
    user_errors_with_metadata_in(ONE_PARTITION_ALWAYS_SUSPENDING).await
}

async fn user_errors_with_metadata_in(variant: &[(&str, &str)]) -> anyhow::Result<()> {
    let s = setup_with(&[], variant).await?;
    let metadata = json!({"key1": "value1", "key2": "value2"});
    for (handler, text) in [
        ("terminallyFailingCall", "my error with metadata"),
        ("callTerminallyFailingCall", "propagated error with metadata"),
        ("terminallyFailingSideEffect", "failed side effect with metadata"),
    ] {
        for round in 0..3 {
            let failed = s
                .client
                .call_keyed(
                    &format!("ConfFailing/meta-{round}/{handler}"),
                    &format!("meta-{handler}-{round}"),
                    json!({"errorMessage": text, "metadata": metadata}),
                )
                .await?;
            assert_failed(&failed, text);
            assert_eq!(failed.json()["metadata"], metadata, "{handler}: {}", failed.body);
        }
    }
    Ok(())
}
