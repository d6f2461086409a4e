//! Cancellation and kill of call trees, proxying and fan-out.

use super::*;

// ---------------------------------------------------------------------------------------------
// Cancellation

#[derive(Debug, Clone, Copy)]
enum CancelFrom {
    /// `PATCH /invocations/{id}/cancel`.
    AdminApi,
    /// Another handler: `ctx.invocation(id).cancel()` (the SendSignal command, signal 1).
    Context,
}

/// Upstream's `cancelFromAdminAPI` / `cancelFromContext` for one blocking operation: the
/// runner's call tree is built, the runner is canceled (again and again: the cancel may come
/// before the blocking call was made), the runner records the 409 of its call, and the
/// blocking object's key is unlocked.
async fn cancel_blocked(client: &Client, operation: &str, from: CancelFrom) -> anyhow::Result<()> {
    let key = format!("{operation}-{from:?}");
    let id = match from {
        CancelFrom::AdminApi => {
            send_keyed(
                client,
                &format!("ConfCancelRunner/{key}/startTest"),
                &format!("start-{key}"),
                json!(operation),
            )
            .await?
        }
        CancelFrom::Context => {
            let request = proxy_request("ConfCancelRunner", Some(key.as_str()), "startTest", &json!(operation));
            let sent = client
                .call_keyed("ConfProxy/oneWayCall", &format!("start-{key}"), request)
                .await?;
            anyhow::ensure!(sent.status == 200, "oneWayCall answered {}: {}", sent.status, sent.body);
            sent.json().as_str().unwrap_or_default().to_owned()
        }
    };
    let (id, key) = (id.as_str(), key.as_str());
    let holder = format!("ConfAwakeableHolder/{key}/hasAwakeable");
    let holder = holder.as_str();
    wait_until(
        &format!("{key}: the blocking object holds its awakeable"),
        move || async move { anyhow::Ok(client.post_empty(holder).await?.json() == json!(true)) },
    )
    .await?;
    let unlocked = client
        .call_keyed(
            &format!("ConfAwakeableHolder/{key}/unlock"),
            &format!("unlock-{key}"),
            json!("cancel"),
        )
        .await?;
    anyhow::ensure!(
        unlocked.status == 200,
        "unlock answered {}: {}",
        unlocked.status,
        unlocked.body
    );

    let verify = format!("ConfCancelRunner/{key}/verifyTest");
    let verify = verify.as_str();
    wait_until(
        &format!("{key}: the runner saw its call canceled"),
        move || async move {
            match from {
                CancelFrom::AdminApi => {
                    let cancel = client.admin_patch(&format!("invocations/{id}/cancel")).await?;
                    // 409/404: it already ended.
                    anyhow::ensure!(
                        matches!(cancel.status, 200 | 202 | 404 | 409),
                        "cancel answered {}: {}",
                        cancel.status,
                        cancel.body
                    );
                }
                CancelFrom::Context => {
                    let cancel = client.call("ConfUtils/cancelInvocation", json!(id)).await?;
                    anyhow::ensure!(cancel.status == 200, "cancelInvocation answered {}", cancel.body);
                }
            }
            let verified = call_within(client, verify, json!(null), Duration::from_secs(1)).await?;
            anyhow::Ok(verified.is_some_and(|answer| answer.json() == json!(true)))
        },
    )
    .await?;

    let blocking = format!("ConfCancelBlocking/{key}/isUnlocked");
    let blocking = blocking.as_str();
    wait_until(&format!("{key}: the blocking object is unlocked"), move || async move {
        let answer = call_within(client, blocking, json!(null), Duration::from_secs(1)).await?;
        anyhow::Ok(answer.is_some_and(|answer| answer.status == 200))
    })
    .await?;
    // The runner handled the 409 itself and ended normally.
    let output = client.ingress_get(&format!("restate/invocation/{id}/output")).await?;
    anyhow::ensure!(
        output.status == 200,
        "{key}: the runner answered {}: {}",
        output.status,
        output.body
    );
    Ok(())
}

#[tokio::test]
async fn cancellation() -> anyhow::Result<()> {
    cancellation_in(&[]).await
}

#[tokio::test]
async fn cancellation_one_partition_always_suspending() -> anyhow::Result<()> {
    cancellation_in(ONE_PARTITION_ALWAYS_SUSPENDING).await
}

