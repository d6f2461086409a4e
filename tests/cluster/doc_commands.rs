//! The operator command lines of Restate's docs (cluster deployment, metadata store and
//! migration pages), run as they are written against a real node: `restate --config-file
//! restate.toml` in the node's directory, `restatectl …` with the node's address where the docs
//! put a placeholder or `localhost:5122` (and, for the lines without an address, in
//! `RESTATECTL_ADDRESS`, as the docs' default address is the node's).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use restate_cluster_tests::servers::Etcd;
use restate_cluster_tests::{NodeSpec, Ports, TestDir, TestNode, binary};
use tokio::io::AsyncWriteExt;

const START_TIMEOUT: Duration = Duration::from_secs(60);
/// No restatectl line of the docs may take longer (snapshots and migration included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

struct Ran {
    success: bool,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
}

/// Runs one literal `restatectl …` line (words split on spaces, placeholders already
/// substituted) in `dir`, answering a confirmation prompt with `answer` if given.
async fn restatectl_line(dir: &Path, address: &str, line: &str, answer: Option<&str>) -> anyhow::Result<Ran> {
    let mut words = line.split_whitespace();
    anyhow::ensure!(words.next() == Some("restatectl"), "not a restatectl line: {line}");
    let mut child = tokio::process::Command::new(binary("restatectl"))
        .args(words)
        .current_dir(dir)
        .env("RESTATECTL_ADDRESS", address)
        // Prompts must be answered (or skipped by the line's own --yes), not skipped by CI.
        .env_remove("CI")
        .stdin(if answer.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    if let (Some(answer), Some(mut stdin)) = (answer, child.stdin.take()) {
        stdin.write_all(answer.as_bytes()).await?;
    }
    let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| anyhow::anyhow!("`{line}` did not finish within {COMMAND_TIMEOUT:?}"))??;
    let ran = Ran {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    eprintln!("$ {line}\n{ran}");
    Ok(ran)
}

/// Like [`restatectl_line`], and the line must succeed.
async fn succeeds(dir: &Path, address: &str, line: &str, answer: Option<&str>) -> anyhow::Result<Ran> {
    let ran = restatectl_line(dir, address, line, answer).await?;
    anyhow::ensure!(ran.success, "`{line}` failed:\n{ran}");
    Ok(ran)
}

/// The node's restate.toml: every role, the built-in replicated metadata store (or the given
/// `[metadata-client]` and roles), local logs to start with (the single-node set-up the
/// migration page starts from) and a `file://` snapshot repository.
fn restate_toml(dir: &Path, ports: Ports, roles: &str, metadata_client: &str) -> String {
    format!(
        "node-name = \"node-1\"\n\
         cluster-name = \"doc-cluster\"\n\
         roles = {roles}\n\
         auto-provision = false\n\
         bind-address = \"127.0.0.1:{fabric}\"\n\
         advertised-address = \"http://127.0.0.1:{fabric}/\"\n\
         \n\
         [bifrost]\n\
         default-provider = \"local\"\n\
         \n\
         {metadata_client}\n\
         \n\
         [admin]\n\
         bind-address = \"127.0.0.1:{admin}\"\n\
         \n\
         [ingress]\n\
         bind-address = \"127.0.0.1:{ingress}\"\n\
         \n\
         [worker.snapshots]\n\
         destination = \"file://{snapshots}\"\n",
        fabric = ports.fabric,
        admin = ports.admin,
        ingress = ports.ingress,
        snapshots = dir.join("snapshots").display(),
    )
}

/// `restate <args>` from now on (the node is stopped first if it runs).
async fn start_with(node: &mut TestNode, args: &[&str]) -> anyhow::Result<()> {
    if node.is_running() {
        node.terminate(Duration::from_secs(20))?;
    }
    node.spec_mut().args = args.iter().map(|a| a.to_string()).collect();
    node.restart();
    node.wait_alive(START_TIMEOUT).await?;
    Ok(())
}

#[tokio::test]
async fn the_docs_operator_command_lines_work_as_written() -> anyhow::Result<()> {
    let root = TestDir::new();
    let ports = Ports::free();
    let node_dir = root.path().join("node-1");
    std::fs::create_dir_all(&node_dir)?;
    let all_roles = "[\"metadata-server\", \"admin\", \"worker\", \"log-server\", \"http-ingress\"]";
    let replicated = format!(
        "[metadata-client]\ntype = \"replicated\"\naddresses = [\"http://127.0.0.1:{}/\"]",
        ports.fabric
    );
    std::fs::write(
        node_dir.join("restate.toml"),
        restate_toml(root.path(), ports, all_roles, &replicated),
    )?;

    // Cluster deployment: `restate --config-file restate.toml`, then provision.
    let spec = NodeSpec::new("node-1").arg("--config-file").arg("restate.toml");
    let mut node = TestNode::start(root.path(), spec, ports);
    node.wait_awaiting_provisioning(START_TIMEOUT).await?;
    let address = node.fabric_url();
    let dir = node_dir.as_path();
    let provisioned = succeeds(
        dir,
        &address,
        &format!("restatectl provision --address {address} --yes"),
        None,
    )
    .await?;
    assert!(
        provisioned.stdout.contains("Cluster `doc-cluster` provisioned"),
        "{provisioned}"
    );
    node.wait_alive(START_TIMEOUT).await?;

    let status = succeeds(dir, &address, "restatectl status", None).await?;
    assert!(
        status.stdout.contains("Cluster `doc-cluster`") && status.stdout.contains("node-1"),
        "{status}"
    );
    assert!(status.stdout.contains("ALIVE"), "{status}");
    let status = succeeds(dir, &address, &format!("restatectl status --addresses {address}"), None).await?;
    assert!(status.stdout.contains("ALIVE"), "{status}");
    let nodes = succeeds(dir, &address, "restatectl nodes list", None).await?;
    let row = nodes.stdout.lines().find(|l| l.contains("node-1")).unwrap_or_default();
    assert!(row.contains("N1") && row.contains("ALIVE"), "{nodes}");

    // Migration (single node → replicated logs): the operator answers the prompt.
    let set = succeeds(
        dir,
        &address,
        "restatectl config set --log-provider replicated --log-replication 1",
        Some("y\n"),
    )
    .await?;
    assert!(set.stdout.contains("Apply this change? [y/N]"), "{set}");
    assert!(set.stdout.contains("Cluster configuration updated"), "{set}");
    let configuration = succeeds(dir, &address, "restatectl config get --json", None).await?;
    let configuration: serde_json::Value = serde_json::from_str(&configuration.stdout)?;
    assert_eq!(configuration["log_provider"], "replicated", "{configuration}");
    assert_eq!(configuration["log_replication"], "{node: 1}", "{configuration}");
    let status = succeeds(dir, &address, "restatectl status", None).await?;
    assert!(
        status.stdout.contains("provider replicated, replication {node: 1}"),
        "{status}"
    );

    let created = succeeds(dir, &address, "restatectl snapshots create", None).await?;
    assert!(created.stdout.contains("snapshot(s) taken"), "{created}");
    let listed = succeeds(dir, &address, "restatectl snapshots list --json", None).await?;
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout)?;
    let partitions = configuration["num_partitions"].as_u64().unwrap_or_default() as usize;
    assert!(partitions > 0, "{configuration}");
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(partitions),
        "one snapshot per partition: {listed}"
    );

    // Metadata store: a key to find after the move, then migration mode and migrate to etcd.
    succeeds(
        dir,
        &address,
        "restatectl metadata put --key doc-key {\"moved\":true}",
        None,
    )
    .await?;
    let etcd = Etcd::start(root.path(), 1);
    std::fs::write(
        node_dir.join("target-metadata.toml"),
        format!(
            "[metadata-client]\ntype = \"etcd\"\naddresses = [\"{}\"]\n",
            etcd.endpoints.join("\", \"")
        ),
    )?;
    start_with(
        &mut node,
        &["--metadata-migration-mode", "--config-file", "restate.toml"],
    )
    .await?;
    let migrated = succeeds(
        dir,
        &address,
        "restatectl metadata migrate --toml target-metadata.toml",
        None,
    )
    .await?;
    assert!(
        migrated.stdout.contains("replicated → etcd") && migrated.stdout.contains("Copied and verified"),
        "{migrated}"
    );
    let forced = succeeds(
        dir,
        &address,
        "restatectl metadata migrate --toml target-metadata.toml --force",
        None,
    )
    .await?;
    assert!(forced.stdout.contains("Copied and verified"), "{forced}");

    // The next steps the migration printed: the node on etcd, without the metadata-server role.
    let etcd_client = format!(
        "[metadata-client]\ntype = \"etcd\"\naddresses = [\"{}\"]",
        etcd.endpoints.join("\", \"")
    );
    std::fs::write(
        node_dir.join("restate.toml"),
        restate_toml(
            root.path(),
            ports,
            "[\"admin\", \"worker\", \"log-server\", \"http-ingress\"]",
            &etcd_client,
        ),
    )?;
    start_with(&mut node, &["--config-file", "restate.toml"]).await?;
    let key = succeeds(dir, &address, "restatectl metadata get --key doc-key --json", None).await?;
    let key: serde_json::Value = serde_json::from_str(&key.stdout)?;
    assert_eq!(key["value"], serde_json::json!({"moved": true}), "{key}");
    assert_eq!(key["version"], 1, "{key}");
    let status = succeeds(dir, &address, "restatectl status", None).await?;
    assert!(
        status.stdout.contains("ALIVE") && status.stdout.contains("provider replicated, replication {node: 1}"),
        "the node runs on the migrated metadata: {status}"
    );
    Ok(())
}
