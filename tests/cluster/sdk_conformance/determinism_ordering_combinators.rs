//! Non-determinism detection, call ordering and promise combinators.

use super::*;

// ---------------------------------------------------------------------------------------------
// NonDeterminismErrors

const NON_DETERMINISTIC: [&str; 4] = [
    "leftSleepRightCall",
    "callDifferentMethod",
    "backgroundInvokeWithDifferentTargets",
    "setDifferentKey",
];

/// Retries give up after 3 attempts, 10 ms apart; every await suspends, so the second
/// attempt replays the journal the first one wrote.
fn fast_giving_up(on_max_attempts: &'static str) -> [(&'static str, &'static str); 4] {
    [
        ("RESTATE_DEFAULT_RETRY_POLICY__MAX_ATTEMPTS", "3"),
        ("RESTATE_DEFAULT_RETRY_POLICY__INITIAL_INTERVAL", "10ms"),
        ("RESTATE_DEFAULT_RETRY_POLICY__ON_MAX_ATTEMPTS", on_max_attempts),
        ("RESTATE_WORKER__INVOKER__INACTIVITY_TIMEOUT", "0s"),
    ]
}

/// Failed attempts of `id` in the node's log (`invocation attempt failed: ... invocation=<id>`).
fn failed_attempts(node: &TestNode, id: &str) -> usize {
    node.log().matches(&format!("invocation={id} ")).count()
}

/// On a journal mismatch (570) the invocation fails once its attempts are used up; the
/// handler never reaches its end (ConfCounter/<handler> stays at 1); the key is unlocked and
/// other keys of the object work.
#[tokio::test]
async fn non_determinism() -> anyhow::Result<()> {
    non_determinism_in(&[]).await
}

#[tokio::test]
async fn non_determinism_one_partition_always_suspending() -> anyhow::Result<()> {
    non_determinism_in(ONE_PARTITION_ALWAYS_SUSPENDING).await
}

async fn non_determinism_in(variant: &[(&str, &str)]) -> anyhow::Result<()> {
    let s = setup_with(&fast_giving_up("kill"), variant).await?;
    let client = &s.client;
    for handler in NON_DETERMINISTIC {
        // The counter exists before (upstream adds 1 first).
        let added = client
            .call_keyed(
                &format!("ConfCounter/{handler}/add"),
                &format!("pre-{handler}"),
                json!(1),
            )
            .await?;
        assert_eq!(added.status, 200, "{}", added.body);

        let failed = client
            .call_keyed(
                &format!("ConfNonDeterministic/{handler}/{handler}"),
                &format!("nd-{handler}"),
                json!(null),
            )
            .await?;
        assert_eq!(failed.status, 570, "{handler}: {}\n{}", failed.body, s.node.log());
        assert_failed(&failed, "mismatch");

        // The add at the handler's end never happens.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            client.post_empty(&format!("ConfCounter/{handler}/get")).await?.json(),
            json!(1),
            "{handler}"
        );
        // The same key is free again, and another key works.
        for key in [handler.to_owned(), format!("other-{handler}")] {
            let steady = call_within(
                client,
                &format!("ConfNonDeterministic/{}/steady", segment(&key)),
                json!(null),
                Duration::from_secs(10),
            )
            .await?;
            let steady = steady.ok_or_else(|| anyhow::anyhow!("{key}: steady did not answer (still locked?)"))?;
            assert_eq!(
                (steady.status, steady.json()),
                (200, json!(1)),
                "{key}: {}",
                steady.body
            );
        }
    }
    Ok(())
}

/// The same with `on-max-attempts = pause`: after 3 failed attempts no further attempt runs
/// and there is no output; a resume runs it again (and it fails again); a kill then ends it.
#[tokio::test]
async fn non_determinism_paused() -> anyhow::Result<()> {
    non_determinism_paused_in(&[]).await
}

#[tokio::test]
async fn non_determinism_paused_one_partition_always_suspending() -> anyhow::Result<()> {
    non_determinism_paused_in(ONE_PARTITION_ALWAYS_SUSPENDING).await
}