async fn cancellation_in(variant: &[(&str, &str)]) -> anyhow::Result<()> {
    let s = setup_with(&[], variant).await?;
    for operation in ["SLEEP", "AWAKEABLE"] {
        for from in [CancelFrom::AdminApi, CancelFrom::Context] {
            cancel_blocked(&s.client, operation, from)
                .await
                .map_err(|e| anyhow::anyhow!("{e}\n{}", s.node.log()))?;
        }
    }
    Ok(())
}

/// The `CALL` case of upstream's Cancellation: the blocking object waits on a call to itself,
/// which is queued in its own inbox. The SDK propagates the cancel to that queued callee with
/// SendSignal(signal 1), which must end an invocation that has not started (as the admin
/// cancel does), or the callee starts once the lock is free and blocks the key again.
#[tokio::test]
async fn cancellation_of_a_queued_call() -> anyhow::Result<()> {
    cancellation_of_a_queued_call_in(&[]).await
}

#[tokio::test]
async fn cancellation_of_a_queued_call_one_partition_always_suspending() -> anyhow::Result<()> {
    cancellation_of_a_queued_call_in(ONE_PARTITION_ALWAYS_SUSPENDING).await
}

async fn cancellation_of_a_queued_call_in(variant: &[(&str, &str)]) -> anyhow::Result<()> {
    let s = setup_with(&[], variant).await?;
    for from in [CancelFrom::AdminApi, CancelFrom::Context] {
        cancel_blocked(&s.client, "CALL", from)
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n{}", s.node.log()))?;
    }
    Ok(())
}

/// What job schedulers do: cancel (or kill) an invocation that has not started, a delayed send
/// or one queued behind another on its object key, then send again under the same
/// idempotency key. As in Restate, the one that never ran is forgotten: whoever waited hears
/// 409, `output`/`attach` then answer 404, no row is left in `sys_invocation`, and the key is
/// free, so the new send is `Accepted` and runs.
#[tokio::test]
async fn cancelling_a_not_started_invocation_forgets_it_and_frees_its_key() -> anyhow::Result<()> {
    cancelling_a_not_started_invocation_forgets_it_and_frees_its_key_in(&[]).await
}

#[tokio::test]
async fn cancelling_a_not_started_invocation_forgets_it_and_frees_its_key_one_partition_always_suspending()
-> anyhow::Result<()> {
    cancelling_a_not_started_invocation_forgets_it_and_frees_its_key_in(ONE_PARTITION_ALWAYS_SUSPENDING).await
}

