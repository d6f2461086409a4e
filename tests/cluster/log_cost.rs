//! What an invocation costs the log: records and bytes appended per greet, per counter add and
//! per `ctx.run` + sleep + `ctx.run`, with the kinds of records, printed (run with
//! `--no-capture`). The bounds on records per invocation guard against regressions; they are
//! counts, not times. With `RESTATE_BIN_DIR` pointing at another build, the same run measures
//! that build (records it cannot decode are counted by size only).

use std::collections::BTreeMap;
use std::future::Future;

use restate_cluster_tests::servers::SdkService;
use restate_cluster_tests::{Entry, TestDir, TestNode, logs};
use restate_worker::wal::{Command, Effect, Envelope};
use serde_json::json;

use crate::invocations::{Client, start_node};

/// What the log holds after `run` made `n` invocations: records and bytes per invocation, and
/// the records by kind.
async fn measure<F, Fut>(node: &TestNode, n: usize, run: F) -> anyhow::Result<(f64, f64, BTreeMap<String, usize>)>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let fabric = node.fabric_url();
    let from = logs::find_tail(&fabric, 0).await?;
    for i in 0..n {
        run(i).await?;
    }
    // Whatever the last invocation's end still has in flight.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut records = 0;
    let mut bytes = 0;
    let mut kinds = BTreeMap::new();
    for entry in logs::read_all(&fabric, 0, from).await? {
        let Entry::Record(_, payload) = entry else { continue };
        records += 1;
        bytes += payload.len();
        let kind = match Envelope::decode(&payload) {
            Ok(envelope) => kind_of(&envelope.command),
            Err(_) => format!("format {}", payload.first().copied().unwrap_or_default()),
        };
        *kinds.entry(kind).or_default() += 1;
        if std::env::var_os("LOG_COST_DUMP").is_some() && records <= 4 {
            // The first records in full, to see what each byte is for.
            match Envelope::decode(&payload) {
                Ok(envelope) => println!("{} bytes: {envelope:?}", payload.len()),
                Err(_) => println!("{} bytes: {payload:?}", payload.len()),
            }
        }
    }
    Ok((records as f64 / n as f64, bytes as f64 / n as f64, kinds))
}

fn kind_of(command: &Command) -> String {
    match command {
        Command::InvokerEffect { effects, .. } => {
            let names: Vec<&str> = effects
                .iter()
                .map(|effect| match effect {
                    Effect::Pin { .. } => "Pin",
                    Effect::Entry { .. } => "Entry",
                    Effect::Suspend { .. } => "Suspend",
                    Effect::End { .. } => "End",
                    Effect::AttemptFailed { .. } => "AttemptFailed",
                    Effect::Pause => "Pause",
                    Effect::Fail { .. } => "Fail",
                })
                .collect();
            format!("InvokerEffect[{}]", names.join("+"))
        }
        other => format!("{other:?}")
            .split([' ', '(', '{'])
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}

#[tokio::test]
async fn records_and_bytes_one_invocation_appends() -> anyhow::Result<()> {
    let dir = TestDir::new();
    // One partition: every record of an invocation lands in log 0.
    let node = start_node(&dir, &[("RESTATE_DEFAULT_NUM_PARTITIONS", "1")]).await?;
    let service = SdkService::typescript_scenarios(&dir.path().join("side-effects.txt"));
    let client = Client::new(&node);
    client.register(json!({"uri": service.uri})).await?;
    let call = |path: String, body: serde_json::Value| {
        let client = &client;
        async move {
            let answer = client.call(&path, body).await?;
            anyhow::ensure!(
                answer.status == 200,
                "{path} answered {}: {}",
                answer.status,
                answer.body
            );
            anyhow::Ok(())
        }
    };
    let n = 20;
    let greet = measure(&node, n, |i| call("Greeter/greet".into(), json!(format!("Sam {i}")))).await?;
    let add = measure(&node, n, |i| call(format!("Counter/c{}/add", i % 4), json!(1))).await?;
    let run_sleep = measure(&node, n, |i| {
        call(
            "Runner/sleepThenEffect".into(),
            json!({"tag": format!("t{i}"), "ms": 10}),
        )
    })
    .await?;
    for (what, (records, bytes, kinds)) in [
        ("greet", &greet),
        ("counter add", &add),
        ("ctx.run + sleep + ctx.run", &run_sleep),
    ] {
        println!("{what}: {records:.2} records, {bytes:.0} bytes per invocation; {kinds:?}");
    }
    // The invocation, then what its attempt did: pin, output and end in one record (what the
    // SDK sends in one go shares a record; a read of state may come a moment before the rest).
    assert!(greet.0 <= 2.0, "{greet:?}");
    assert!(add.0 <= 3.0, "{add:?}");
    // Each `ctx.run` result is proposed on its own; the timer fires through the log.
    assert!(run_sleep.0 <= 8.0, "{run_sleep:?}");
    Ok(())
}
