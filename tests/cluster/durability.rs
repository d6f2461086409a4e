//! `kill -9` of a node running real SDK invocations: nothing acknowledged is lost, nothing
//! runs twice, in-flight work and timers finish after the restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use restate_cluster_tests::TestDir;
use restate_cluster_tests::servers::SdkService;
use serde_json::json;

use crate::invocations::{Client, START_TIMEOUT, side_effects, start_node, wait_for_side_effect};

const KEYS: usize = 10;
const WRITERS: usize = 16;

#[tokio::test]
async fn kill_9_under_load_loses_nothing_acknowledged_and_runs_nothing_twice() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let mut node = start_node(&dir, &[]).await?;
    let effects = dir.path().join("side-effects.txt");
    let service = SdkService::typescript_scenarios(&effects);
    let client = Arc::new(Client::new(&node));
    client.register(json!({"uri": service.uri})).await?;

    // Work that is in flight when the node dies: invocations sleeping after a `ctx.run`, and
    // a delayed send whose timer is due after the restart.
    for i in 0..5 {
        let answer = client
            .call(
                "Runner/sleepThenEffect/send",
                json!({"tag": format!("sleeper-{i}"), "ms": 3000}),
            )
            .await?;
        assert_eq!(answer.status, 202, "{}", answer.body);
    }
    let delayed = client.call("Runner/sideEffect/send?delay=4s", json!("timer")).await?;
    assert_eq!(delayed.status, 202);
    for i in 0..5 {
        wait_for_side_effect(&effects, &format!("sleeper-{i}"), Duration::from_secs(10)).await?;
    }

    // A stream of counter adds; each writer counts what was sent and what was acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let (client, stop) = (client.clone(), stop.clone());
        writers.spawn(async move {
            let key = format!("k{}", writer % KEYS);
            let (mut sent, mut acked) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                sent += 1;
                match client.call(&format!("Counter/{key}/add"), json!(1)).await {
                    Ok(answer) if answer.status == 200 => acked += 1,
                    Ok(_) => {}
                    // The node is gone: stop writing (the request may or may not be stored).
                    Err(_) => break,
                }
            }
            (key, sent, acked)
        });
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    node.kill();
    stop.store(true, Ordering::Relaxed);
    let mut sent: HashMap<String, u64> = HashMap::new();
    let mut acked: HashMap<String, u64> = HashMap::new();
    while let Some(result) = writers.join_next().await {
        let (key, s, a) = result?;
        *sent.entry(key.clone()).or_default() += s;
        *acked.entry(key).or_default() += a;
    }
    assert!(
        acked.values().sum::<u64>() > 0,
        "no add was acknowledged before the kill"
    );

    node.restart();
    node.wait_alive(START_TIMEOUT).await?;

    // Every acknowledged add is there, and none counted twice.
    for key in 0..KEYS {
        let key = format!("k{key}");
        let answer = client.call(&format!("Counter/{key}/get"), json!(null)).await?;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let total = answer.json().as_u64().unwrap_or_default();
        let (acked, sent) = (acked[&key], sent[&key]);
        assert!(
            acked <= total && total <= sent,
            "{key}: total {total}, acknowledged {acked}, sent {sent}"
        );
    }
    // The sleeping invocations finish, each `ctx.run` having run once; the timer fires.
    for i in 0..5 {
        wait_for_side_effect(&effects, &format!("sleeper-{i}:done"), Duration::from_secs(30)).await?;
    }
    wait_for_side_effect(&effects, "timer", Duration::from_secs(30)).await?;
    let counts = side_effects(&effects);
    for (tag, count) in &counts {
        assert_eq!(*count, 1, "side effect '{tag}' ran {count} times: {counts:?}");
    }
    Ok(())
}