async fn cancelling_a_not_started_invocation_forgets_it_and_frees_its_key_in(
    variant: &[(&str, &str)],
) -> anyhow::Result<()> {
    let s = setup_with(&[], variant).await?;
    let client = &s.client;
    // The key's lock is held by a run blocked on its awakeable.
    let holder = send_keyed(client, "ConfBlocker/q/run", "holder", json!(null)).await?;
    let cases = [
        ("ConfCounter/sched/add/send?delay=1h", "scheduled", "cancel"),
        ("ConfCounter/sched2/add/send?delay=1h", "scheduled-killed", "kill"),
        ("ConfBlocker/q/run/send", "queued", "cancel"),
    ];
    for (path, key, how) in cases {
        let answer = client.call_keyed(path, key, json!(5)).await?;
        assert_eq!(answer.status, 202, "{}", answer.body);
        assert_eq!(answer.json()["status"], json!("Accepted"));
        let id = answer.json()["invocationId"].as_str().unwrap_or_default().to_owned();
        // A caller waiting on it hears the cancel.
        let waiter = {
            let url = format!("{}restate/invocation/{id}/attach", client.ingress);
            let http = client.http().clone();
            tokio::spawn(async move { http.get(url).send().await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ended = client.admin_patch(&format!("invocations/{id}/{how}")).await?;
        assert_eq!(ended.status, 200, "{key}: {}", ended.body);
        let waited = waiter.await??;
        let status = waited.status().as_u16();
        let body: Value = waited.json().await?;
        let reason = if how == "kill" { "killed" } else { "canceled" };
        assert_eq!((status, body["message"].clone()), (409, json!(reason)), "{key}");
        // Nothing of it is kept.
        let output = client.ingress_get(&format!("restate/invocation/{id}/output")).await?;
        assert_eq!(output.status, 404, "{key}: {}", output.body);
        let attach = client.ingress_get(&format!("restate/invocation/{id}/attach")).await?;
        assert_eq!(attach.status, 404, "{key}: {}", attach.body);
        let rows = client
            .query(&format!("SELECT id FROM sys_invocation WHERE id = '{id}'"))
            .await?;
        assert!(rows.is_empty(), "{key}: {rows:?}");
        // The same key sends anew, and the new one runs.
        let again = client.call_keyed(&path.replace("?delay=1h", ""), key, json!(5)).await?;
        assert_eq!(again.status, 202, "{}", again.body);
        assert_eq!(again.json()["status"], json!("Accepted"), "{key}: {}", again.body);
        let repeated = client.call_keyed(&path.replace("?delay=1h", ""), key, json!(5)).await?;
        assert_eq!(repeated.json()["status"], json!("PreviouslyAccepted"), "{key}");
    }
    for counter in ["sched", "sched2"] {
        let path = format!("ConfCounter/{counter}/get");
        wait_until(&format!("{counter} counts the new send once"), || async {
            anyhow::Ok(client.post_empty(&path).await?.json() == json!(5))
        })
        .await?;
    }
    // The queued one runs once the holder lets go (both wait on their own awakeables).
    wait_until("the holder holds its awakeable", || async {
        anyhow::Ok(client.post_empty("ConfBlocker/q/getAwakeable").await?.json() != json!(""))
    })
    .await?;
    let resolved = client.call("ConfBlocker/q/resolveAwakeable", json!("first")).await?;
    assert_eq!(resolved.status, 200, "{}", resolved.body);
    let first = client
        .ingress_get(&format!("restate/invocation/{holder}/attach"))
        .await?;
    assert_eq!(first.json(), json!("first"));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// KillInvocation

#[tokio::test]
async fn kill_invocation() -> anyhow::Result<()> {
    kill_invocation_in(&[]).await
}

#[tokio::test]
async fn kill_invocation_one_partition_always_suspending() -> anyhow::Result<()> {
    kill_invocation_in(ONE_PARTITION_ALWAYS_SUSPENDING).await
}

async fn kill_invocation_in(variant: &[(&str, &str)]) -> anyhow::Result<()> {
    let s = setup_with(&[], variant).await?;
    let client = &s.client;
    let id = send_keyed(client, "ConfKillRunner/tree/startCallTree", "start-tree", json!(null)).await?;
    let id = id.as_str();
    // The call tree is built once the singleton holds its awakeable.
    wait_until("the singleton holds its awakeable", move || async move {
        anyhow::Ok(client.post_empty("ConfAwakeableHolder/tree/hasAwakeable").await?.json() == json!(true))
    })
    .await?;
    let unlocked = client
        .call_keyed("ConfAwakeableHolder/tree/unlock", "unlock-tree", json!("cancel"))
        .await?;
    assert_eq!(unlocked.status, 200, "{}", unlocked.body);

    // The singleton now waits for a call to itself, queued behind its own lock. Kill the root.
    wait_until("the kill is accepted", move || async move {
        let kill = client.admin_patch(&format!("invocations/{id}/kill")).await?;
        anyhow::Ok(kill.status == 200)
    })
    .await?;
    let output = client.ingress_get(&format!("restate/invocation/{id}/output")).await?;
    assert_eq!(
        (output.status, output.json()["message"].clone()),
        (409, json!("killed")),
        "{}",
        output.body
    );
    // The kill reached the whole tree: the singleton's key is free again.
    wait_until("the singleton is unlocked after the kill", move || async move {
        let answer = call_within(
            client,
            "ConfKillSingleton/tree/isUnlocked",
            json!(null),
            Duration::from_secs(1),
        )
        .await?;
        anyhow::Ok(answer.is_some_and(|answer| answer.status == 200))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", s.node.log()))?;
    // Nothing of the tree ran on: no new awakeable was handed to the holder.
    assert_eq!(
        client.post_empty("ConfAwakeableHolder/tree/hasAwakeable").await?.json(),
        json!(false)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// ServiceToServiceCommunication (the Proxy service) and fan-out

#[tokio::test]
async fn proxy_and_fan_out() -> anyhow::Result<()> {
    proxy_and_fan_out_in(&[]).await
}

#[tokio::test]
async fn proxy_and_fan_out_one_partition_always_suspending() -> anyhow::Result<()> {
    proxy_and_fan_out_in(ONE_PARTITION_ALWAYS_SUSPENDING).await
}

async fn proxy_and_fan_out_in(variant: &[(&str, &str)]) -> anyhow::Result<()> {
    let s = setup_with(&[], variant).await?;
    let client = &s.client;

    // regularCall: the callee's answer comes back byte for byte.
    let request = proxy_request("ConfUtils", None, "uppercaseEcho", &json!("ping"));
    let called = client.call_keyed("ConfProxy/call", "regular", request).await?;
    assert_eq!(unbytes(&called), json!("PING"), "{}\n{}", called.body, s.node.log());

    // oneWayCall.
    let request = proxy_request("ConfCounter", Some("one-way"), "add", &json!(1));
    let sent = client.call_keyed("ConfProxy/oneWayCall", "one-way", request).await?;
    assert_eq!(sent.status, 200, "{}", sent.body);
    client
        .eventually("ConfCounter/one-way/get", json!(null), json!(1))
        .await?;

    // oneWayCallWithIdempotencyKey: twice, one invocation; its output by idempotency key.
    let mut request = proxy_request("ConfCounter", Some("one-way-ik"), "add", &json!(1));
    request["idempotencyKey"] = json!("ik-send");
    let first = client.call("ConfProxy/oneWayCall", request.clone()).await?;
    let second = client.call("ConfProxy/oneWayCall", request).await?;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        first.json(),
        second.json(),
        "the same idempotency key started two invocations"
    );
    client
        .eventually("ConfCounter/one-way-ik/get", json!(null), json!(1))
        .await?;
    let output = client
        .ingress_get("restate/invocation/ConfCounter/one-way-ik/add/ik-send/output")
        .await?;
    assert_eq!(
        (output.status, output.json()),
        (200, json!({"oldValue": 0, "newValue": 1})),
        "{}",
        output.body
    );
    assert_eq!(output.header("x-restate-id"), first.json().as_str());

    // callWithIdempotencyKey: twice, the same answer from one execution.
    let mut request = proxy_request("ConfCounter", Some("call-ik"), "add", &json!(1));
    request["idempotencyKey"] = json!("ik-call");
    for _ in 0..2 {
        let answer = client.call("ConfProxy/call", request.clone()).await?;
        assert_eq!(
            unbytes(&answer),
            json!({"oldValue": 0, "newValue": 1}),
            "{}",
            answer.body
        );
    }
    assert_eq!(client.post_empty("ConfCounter/call-ik/get").await?.json(), json!(1));
    let output = client
        .ingress_get("restate/invocation/ConfCounter/call-ik/add/ik-call/output")
        .await?;
    assert_eq!(output.json(), json!({"oldValue": 0, "newValue": 1}), "{}", output.body);

    // oneWayCallWithDelay: ten delayed sends; none runs before its delay, and the delays run
    // side by side (not one after the other in the object's queue).
    let delay = Duration::from_secs(2);
    let started = Instant::now();
    for i in 0..10 {
        let mut request = proxy_request("ConfCounter", Some("delayed"), "add", &json!(1));
        request["delayMillis"] = json!(delay.as_millis() as u64);
        let sent = client
            .call_keyed("ConfProxy/oneWayCall", &format!("delayed-{i}"), request)
            .await?;
        assert_eq!(sent.status, 200, "{}", sent.body);
    }
    if started.elapsed() < delay / 2 {
        assert_eq!(client.post_empty("ConfCounter/delayed/get").await?.json(), json!(0));
    }
    client
        .eventually("ConfCounter/delayed/get", json!(null), json!(10))
        .await?;
    let elapsed = started.elapsed();
    assert!(elapsed >= delay, "the delayed sends ran after {elapsed:?}");
    assert!(elapsed < delay * 5, "the delayed sends took {elapsed:?}");

    // Fan-out: 10 sends and 10 calls (awaited at the end) from one handler.
    let calls: Vec<Value> = (0..20)
        .map(|i| {
            let one_way = i % 2 == 0;
            json!({
                "proxyRequest": proxy_request("ConfCounter", Some("fan"), "add", &json!(1)),
                "oneWayCall": one_way,
                "awaitAtTheEnd": !one_way,
            })
        })
        .collect();
    let fanned = client
        .call_keyed("ConfProxy/manyCalls", "fan-out", json!(calls))
        .await?;
    assert_eq!(fanned.status, 200, "{}", fanned.body);
    // The 10 calls have answered, so at least 10 adds ran; the sends follow.
    let now = client
        .post_empty("ConfCounter/fan/get")
        .await?
        .json()
        .as_u64()
        .unwrap_or(0);
    assert!(now >= 10, "only {now} adds ran when manyCalls answered");
    client.eventually("ConfCounter/fan/get", json!(null), json!(20)).await?;
    Ok(())
}
