//! `POST /query` on a real node: the introspection tables hold what the invocations did, JSON
//! and Arrow answers, and bad SQL gets a 400 that says why while the node keeps serving.

use serde_json::json;

use crate::invocations::scenario_node;

#[tokio::test]
async fn sql_introspection_shows_invocations_state_and_journals() -> anyhow::Result<()> {
    let setup = scenario_node(&[]).await?;
    let client = &setup.client;

    let added = client.call("Counter/alice/add", json!(7)).await?;
    let add_id = added.header("x-restate-id").unwrap_or_default().to_owned();
    let via = client.call("Caller/callGreet", json!("Q")).await?;
    assert_eq!(via.json(), json!("called: Hello Q!"), "{}", via.body);
    client.call("Signup/q1/run/send", json!("Q")).await?;
    client
        .eventually("Signup/q1/status", json!(null), json!("waiting"))
        .await?;

    // One invocation by id: a key lookup, every column family of facts.
    let rows = client
        .query(&format!(
            "SELECT id, target, target_service_ty, status, completion_result, journal_size, invoked_by, \
             pinned_deployment_id, created_at, completion_retention FROM sys_invocation WHERE id = '{add_id}'"
        ))
        .await?;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["target"], json!("Counter/alice/add"));
    assert_eq!(row["target_service_ty"], json!("virtual_object"));
    assert_eq!(
        (row["status"].clone(), row["completion_result"].clone()),
        (json!("completed"), json!("success"))
    );
    assert_eq!(row["invoked_by"], json!("ingress"));
    assert!(
        row["pinned_deployment_id"]
            .as_str()
            .unwrap_or_default()
            .starts_with("dp_"),
        "{row}"
    );
    assert!(row["created_at"].as_str().unwrap_or_default().ends_with('Z'), "{row}");

    // The callee of a handler's call knows its caller.
    let rows = client
        .query("SELECT invoked_by, invoked_by_target FROM sys_invocation WHERE target = 'Greeter/greet'")
        .await?;
    assert_eq!(
        rows,
        vec![json!({"invoked_by": "service", "invoked_by_target": "Caller/callGreet"})]
    );

    // The journal, the state, the waiting workflow and its promise, the registry.
    let journal = client
        .query(&format!(
            "SELECT index, entry_type, completed FROM sys_journal WHERE id = '{add_id}' ORDER BY index"
        ))
        .await?;
    assert_eq!(journal[0]["entry_type"], json!("Command: Input"), "{journal:?}");
    assert!(
        journal.iter().any(|e| e["entry_type"] == json!("Command: Output")),
        "{journal:?}"
    );
    let state = client
        .query("SELECT key, value_utf8, value FROM state WHERE service_name = 'Counter' AND service_key = 'alice'")
        .await?;
    assert_eq!(state, vec![json!({"key": "total", "value_utf8": "7", "value": "37"})]);
    let waiting = client
        .query("SELECT status FROM sys_invocation WHERE target_service_name = 'Signup'")
        .await?;
    assert!(
        waiting
            .iter()
            .any(|r| r["status"] == json!("suspended") || r["status"] == json!("running")),
        "{waiting:?}"
    );
    let promises = client
        .query("SELECT service_key, key, completed FROM sys_promise")
        .await?;
    assert!(
        promises.is_empty() || promises[0]["completed"] == json!(false),
        "{promises:?}"
    );
    let services = client
        .query("SELECT name, ty FROM sys_service WHERE name IN ('Counter', 'Signup') ORDER BY name")
        .await?;
    assert_eq!(
        services,
        vec![
            json!({"name": "Counter", "ty": "virtual_object"}),
            json!({"name": "Signup", "ty": "workflow"})
        ]
    );
    let deployments = client.query("SELECT count(*) AS n FROM sys_deployment").await?;
    assert_eq!(deployments, vec![json!({"n": 1})]);
    let columns = client
        .query(
            "SELECT COUNT(*) AS n FROM information_schema.columns WHERE table_name = 'sys_journal' \
             AND column_name IN ('version', 'entry_json', 'appended_at')",
        )
        .await?;
    assert_eq!(columns, vec![json!({"n": 3})]);

    // Without `accept: application/json`: an Arrow IPC stream.
    let arrow = client
        .http()
        .post(format!("{}query", client.admin))
        .json(&json!({"query": "SELECT id FROM sys_invocation"}))
        .send()
        .await?;
    assert_eq!(arrow.headers()["content-type"], "application/vnd.apache.arrow.stream");
    assert!(
        arrow.bytes().await?.starts_with(&[0xff, 0xff, 0xff, 0xff]),
        "an IPC stream starts with a continuation marker"
    );

    // Bad SQL: 400 with the reason; writes are refused; the node still serves.
    let bad = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .http()
                .post(format!("{}query", client.admin))
                .header("accept", "application/json")
                .json(&json!({ "query": sql }))
                .send()
                .await
        }
    };
    for (sql, reason) in [
        ("SELEC id FROM sys_invocation", "SELEC"),
        ("SELECT * FROM no_such_table", "no_such_table"),
        ("SELECT no_such_column FROM sys_invocation", "no_such_column"),
        ("CREATE TABLE t (a INT)", "DDL"),
        ("INSERT INTO state VALUES (1)", ""),
        ("DROP TABLE state", ""),
    ] {
        let answer = bad(sql).await?;
        assert_eq!(answer.status().as_u16(), 400, "{sql}");
        let body: serde_json::Value = answer.json().await?;
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{sql}: {message}");
    }
    let huge = format!(
        "SELECT id FROM sys_invocation WHERE id IN ({})",
        (0..40_000).map(|i| format!("'inv_{i}'")).collect::<Vec<_>>().join(",")
    );
    let answer = client
        .http()
        .post(format!("{}query", client.admin))
        .json(&json!({ "query": huge }))
        .send()
        .await?;
    assert_eq!(answer.status().as_u16(), 400);
    let missing = client
        .http()
        .post(format!("{}query", client.admin))
        .json(&json!({ "sql": "SELECT 1" }))
        .send()
        .await?;
    assert_eq!(missing.status().as_u16(), 400);
    let greeted = client.call("Greeter/greet", json!("still")).await?;
    assert_eq!(greeted.json(), json!("Hello still!"));
    Ok(())
}