async fn non_determinism_paused_in(variant: &[(&str, &str)]) -> anyhow::Result<()> {
    let s = setup_with(&fast_giving_up("pause"), variant).await?;
    let client = &s.client;
    let node = &s.node;
    let handler = "setDifferentKey";
    let added = client
        .call_keyed(&format!("ConfCounter/{handler}/add"), "pre", json!(1))
        .await?;
    assert_eq!(added.status, 200, "{}", added.body);
    let id = send_keyed(
        client,
        &format!("ConfNonDeterministic/{handler}/{handler}"),
        "nd-paused",
        json!(null),
    )
    .await?;
    let id = id.as_str();
    wait_until("3 failed attempts", move || async move {
        anyhow::Ok(failed_attempts(node, id) >= 3)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(failed_attempts(node, id), 3, "{}", node.log());
    let output = client.ingress_get(&format!("restate/invocation/{id}/output")).await?;
    assert_eq!(output.status, 470, "{}", output.body);
    // The admin API shows it paused, with the mismatch as its last failure.
    let rows = client
        .query(&format!(
            "SELECT status, retry_count, last_failure, last_failure_error_code FROM sys_invocation WHERE id = '{id}'"
        ))
        .await?;
    let row = rows.first().cloned().unwrap_or_default();
    assert_eq!(row["status"], json!("paused"), "{rows:?}");
    assert_eq!(row["retry_count"], json!(3), "{rows:?}");
    assert_eq!(row["last_failure_error_code"], json!("570"), "{rows:?}");
    assert!(
        row["last_failure"].as_str().unwrap_or_default().contains("mismatch"),
        "{rows:?}"
    );

    // A resume starts another attempt, which mismatches again.
    let resumed = client.admin_patch(&format!("invocations/{id}/resume")).await?;
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    wait_until("a failed attempt after the resume", move || async move {
        anyhow::Ok(failed_attempts(node, id) > 3)
    })
    .await?;

    let killed = client.admin_patch(&format!("invocations/{id}/kill")).await?;
    assert_eq!(killed.status, 200, "{}", killed.body);
    let output = client.ingress_get(&format!("restate/invocation/{id}/output")).await?;
    assert_eq!(
        (output.status, output.json()["message"].clone()),
        (409, json!("killed"))
    );
    assert_eq!(
        client.post_empty(&format!("ConfCounter/{handler}/get")).await?.json(),
        json!(1)
    );
    let steady = call_within(
        client,
        &format!("ConfNonDeterministic/{handler}/steady"),
        json!(null),
        Duration::from_secs(10),
    )
    .await?
    .ok_or_else(|| anyhow::anyhow!("the key stayed locked after the kill"))?;
    assert_eq!(steady.json(), json!(1), "{}", steady.body);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// CallOrdering

#[tokio::test]
async fn call_ordering() -> anyhow::Result<()> {
    call_ordering_in(&[]).await
}

#[tokio::test]
async fn call_ordering_one_partition_always_suspending() -> anyhow::Result<()> {
    call_ordering_in(ONE_PARTITION_ALWAYS_SUSPENDING).await
}

async fn call_ordering_in(variant: &[(&str, &str)]) -> anyhow::Result<()> {
    let s = setup_with(&[], variant).await?;
    // true: a one-way send; false: a call awaited at the end. The last one is a call, so all
    // have run when manyCalls answers.
    let orderings = [[true, false, false], [false, true, false], [true, true, false]];
    for (n, ordering) in orderings.iter().enumerate() {
        let list = format!("list-{n}");
        let calls: Vec<Value> = ordering
            .iter()
            .enumerate()
            .map(|(index, &one_way)| {
                json!({
                    "proxyRequest": proxy_request("ConfList", Some(list.as_str()), "append", &json!(index.to_string())),
                    "oneWayCall": one_way,
                    "awaitAtTheEnd": !one_way,
                })
            })
            .collect();
        let answered = s
            .client
            .call_keyed("ConfProxy/manyCalls", &format!("order-{n}"), json!(calls))
            .await?;
        assert_eq!(answered.status, 200, "{}\n{}", answered.body, s.node.log());
        let cleared = s
            .client
            .call_keyed(&format!("ConfList/{list}/clear"), &format!("clear-{n}"), json!(null))
            .await?;
        assert_eq!(cleared.json(), json!(["0", "1", "2"]), "{ordering:?}: {}", cleared.body);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Combinators

#[tokio::test]
async fn combinators() -> anyhow::Result<()> {
    combinator_scenarios(&[]).await
}

#[tokio::test]
async fn combinators_one_partition_always_suspending() -> anyhow::Result<()> {
    combinator_scenarios(ONE_PARTITION_ALWAYS_SUSPENDING).await
}

async fn combinator_scenarios(env: &[(&str, &str)]) -> anyhow::Result<()> {
    let s = setup(env).await?;
    let client = &s.client;
    let combine = |key: &str| format!("ConfCombinators/{key}/combine");

    // awakeableOrTimeoutUsingAwaitAny: nobody completes the awakeable, the timer wins.
    let raced = client
        .call_keyed(
            &combine("race"),
            "race",
            json!({"mode": "race", "of": [{"awakeable": "awk1"}, {"sleep": 100}]}),
        )
        .await?;
    assert_eq!(raced.json(), json!("sleep"), "{}\n{}", raced.body, s.node.log());

    // awakeableOrTimeoutUsingAwakeableTimeoutCommand.
    let timed_out = client
        .call_keyed(
            "ConfCombinators/timeout/awakeableOrTimeout",
            "timeout",
            json!({"name": "should-timeout-awk", "timeoutMillis": 100}),
        )
        .await?;
    assert_failed(&timed_out, "await-timeout");

    // firstSuccessfulCompletedAwakeable: failing runs and a rejected awakeable are skipped.
    let waiting = {
        let client = Client::new(&s.node);
        let path = combine("first");
        tokio::spawn(async move {
            let of = json!([
                {"awakeable": "awk0"}, {"runFails": "run0"},
                {"awakeable": "awk1"}, {"runFails": "run1"},
                {"awakeable": "awk2"}, {"runFails": "run2"},
            ]);
            client
                .call_keyed(&path, "first", json!({"mode": "any", "of": of}))
                .await
        })
    };
    wait_until("awakeable awk2 is created", move || async move {
        anyhow::Ok(
            client
                .call("ConfCombinators/first/hasAwakeable", json!("awk2"))
                .await?
                .json()
                == json!(true),
        )
    })
    .await?;
    for name in ["awk0", "awk1"] {
        let has = client.call("ConfCombinators/first/hasAwakeable", json!(name)).await?;
        assert_eq!(has.json(), json!(true), "{name}: {}", has.body);
    }
    let rejected = client
        .call(
            "ConfCombinators/first/rejectAwakeable",
            json!({"name": "awk2", "reason": "fail"}),
        )
        .await?;
    assert_eq!(rejected.status, 200, "{}", rejected.body);
    let resolved = client
        .call(
            "ConfCombinators/first/resolveAwakeable",
            json!({"name": "awk1", "value": "awk1-result"}),
        )
        .await?;
    assert_eq!(resolved.status, 200, "{}", resolved.body);
    let first = waiting.await??;
    assert_eq!(first.json(), json!("awk1-result"), "{}", first.body);

    // mixedRunWinsRaceAgainstSignal: a run beats a signal nobody sends.
    let won = client
        .call_keyed(
            &combine("mixed-race"),
            "mixed-race",
            json!({"mode": "race", "of": [{"signal": "sig"}, {"runReturns": "runval"}]}),
        )
        .await?;
    assert_eq!(won.json(), json!("runval"), "{}", won.body);

    // all / allSettled / any over runs and timers (the signal-free forms of upstream's cases).
    for (key, request, expected) in [
        (
            "all",
            json!({"mode": "all", "of": [{"runReturns": "a"}, {"sleep": 50}, {"runReturns": "b"}]}),
            json!("a|sleep|b"),
        ),
        (
            "settled",
            json!({"mode": "allSettled", "of": [{"runReturns": "runval"}, {"runFails": "fail"}, {"sleep": 20}]}),
            json!("ok:runval|err:fail|ok:sleep"),
        ),
        (
            "any-run",
            json!({"mode": "any", "of": [{"runFails": "fail"}, {"sleep": 20}]}),
            json!("sleep"),
        ),
    ] {
        let answer = client.call_keyed(&combine(key), key, request).await?;
        assert_eq!(answer.json(), expected, "{key}: {}", answer.body);
    }
    let all_failed = client
        .call_keyed(
            &combine("none"),
            "none",
            json!({"mode": "any", "of": [{"runFails": "x"}, {"runFails": "y"}]}),
        )
        .await?;
    assert_failed(&all_failed, "all failed: x|y");
    Ok(())
}

/// Upstream's signal cases: named signals resolved or rejected by invocation id from another
/// handler, then the result by attaching through the ingress.
#[tokio::test]
async fn combinators_with_named_signals() -> anyhow::Result<()> {
    combinators_with_named_signals_in(&[]).await
}

#[tokio::test]
async fn combinators_with_named_signals_one_partition_always_suspending() -> anyhow::Result<()> {
    combinators_with_named_signals_in(ONE_PARTITION_ALWAYS_SUSPENDING).await
}

async fn combinators_with_named_signals_in(variant: &[(&str, &str)]) -> anyhow::Result<()> {
    let s = setup_with(&[], variant).await?;
    let client = &s.client;
    let signal = |id: &str, name: &str, outcome: Result<&str, &str>| match outcome {
        Ok(value) => (
            "ConfUtils/resolveSignal",
            json!({"invocationId": id, "signalName": name, "value": value}),
        ),
        Err(reason) => (
            "ConfUtils/rejectSignal",
            json!({"invocationId": id, "signalName": name, "reason": reason}),
        ),
    };
    let sig = |name: &str| json!({"signal": name});
    // (key, request, signals sent in order (Ok: resolve, Err: reject), expected result)
    type Signals<'a> = Vec<(&'a str, Result<&'a str, &'a str>)>;
    let cases: Vec<(&str, Value, Signals, &str)> = vec![
        (
            "any",
            json!({"mode": "any", "of": [sig("sig0"), sig("sig1"), sig("sig2")]}),
            vec![("sig0", Err("fail0")), ("sig2", Err("fail2")), ("sig1", Ok("success1"))],
            "success1",
        ),
        (
            "all",
            json!({"mode": "all", "of": [sig("sig0"), sig("sig1"), sig("sig2")]}),
            vec![("sig0", Ok("val0")), ("sig1", Ok("val1")), ("sig2", Ok("val2"))],
            "val0|val1|val2",
        ),
        (
            "settled",
            json!({"mode": "allSettled", "of": [sig("sig0"), sig("sig1"), sig("sig2")]}),
            vec![("sig0", Ok("val0")), ("sig1", Err("err1")), ("sig2", Ok("val2"))],
            "ok:val0|err:err1|ok:val2",
        ),
        (
            "race",
            json!({"mode": "race", "of": [sig("sig0"), sig("sig1"), sig("sig2")]}),
            vec![("sig1", Ok("first"))],
            "first",
        ),
        (
            "mixed-any",
            json!({"mode": "any", "of": [{"runFails": "fail"}, sig("sig")]}),
            vec![("sig", Ok("sigval"))],
            "sigval",
        ),
        (
            "mixed-all",
            json!({"mode": "all", "of": [{"runReturns": "runval"}, sig("sig")]}),
            vec![("sig", Ok("sigval"))],
            "runval|sigval",
        ),
        (
            "mixed-settled",
            json!({"mode": "allSettled", "of": [{"runReturns": "runval"}, sig("sig"), {"runFails": "fail"}]}),
            vec![("sig", Ok("sigval"))],
            "ok:runval|ok:sigval|err:fail",
        ),
    ];
    for (key, request, signals, expected) in cases {
        let id = send_keyed(client, &format!("ConfCombinators/{key}/combine"), key, request).await?;
        for (name, outcome) in signals {
            let (path, body) = signal(id.as_str(), name, outcome);
            let sent = client.call_keyed(path, &format!("{key}-{name}"), body).await?;
            assert_eq!(sent.status, 200, "{key}/{name}: {}", sent.body);
        }
        let attached = client.ingress_get(&format!("restate/invocation/{id}/attach")).await?;
        assert_eq!(
            (attached.status, attached.json()),
            (200, json!(expected)),
            "{key}: {}",
            attached.body
        );
    }
    Ok(())
}
