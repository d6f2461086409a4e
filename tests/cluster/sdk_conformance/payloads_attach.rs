//! Large and unicode payloads, attach and output.

use super::*;

// ---------------------------------------------------------------------------------------------
// Large and unicode payloads (and upstream Ingress: raw bytes, headers)

#[tokio::test]
async fn large_and_unicode_payloads() -> anyhow::Result<()> {
    large_and_unicode_payloads_in(&[]).await
}

#[tokio::test]
async fn large_and_unicode_payloads_one_partition_always_suspending() -> anyhow::Result<()> {
    large_and_unicode_payloads_in(ONE_PARTITION_ALWAYS_SUSPENDING).await
}

async fn large_and_unicode_payloads_in(variant: &[(&str, &str)]) -> anyhow::Result<()> {
    let s = setup_with(&[], variant).await?;
    let client = &s.client;

    // JSON strings of 1 and 4 MiB, echoed whole.
    for mib in [1, 4] {
        let text = "x".repeat(mib * 1024 * 1024);
        let echoed = client.call("ConfUtils/echo", json!(text)).await?;
        let head: String = echoed.body.chars().take(200).collect();
        assert_eq!(echoed.status, 200, "{mib} MiB: {head}");
        assert!(echoed.json() == json!(text), "{mib} MiB came back different");
    }

    // Raw bytes in and out (every byte value), about 3 MiB.
    let bytes: Vec<u8> = (0..3 * 1024 * 1024 + 7).map(|i: usize| (i * 31 % 256) as u8).collect();
    let response = client
        .http()
        .post(format!("{}ConfUtils/rawEcho", client.ingress))
        .header("content-type", "application/octet-stream")
        .header("idempotency-key", "raw")
        .body(bytes.clone())
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/octet-stream")
    );
    assert!(
        response.bytes().await?.as_ref() == bytes.as_slice(),
        "the raw bytes came back different"
    );

    // Unicode text, escapes included.
    let text = "héllo wörld – 日本語 – 🚀 – \u{0} – \"quoted\" \\ – ✓";
    assert_eq!(client.call("ConfUtils/echo", json!(text)).await?.json(), json!(text));
    assert_eq!(
        client
            .call("ConfUtils/uppercaseEcho", json!("straße ünïcödé"))
            .await?
            .json(),
        json!("STRASSE ÜNÏCÖDÉ")
    );

    // A unicode object key (percent-encoded in the path), state key and a large state value.
    let key = segment("ключ-🔑 é");
    let added = client.call(&format!("ConfCounter/{key}/add"), json!(5)).await?;
    assert_eq!(added.json(), json!({"oldValue": 0, "newValue": 5}), "{}", added.body);
    assert_eq!(
        client.post_empty(&format!("ConfCounter/{key}/get")).await?.json(),
        json!(5)
    );
    let value = "значение ✓ ".repeat(100_000);
    let set = client
        .call(&format!("ConfMap/{key}/set"), json!({"key": "ключ-🔑", "value": value}))
        .await?;
    assert_eq!(set.status, 200, "{}", set.body);
    assert!(
        client
            .call(&format!("ConfMap/{key}/get"), json!("ключ-🔑"))
            .await?
            .json()
            == json!(value)
    );
    assert_eq!(
        client.post_empty(&format!("ConfMap/{key}/keys")).await?.json(),
        json!(["ключ-🔑"])
    );

    // headersPassThrough: a custom request header reaches the handler.
    let headers = client
        .http()
        .post(format!("{}ConfUtils/echoHeaders", client.ingress))
        .header("x-my-custom-header", "x-my-custom-value")
        .header("idempotency-key", "headers")
        .json(&json!(null))
        .send()
        .await?
        .json::<Value>()
        .await?;
    assert_eq!(headers["x-my-custom-header"], json!("x-my-custom-value"), "{headers}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Attach and output

/// Upstream's `idempotentSendThenAttachWIthIdempotencyKey` (e2e IngressTest): a send with an
/// idempotency key, its output not ready, an attach that waits, then both give the result.
#[tokio::test]
async fn attach_and_output() -> anyhow::Result<()> {
    attach_and_output_in(&[]).await
}

#[tokio::test]
async fn attach_and_output_one_partition_always_suspending() -> anyhow::Result<()> {
    attach_and_output_in(ONE_PARTITION_ALWAYS_SUSPENDING).await
}

async fn attach_and_output_in(variant: &[(&str, &str)]) -> anyhow::Result<()> {
    let s = setup_with(&[], variant).await?;
    let client = &s.client;
    let id = send_keyed(client, "ConfBlocker/b1/run", "my-ik", json!(null)).await?;
    let again = client
        .call_keyed("ConfBlocker/b1/run/send", "my-ik", json!(null))
        .await?;
    assert_eq!(
        (again.json()["status"].clone(), again.json()["invocationId"].clone()),
        (json!("PreviouslyAccepted"), json!(id)),
        "{}",
        again.body
    );
    let by_key = "restate/invocation/ConfBlocker/b1/run/my-ik";
    let pending = client.ingress_get(&format!("{by_key}/output")).await?;
    assert_eq!(pending.status, 470, "{}", pending.body);

    let attach = {
        let client = Client::new(&s.node);
        tokio::spawn(async move { client.ingress_get(&format!("{by_key}/attach")).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!attach.is_finished(), "the attach answered before the invocation ended");

    wait_until("the blocker holds its awakeable", move || async move {
        anyhow::Ok(client.post_empty("ConfBlocker/b1/getAwakeable").await?.json() != json!(""))
    })
    .await?;
    let resolved = client
        .call_keyed("ConfBlocker/b1/resolveAwakeable", "resolve-b1", json!("response"))
        .await?;
    assert_eq!(resolved.status, 200, "{}", resolved.body);

    let attached = attach.await??;
    assert_eq!(
        (attached.status, attached.json()),
        (200, json!("response")),
        "{}",
        attached.body
    );
    let output = client.ingress_get(&format!("{by_key}/output")).await?;
    assert_eq!(output.json(), json!("response"), "{}", output.body);
    let by_id = client.ingress_get(&format!("restate/invocation/{id}/output")).await?;
    assert_eq!(by_id.json(), json!("response"), "{}", by_id.body);
    Ok(())
}

/// Attach from a handler: send with an idempotency key, then `ctx.invocation(id).attach()`
/// (AttachInvocation command); and attach to an invocation that has already ended.
#[tokio::test]
async fn attach_and_output_from_a_handler() -> anyhow::Result<()> {
    attach_and_output_from_a_handler_in(&[]).await
}

#[tokio::test]
async fn attach_and_output_from_a_handler_one_partition_always_suspending() -> anyhow::Result<()> {
    attach_and_output_from_a_handler_in(ONE_PARTITION_ALWAYS_SUSPENDING).await
}

async fn attach_and_output_from_a_handler_in(variant: &[(&str, &str)]) -> anyhow::Result<()> {
    let s = setup_with(&[], variant).await?;
    let client = &s.client;
    let first = client
        .call(
            "ConfAttach/sendThenAttach",
            json!({"idempotencyKey": "a1", "value": "hello"}),
        )
        .await?;
    assert_eq!(first.status, 200, "{}\n{}", first.body, s.node.log());
    assert_eq!(first.json()["result"], json!("hello"), "{}", first.body);
    let echo_id = first.json()["invocationId"].as_str().unwrap_or_default().to_owned();
    assert!(echo_id.starts_with("inv_"), "{}", first.body);
    // The idempotency key makes the second send the same invocation.
    let second = client
        .call(
            "ConfAttach/sendThenAttach",
            json!({"idempotencyKey": "a1", "value": "hello"}),
        )
        .await?;
    assert_eq!(second.json(), first.json(), "{}", second.body);
    let output = client
        .ingress_get(&format!("restate/invocation/{echo_id}/output"))
        .await?;
    assert_eq!(output.json(), json!("hello"), "{}", output.body);
    // Attaching to an ended invocation answers its result at once.
    let attached = client.call("ConfAttach/attach", json!(echo_id)).await?;
    assert_eq!(attached.json(), json!("hello"), "{}", attached.body);
    Ok(())
}
