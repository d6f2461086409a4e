//! The real `restate` CLI 1.7.12 (npm `@restatedev/restate`, installed in tests/cli by
//! scripts/deps.sh) against our node: every command an operator uses day to day, checked on
//! its printed output. All of them read through the admin API, most through `POST /query`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use restate_cluster_tests::TestDir;
use restate_cluster_tests::servers::SdkService;
use serde_json::json;

use crate::invocations::{Client, start_node};

fn cli_binary() -> PathBuf {
    let cli = Path::new(env!("CARGO_MANIFEST_DIR")).join("cli/node_modules/.bin/restate");
    assert!(
        cli.exists(),
        "the restate CLI is not installed in tests/cli: run scripts/deps.sh test"
    );
    cli
}

/// Runs the CLI with `args`; its stdout and stderr together, and whether it succeeded.
async fn restate(admin: &str, dir: &Path, env: &[(&str, &str)], args: &[&str]) -> anyhow::Result<(bool, String)> {
    let mut command = tokio::process::Command::new(cli_binary());
    command
        .args(args)
        .env("RESTATE_ADMIN_URL", admin)
        .env("NO_COLOR", "1")
        .env("TERM", "dumb")
        // The CLI keeps its config and cache under the home directory: one per test.
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output()).await??;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), text))
}

/// The CLI pointed at one node, with a home directory of its own.
struct Cli {
    admin: String,
    home: PathBuf,
}

impl Cli {
    async fn run(&self, args: &[&str]) -> anyhow::Result<(bool, String)> {
        restate(&self.admin, &self.home, &[], args).await
    }
}

#[tokio::test]
async fn the_restate_cli_works_against_our_node() -> anyhow::Result<()> {
    let dir = TestDir::new();
    let node = start_node(&dir, &[]).await?;
    let service = SdkService::typescript_scenarios(&dir.path().join("side-effects.txt"));
    let client = Client::new(&node);
    let admin = client.admin.clone();
    let home = dir.path().join("cli-home");
    std::fs::create_dir_all(&home)?;
    let cli = Cli {
        admin: admin.clone(),
        home: home.clone(),
    };
    let expect = |(ok, text): (bool, String), needles: &[&str]| {
        assert!(ok, "the CLI failed:\n{text}");
        for needle in needles {
            assert!(text.contains(needle), "'{needle}' not in:\n{text}");
        }
        text
    };

    // Registration through the CLI (a dry run and the diff it shows, then the real one).
    expect(
        cli.run(&["deployments", "register", "--yes", &service.uri]).await?,
        &["Counter", "Greeter"],
    );
    let deployments = client
        .request(reqwest::Method::GET, &format!("{admin}deployments"), None)
        .await?
        .json();
    let deployment = deployments["deployments"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(deployment.starts_with("dp_"), "{deployments}");

    for key in ["k1", "k2", "k3"] {
        client.call(&format!("Counter/{key}/add"), json!(5)).await?;
    }
    client.call("Greeter/greet", json!("CLI")).await?;
    let sleeping = client.call("Sleeper/sleep/send", json!(600_000)).await?;
    let sleeping = sleeping.json()["invocationId"].as_str().unwrap_or_default().to_owned();
    // Let it start (and reach its sleep).
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .query(&format!("select status from sys_invocation where id = '{sleeping}'"))
        .await?
        .first()
        .map(|row| row["status"].clone())
        != Some(json!("running"))
    {
        anyhow::ensure!(Instant::now() < deadline, "the sleeper did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    expect(cli.run(&["whoami"]).await?, &["Admin Service"]);
    expect(cli.run(&["deployments", "list"]).await?, &[&deployment, "Counter"]);
    expect(cli.run(&["services", "list"]).await?, &["Greeter", "Counter", "Signup"]);
    expect(
        cli.run(&["services", "describe", "Counter"]).await?,
        &["add", "VirtualObject"],
    );
    expect(
        cli.run(&["deployments", "describe", &deployment]).await?,
        &[&deployment, "Counter", "Greeter"],
    );
    expect(
        cli.run(&["services", "config", "view", "Counter"]).await?,
        &[
            "Idempotent requests retention:  1d",
            "Journal retention:  1d",
            "Retry Policy",
        ],
    );

    let list = expect(
        cli.run(&["invocations", "list"]).await?,
        &[&sleeping, "Sleeper/sleep", "running"],
    );
    assert!(
        !list.contains("Greeter/greet"),
        "completed ones only with --all:\n{list}"
    );
    expect(
        cli.run(&["invocations", "list", "--all"]).await?,
        &[
            "Greeter/greet",
            "Counter/k2/add",
            "completed with success",
            "Showing 5/5 invocations",
        ],
    );
    expect(
        cli.run(&["invocations", "describe", &sleeping]).await?,
        &["Sleeper/sleep", "Command: Input", "Command: Sleep until", "running"],
    );
    expect(
        cli.run(&["services", "status"]).await?,
        &["Sleeper", "RUNNING", "Active Keys", "Counter (3 active keys)"],
    );

    let state = expect(cli.run(&["state", "get", "Counter", "k2"]).await?, &["total"]);
    assert!(state.contains('5'), "{state}");
    expect(
        cli.run(&[
            "sql",
            "select service_name, service_key, key from state order by service_key",
        ])
        .await?,
        &["k1", "k2", "k3", "3 rows"],
    );
    let (ok, text) = cli.run(&["sql", "select * from no_such_table"]).await?;
    assert!(!ok && text.contains("no_such_table"), "{text}");

    // `state edit` opens the state in $EDITOR: a script that changes 5 into 42.
    let editor = home.join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/: 5/: 42/' \"$1\"\n")?;
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let editor_path = editor.display().to_string();
    let (ok, text) = restate(
        &admin,
        &home,
        &[("EDITOR", &editor_path), ("VISUAL", &editor_path)],
        &["state", "edit", "--yes", "Counter", "k2"],
    )
    .await?;
    assert!(ok, "state edit failed:\n{text}");
    client.eventually("Counter/k2/get", json!(null), json!(42)).await?;

    expect(cli.run(&["state", "clear", "--yes", "Counter/k1"]).await?, &[]);
    client.eventually("Counter/k1/keys", json!(null), json!([])).await?;

    expect(
        cli.run(&["invocations", "cancel", "--yes", "Sleeper/sleep"]).await?,
        &["Cancelled 1 invocations"],
    );
    let canceled = client
        .ingress_get(&format!("restate/invocation/{sleeping}/attach"))
        .await?;
    assert_eq!(canceled.status, 409, "{}", canceled.body);
    expect(
        cli.run(&["invocations", "purge", "--yes", "Sleeper/sleep"]).await?,
        &["Purged 1 invocations"],
    );
    let purged = client
        .ingress_get(&format!("restate/invocation/{sleeping}/output"))
        .await?;
    assert_eq!(purged.status, 404, "{}", purged.body);
    let (ok, text) = cli.run(&["invocations", "kill", "--yes", &sleeping]).await?;
    assert!(
        !ok || text.contains("No invocations"),
        "killing a purged invocation finds nothing:\n{text}"
    );

    expect(
        cli.run(&["deployments", "remove", "--yes", "--force", &deployment])
            .await?,
        &["Deployment", "removed"],
    );
    Ok(())
}
