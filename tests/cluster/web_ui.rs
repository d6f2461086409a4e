//! The real Restate web UI against our admin API, in a real browser: the UI release is mirrored
//! from the reference server installed from npm (`tests/web-ui/mirror.py`; restate-rs bundles
//! none) and served by our node from `[admin] web-ui-dir`; headless Chromium loads each page
//! through a recording proxy, so the test sees every request the UI sends and fails on any that
//! fails, and on any error banner in the rendered page.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, Request, StatusCode};
use axum::response::Response;
use restate_cluster_tests::servers::SdkService;
use restate_cluster_tests::{NodeSpec, Ports, TestDir, TestNode, example_config};
use serde_json::{Value, json};

use crate::invocations::{Client, START_TIMEOUT};

/// One request the UI sent: method, path, answer status, and the SQL of a `/query`.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    status: StatusCode,
    sql: Option<String>,
}

#[derive(Clone)]
struct Recorder {
    upstream: String,
    http: reqwest::Client,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// Forwards a request to the admin port and records it.
async fn forward(State(recorder): State<Recorder>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let body: Bytes = axum::body::to_bytes(body, 64 << 20).await.unwrap_or_default();
    let sql = (parts.uri.path() == "/query")
        .then(|| serde_json::from_slice::<Value>(&body).ok())
        .flatten()
        .and_then(|v| v["query"].as_str().map(str::to_owned));
    let mut upstream = recorder
        .http
        .request(parts.method.clone(), format!("{}{path}", recorder.upstream))
        .body(body.to_vec());
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" && name != "connection" {
            upstream = upstream.header(name, value);
        }
    }
    let (status, headers, bytes) = match upstream.send().await {
        Ok(answer) => {
            let status = answer.status();
            let headers = answer.headers().clone();
            (status, headers, answer.bytes().await.unwrap_or_default())
        }
        Err(error) => (
            StatusCode::BAD_GATEWAY,
            Default::default(),
            Bytes::from(error.to_string()),
        ),
    };
    if let Ok(mut seen) = recorder.seen.lock() {
        seen.push(Seen {
            method: parts.method,
            path,
            status,
            sql,
        });
    }
    let mut response = Response::builder().status(status);
    for (name, value) in &headers {
        if name != "transfer-encoding" && name != "connection" && name != "content-length" {
            response = response.header(name, value);
        }
    }
    response.body(Body::from(bytes)).unwrap_or_default()
}

/// A recording proxy on a free port in front of `upstream`; its base URL and the record.
async fn recording_proxy(upstream: String) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = Recorder {
        upstream: upstream.trim_end_matches('/').to_owned(),
        http: reqwest::Client::new(),
        seen: seen.clone(),
    };
    let app = axum::Router::new().fallback(forward).with_state(recorder);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("cannot bind the proxy: {e}"));
    let address = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("no proxy address: {e}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{address}"), seen)
}

