//! Registering the TypeScript example service through the admin API of one node.

use std::time::{Duration, Instant};

use restate_cluster_tests::servers::SdkService;
use restate_cluster_tests::{NodeSpec, Ports, TestDir, TestNode, example_config, free_port};
use serde_json::{Value, json};

const START_TIMEOUT: Duration = Duration::from_secs(30);

async fn post(http: &reqwest::Client, url: &str, body: Value) -> anyhow::Result<(u16, Option<String>, Value)> {
    let response = http.post(url).json(&body).send().await?;
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((status, location, response.json().await?))
}

async fn patch(http: &reqwest::Client, url: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    let response = http.patch(url).json(&body).send().await?;
    Ok((response.status().as_u16(), response.json().await?))
}

async fn get(http: &reqwest::Client, url: &str) -> anyhow::Result<(u16, Value)> {
    let response = http.get(url).send().await?;
    Ok((response.status().as_u16(), response.json().await?))
}

fn revisions(services: &Value) -> Vec<(String, u64)> {
    let mut list: Vec<(String, u64)> = services
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_owned(),
                s["revision"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    list.sort();
    list
}

#[tokio::test]
async fn deployments_register_the_typescript_service_on_one_node() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let spec = NodeSpec::new("node-1").config_file(example_config("single-node.toml"));
    let mut node = TestNode::start(dir.path(), spec, Ports::free());
    node.wait_alive(START_TIMEOUT).await?;
    let service = SdkService::typescript();
    let admin = node.admin_url();
    let http = reqwest::Client::new();
    let deployments = format!("{admin}deployments");

    // The first registration may meet a metadata store that is still starting.
    let deadline = Instant::now() + START_TIMEOUT;
    let (status, location, created) = loop {
        let answer = post(&http, &deployments, json!({"uri": service.uri})).await?;
        if answer.0 != 503 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 201, "{created}\n{}", node.log());
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    assert!(id.starts_with("dp_1"), "{created}");
    assert_eq!(location, Some(format!("deployments/{id}")));
    assert_eq!(
        revisions(&created["services"]),
        vec![("Counter".into(), 1), ("Greeter".into(), 1)]
    );
    assert_eq!(created["min_protocol_version"], 5, "{created}");
    assert!(
        created["sdk_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("restate-sdk-typescript/"))
    );

    // Same address, no force: the existing deployment, unchanged. Optional fields may be
    // `null`, as the `restate` CLI sends them.
    let (status, _, again) = post(
        &http,
        &deployments,
        json!({"uri": service.uri, "additional_headers": null, "use_http_11": null, "force": null, "dry_run": null}),
    )
    .await?;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], id.as_str());
    assert_eq!(
        revisions(&again["services"]),
        vec![("Counter".into(), 1), ("Greeter".into(), 1)]
    );
    // On /v2 that is a conflict (force is only the default there when absent).
    let (status, _, conflict) = post(
        &http,
        &format!("{admin}v2/deployments"),
        json!({"uri": service.uri, "force": false}),
    )
    .await?;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["message"], format!("Conflict: deployment {id} already exists"));

    // Forced: re-discovered under the same id, next revision.
    let (status, _, forced) = post(&http, &deployments, json!({"uri": service.uri, "force": true})).await?;
    assert_eq!(status, 200, "{forced}");
    assert_eq!(forced["id"], id.as_str());
    assert_eq!(
        revisions(&forced["services"]),
        vec![("Counter".into(), 2), ("Greeter".into(), 2)]
    );

    // A dry run computes revision 3 but stores nothing.
    let (status, _, dry) = post(
        &http,
        &deployments,
        json!({"uri": service.uri, "force": true, "dry_run": true}),
    )
    .await?;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(
        revisions(&dry["services"]),
        vec![("Counter".into(), 3), ("Greeter".into(), 3)]
    );

    let (status, listed) = get(&http, &deployments).await?;
    assert_eq!(status, 200);
    let listed = &listed["deployments"];
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["uri"], format!("{}/", service.uri));
    assert_eq!(listed[0]["protocol_type"], "BidiStream");
    assert_eq!(listed[0]["http_version"], "HTTP/2.0");
    assert!(
        listed[0]["created_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{listed}"
    );
    assert_eq!(
        revisions(&listed[0]["services"]),
        vec![("Counter".into(), 2), ("Greeter".into(), 2)]
    );
    assert_eq!(listed[0]["services"][0].as_object().map(|o| o.len()), Some(2));

    let (status, detailed) = get(&http, &format!("{deployments}/{id}")).await?;
    assert_eq!(status, 200, "{detailed}");
    assert_eq!(detailed["services"][0]["deployment_id"], id.as_str());
    let (status, bad_id) = get(&http, &format!("{deployments}/nope")).await?;
    assert_eq!(status, 400, "{bad_id}");
    assert!(
        bad_id["message"]
            .as_str()
            .is_some_and(|m| m.contains("'deployment_id'")),
        "{bad_id}"
    );

    let (status, counter) = get(&http, &format!("{admin}services/Counter")).await?;
    assert_eq!(status, 200, "{counter}");
    assert_eq!(counter["ty"], "VirtualObject");
    assert_eq!(counter["revision"], 2);
    assert_eq!(counter["deployment_id"], id.as_str());
    assert_eq!(counter["idempotency_retention"], "1d");
    assert_eq!(counter["retry_policy"]["on_max_attempts"], "Pause");
    let handlers: Vec<(String, String)> = counter["handlers"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|h| (h["name"].to_string(), h["ty"].to_string()))
        .collect();
    assert!(
        handlers.contains(&("\"add\"".into(), "\"Exclusive\"".into())),
        "{counter}"
    );
    assert!(handlers.contains(&("\"get\"".into(), "\"Shared\"".into())), "{counter}");
    let (status, get_handler) = get(&http, &format!("{admin}services/Counter/handlers/get")).await?;
    assert_eq!((status, &get_handler["ty"]), (200, &json!("Shared")), "{get_handler}");
    let (status, greeter_handlers) = get(&http, &format!("{admin}services/Greeter/handlers")).await?;
    assert_eq!(status, 200);
    assert!(
        greeter_handlers["handlers"][0].get("ty").is_none(),
        "{greeter_handlers}"
    );

    let (status, v4) = get(&http, &format!("{admin}v4/services")).await?;
    assert_eq!(status, 200);
    assert_eq!(
        revisions(&v4["services"]),
        vec![("Counter".into(), 2), ("Greeter".into(), 2)]
    );
    let (status, version) = get(&http, &format!("{admin}version")).await?;
    assert_eq!(status, 200);
    assert_eq!(
        (&version["min_admin_api_version"], &version["max_admin_api_version"]),
        (&json!(2), &json!(4))
    );
    let v1 = http.get(format!("{admin}v1/services")).send().await?;
    assert_eq!(v1.status().as_u16(), 400);

    // Nothing listens there: META0003 naming the address.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (status, _, unreachable) = post(&http, &deployments, json!({"uri": closed})).await?;
    assert_eq!(status, 500, "{unreachable}");
    assert_eq!(unreachable["restate_code"], "META0003");
    assert!(
        unreachable["message"].as_str().is_some_and(|m| m.contains(&closed)),
        "{unreachable}"
    );

    let (status, missing) = get(&http, &format!("{admin}services/Nope")).await?;
    assert_eq!(status, 404);
    assert_eq!(
        missing,
        json!({"message": "The requested service 'Nope' does not exist", "restate_code": null})
    );
    let (status, _, lambda) = post(&http, &deployments, json!({"arn": "arn:aws:lambda:x"})).await?;
    assert_eq!(status, 400);
    assert!(
        lambda["message"]
            .as_str()
            .is_some_and(|m| m.contains("Lambda deployments are not supported"))
    );
    let bad_json = http
        .post(&deployments)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await?;
    assert_eq!(bad_json.status().as_u16(), 400);
    let bad_json: Value = bad_json.json().await?;
    assert!(
        bad_json["message"].is_string() && bad_json["restate_code"].is_null(),
        "{bad_json}"
    );
    let no_content_type = http.post(&deployments).body("{}").send().await?;
    assert_eq!(no_content_type.status().as_u16(), 415);
    assert!(no_content_type.json::<Value>().await?["message"].is_string());
    // How to call it, as OpenAPI (what the web UI's playground reads).
    let (status, openapi) = get(&http, &format!("{admin}v4/services/Greeter/openapi")).await?;
    assert_eq!(status, 200, "{openapi}");
    assert_eq!(openapi["openapi"], "3.1.0", "{openapi}");
    assert!(openapi["paths"]["/Greeter/greet"]["post"].is_object(), "{openapi}");
    let (status, missing) = get(&http, &format!("{admin}services/Nope/openapi")).await?;
    assert_eq!(status, 404, "{missing}");
    assert!(missing["message"].is_string());

    // PATCH /services/{s}: stored as an override of the active revision, shown by GET.
    let (status, patched) = patch(
        &http,
        &format!("{admin}services/Greeter"),
        json!({"public": false, "inactivity_timeout": "5m"}),
    )
    .await?;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        (&patched["name"], &patched["public"], &patched["inactivity_timeout"]),
        (&json!("Greeter"), &json!(false), &json!("5m")),
        "{patched}"
    );
    let (status, greeter) = get(&http, &format!("{admin}v4/services/Greeter")).await?;
    assert_eq!(status, 200, "{greeter}");
    assert_eq!(
        (&greeter["public"], &greeter["inactivity_timeout"], &greeter["revision"]),
        (&json!(false), &json!("5m"), &json!(2)),
        "{greeter}"
    );
    assert_eq!(greeter["handlers"][0]["public"], false, "{greeter}");
    assert_eq!(greeter["abort_timeout"], "10m", "untouched: {greeter}");
    // Under a version prefix too, ISO 8601 accepted.
    let (status, patched) = patch(
        &http,
        &format!("{admin}v3/services/Greeter"),
        json!({"journal_retention": "PT2H"}),
    )
    .await?;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        (&patched["journal_retention"], &patched["public"]),
        (&json!("2h"), &json!(false)),
        "{patched}"
    );
    let (status, not_workflow) = patch(
        &http,
        &format!("{admin}services/Greeter"),
        json!({"workflow_completion_retention": "1h"}),
    )
    .await?;
    assert_eq!(status, 400, "{not_workflow}");
    assert!(
        not_workflow["message"]
            .as_str()
            .is_some_and(|m| m.contains("workflow_completion_retention")),
        "{not_workflow}"
    );
    let (status, bad_duration) = patch(
        &http,
        &format!("{admin}services/Greeter"),
        json!({"abort_timeout": "soon"}),
    )
    .await?;
    assert_eq!(status, 400, "{bad_duration}");
    assert!(bad_duration["message"].is_string(), "{bad_duration}");
    let (status, unknown) = patch(&http, &format!("{admin}services/Nope"), json!({"public": true})).await?;
    assert_eq!(
        (status, unknown),
        (
            404,
            json!({"message": "The requested service 'Nope' does not exist", "restate_code": null})
        )
    );

    // DELETE /deployments/{id}: only forced removal.
    let delete = |url: String| {
        let http = http.clone();
        async move {
            let response = http.delete(url).send().await?;
            let status = response.status().as_u16();
            let body = response.text().await?;
            anyhow::Ok((status, body))
        }
    };
    let (status, body) = delete(format!("{deployments}/{id}")).await?;
    assert_eq!(status, 501, "{body}");
    let graceful: Value = serde_json::from_str(&body)?;
    assert!(
        graceful["message"].as_str().is_some_and(|m| m.contains("force=true")) && graceful["restate_code"].is_null(),
        "{graceful}"
    );
    let (status, body) = delete(format!("{deployments}/nope?force=true")).await?;
    assert_eq!(status, 400, "{body}");
    let unknown_id = "dp_15XG8pQ441EfJoPWt4F7AT7";
    let (status, body) = delete(format!("{admin}v4/deployments/{unknown_id}?force=true")).await?;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body)?["message"],
        format!("The requested deployment '{unknown_id}' does not exist")
    );
    let (status, body) = delete(format!("{admin}v4/deployments/{id}?force=true")).await?;
    assert_eq!((status, body.as_str()), (202, ""));
    let (status, gone) = get(&http, &format!("{admin}services/Greeter")).await?;
    assert_eq!(status, 404, "{gone}");
    assert_eq!(
        gone["message"], "The requested service 'Greeter' does not exist",
        "{gone}"
    );
    let (status, listed) = get(&http, &deployments).await?;
    assert_eq!((status, &listed), (200, &json!({"deployments": []})));
    let (status, _) = get(&http, &format!("{deployments}/{id}")).await?;
    assert_eq!(status, 404);

    // Registered again: a new deployment and revision 1, without the earlier override.
    let (status, _, again) = post(&http, &deployments, json!({"uri": service.uri})).await?;
    assert_eq!(status, 201, "{again}");
    assert_ne!(again["id"], id.as_str());
    let (status, greeter) = get(&http, &format!("{admin}services/Greeter")).await?;
    assert_eq!(status, 200, "{greeter}");
    assert_eq!(
        (&greeter["revision"], &greeter["public"], &greeter["inactivity_timeout"]),
        (&json!(1), &json!(true), &json!("1m")),
        "{greeter}"
    );

    drop(service);
    node.terminate(Duration::from_secs(15))?;
    Ok(())
}