/// `[admin.query-engine] pgsql-bind-address`: `psql` reads the same tables.
#[tokio::test]
async fn psql_queries_the_tables_over_the_postgresql_protocol() -> anyhow::Result<()> {
    let port = restate_cluster_tests::servers::free_port();
    let address = format!("127.0.0.1:{port}");
    let setup = scenario_node(&[("RESTATE_ADMIN__QUERY_ENGINE__PGSQL_BIND_ADDRESS", &address)]).await?;
    let client = &setup.client;
    client.call("Counter/pg/add", json!(3)).await?;

    let psql = |sql: &'static str| {
        let port = port.to_string();
        async move {
            let output = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                tokio::process::Command::new("psql")
                    .args(["-h", "127.0.0.1", "-p", &port, "-U", "restate", "-d", "restate"])
                    .args(["-X", "-A", "-t", "-F", "|", "-c", sql])
                    .env("PGCONNECT_TIMEOUT", "10")
                    .kill_on_drop(true)
                    .output(),
            )
            .await??;
            anyhow::Ok((
                output.status.success(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            ))
        }
    };
    let (ok, out, err) =
        psql("SELECT target, status, completion_result FROM sys_invocation WHERE target_service_name = 'Counter'")
            .await?;
    assert!(ok, "psql failed: {err}");
    assert_eq!(out.trim(), "Counter/pg/add|completed|success", "{out}{err}");
    let (ok, out, err) = psql("SELECT key, value, value_utf8 FROM state WHERE service_key = 'pg'").await?;
    assert!(ok, "psql failed: {err}");
    assert_eq!(out.trim(), "total|\\x33|3", "{out}{err}");
    let (ok, _, err) = psql("SELECT * FROM nowhere").await?;
    assert!(!ok && err.contains("nowhere"), "{err}");
    let (ok, _, err) = psql("DROP TABLE state").await?;
    assert!(!ok && err.contains("ERROR"), "{err}");
    Ok(())
}