/// The page's DOM after its scripts ran, as text (tags, scripts and styles dropped).
fn render(url: &str, profile: &Path) -> String {
    let _ = std::fs::remove_dir_all(profile);
    let output = Command::new("timeout")
        .arg("90")
        .arg("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("cannot run chromium (scripts/deps.sh test installs it): {e}"));
    assert!(
        output.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    dom_text(&String::from_utf8_lossy(&output.stdout))
}

fn dom_text(html: &str) -> String {
    let mut text = String::with_capacity(html.len() / 4);
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        text.push_str(&rest[..start]);
        text.push(' ');
        let tag = &rest[start..];
        let skip_to = ["<script", "<style"]
            .iter()
            .find(|open| tag.starts_with(**open))
            .and_then(|open| tag.find(&format!("</{}>", &open[1..])).map(|end| end + open.len() + 2));
        let end = skip_to.or_else(|| tag.find('>').map(|e| e + 1)).unwrap_or(tag.len());
        rest = &tag[end..];
    }
    text.push_str(rest);
    let text = text
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Texts the UI shows when a page or a request of it failed.
const ERROR_TEXTS: [&str; 9] = [
    "Application Error",
    "Failed to display",
    "Cannot reach your Restate server",
    "currently experiencing issues",
    "Invocation not found",
    "An error has occurred!",
    "could not be loaded",
    "Could not load",
    "Cannot retrieve invocation data",
];

fn invocation_id(accepted: &Value) -> String {
    accepted["invocationId"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_restate_web_ui_renders_our_services_invocations_journals_and_state_in_chromium() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let ui = dir.path().join("ui");
    let mirrored = Command::new("python3")
        .arg(restate_cluster_tests::repository_root().join("tests/web-ui/mirror.py"))
        .arg(&ui)
        .output()?;
    anyhow::ensure!(
        mirrored.status.success(),
        "mirroring the web UI failed (scripts/deps.sh test installs the reference server): {}",
        String::from_utf8_lossy(&mirrored.stderr)
    );

    let spec = NodeSpec::new("node-1")
        .config_file(example_config("single-node.toml"))
        .env("RESTATE_ADMIN__WEB_UI_DIR", ui.display().to_string());
    let mut node = TestNode::start(dir.path(), spec, Ports::free());
    node.wait_alive(START_TIMEOUT).await?;
    let service = SdkService::typescript_scenarios(&dir.path().join("side-effects.txt"));
    let client = Client::new(&node);
    client.register(json!({"uri": service.uri})).await?;

    // Completed, failed, waiting invocations; an object with state; a workflow.
    assert_eq!(client.call("Counter/alice/add", json!(5)).await?.status, 200);
    let add = client.call("Counter/alice/add/send", json!(2)).await?;
    let add_id = invocation_id(&add.json());
    client.eventually("Counter/alice/get", json!(null), json!(7)).await?;
    let failed = client.call("Failing/terminal/send", json!("the answer was no")).await?;
    let failed_id = invocation_id(&failed.json());
    let workflow = client.call("Signup/ann/run/send", json!("Ann")).await?;
    assert_eq!(workflow.status, 202, "{}", workflow.body);
    while client.post_empty("Signup/ann/status").await?.json() != json!("waiting") {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sleeping = client.call("Sleeper/sleep/send", json!(600_000)).await?;
    assert_eq!(sleeping.status, 202, "{}", sleeping.body);
    let sleeping_id = invocation_id(&sleeping.json());
    // The failed invocation has ended before its page is loaded.
    let output = format!("restate/invocation/{failed_id}/attach");
    while client.ingress_get(&output).await?.status == 404 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (proxy, seen) = recording_proxy(node.admin_url()).await;
    let profile = dir.path().join("chromium");
    let pages: Vec<(String, Vec<&str>)> = vec![
        (
            "overview".into(),
            vec![
                "v1.7.12+restate-rs",
                "invocations in last 1h",
                "Counter",
                "Greeter",
                "Signup",
                "Failing",
            ],
        ),
        (
            "invocations".into(),
            vec!["All statuses", "Counter", "Failing", "Signup"],
        ),
        // The list filtered to ended invocations, as the overview links to it.
        (
            "invocations?filter_status=%7B%22operation%22%3A%22IN%22%2C%22value%22%3A%5B%22succeeded%22%2C%22failed%22%5D%7D"
                .into(),
            vec!["matching invocations", "Counter", "alice", "add()", "Succeeded", "Failing", "terminal()", "Failed"],
        ),
        (
            format!("invocations/{add_id}"),
            vec![
                "Counter",
                "alice",
                "add()",
                "Succeeded",
                "get",
                "total",
                "set",
                "return",
            ],
        ),
        (
            // Its failure shows in the UI's error box: that box is expected.
            format!("invocations/{failed_id}"),
            vec!["Failing", "terminal()", "Failed", "[400] the answer was no"],
        ),
        ("state/Counter".into(), vec!["alice", "total : 7"]),
        ("virtual-objects".into(), vec!["Counter"]),
        ("workflows".into(), vec!["Signup", "ann"]),
        (
            "introspection?query=SELECT%20COUNT(1)%20AS%20invocations%20FROM%20sys_invocation_status".into(),
            vec!["invocations", "1 results"],
        ),
        // What the query inspector sends.
        (
            "introspection?query=EXPLAIN%20ANALYZE%20SELECT%20COUNT(1)%20FROM%20sys_invocation".into(),
            vec!["Plan with Metrics", "AggregateExec"],
        ),
    ];
    let mut problems = Vec::new();
    for (page, expected) in &pages {
        // Off the runtime: the proxy answering the browser runs on it.
        let (url, dir) = (format!("{proxy}/ui/{page}"), profile.clone());
        let text = tokio::task::spawn_blocking(move || render(&url, &dir)).await?;
        for want in expected {
            if !text.contains(want) {
                problems.push(format!("/ui/{page} does not show `{want}`"));
            }
        }
        let expected_failure =
            "An error has occurred! Check the details below for more information: [400] the answer was no";
        let unexpected = text.replace(expected_failure, "");
        for error in ERROR_TEXTS {
            if unexpected.contains(error) {
                problems.push(format!("/ui/{page} shows `{error}`: {text}"));
            }
        }
    }
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let queries = seen.iter().filter(|s| s.sql.is_some()).count();
    for request in &seen {
        // The UI asks for a service's OpenAPI document only to offer a playground button.
        let optional = request.path.ends_with("/openapi");
        if request.status.as_u16() >= 400 && !optional {
            problems.push(format!(
                "{} {} answered {}{}",
                request.method,
                request.path,
                request.status,
                request.sql.as_deref().map(|q| format!(" for {q}")).unwrap_or_default()
            ));
        }
    }
    assert!(queries >= 10, "the UI sent only {queries} queries: {seen:?}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The playground's document, and a batch action as the UI sends it for a selection.
    let openapi: Value = client
        .http()
        .get(format!("{}services/Counter/openapi", client.admin))
        .send()
        .await?
        .json()
        .await?;
    assert!(openapi["paths"]["/Counter/{key}/add"]["post"].is_object(), "{openapi}");
    let batch: Value = client
        .http()
        .post(format!("{}internal/invocations_batch_operations/cancel", client.admin))
        .json(&json!({ "invocation_ids": [sleeping_id, "inv_1notAnInvocationId"] }))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(batch["succeeded"], json!([sleeping_id]), "{batch}");
    assert_eq!(batch["failed"][0]["invocation_id"], "inv_1notAnInvocationId", "{batch}");
    assert!(
        batch["failed"][0]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{batch}"
    );
    Ok(())
}

/// Every SQL statement the real UI sent to the reference (`shared/anchor/ui-requests.txt`,
/// copied to `tests/web-ui/ui-queries.sql`) runs on our node.
#[tokio::test]
async fn every_statement_the_web_ui_sends_runs_on_our_node() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let mut node = TestNode::start(
        dir.path(),
        NodeSpec::new("node-1").config_file(example_config("single-node.toml")),
        Ports::free(),
    );
    node.wait_alive(START_TIMEOUT).await?;
    let service = SdkService::typescript_scenarios(&dir.path().join("side-effects.txt"));
    let client = Client::new(&node);
    client.register(json!({"uri": service.uri})).await?;
    for key in ["a", "b", "c"] {
        assert_eq!(client.call(&format!("Counter/{key}/add"), json!(1)).await?.status, 200);
    }
    let id = invocation_id(&client.call("Counter/a/add/send", json!(1)).await?.json());
    client.eventually("Counter/a/get", json!(null), json!(2)).await?;

    let text = std::fs::read_to_string(restate_cluster_tests::repository_root().join("tests/web-ui/ui-queries.sql"))?;
    let statements: Vec<String> = text
        .split(";\n")
        .map(|s| {
            s.lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .filter(|s| !s.trim().is_empty())
        .collect();
    assert!(statements.len() >= 11, "{} statements", statements.len());
    let an_hour_ago = "2000-01-01T00:00:00.000Z";
    for statement in statements {
        let sql = statement.replace("<TS>", an_hour_ago).replace("inv_<ID>", &id);
        let answer = client
            .http()
            .post(format!("{}query", client.admin))
            .header("accept", "application/json")
            .json(&json!({ "query": sql }))
            .send()
            .await?;
        let status = answer.status();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{status} for {sql}: {body}");
        assert!(body["rows"].is_array(), "no rows for {sql}: {body}");
    }
    Ok(())
}
