//! `--metadata-migration-mode` and `restatectl metadata migrate`, end to end with real
//! processes and stores: replicated → etcd → DynamoDB, and replicated → S3.

use std::time::Duration;

use restate_cluster_tests::servers::{Etcd, Moto};
use restate_cluster_tests::{Cluster, MetadataHttp, PutOutcome, example_config, restatectl, restatectl_json};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const AFTER_ROLES: &str = "[admin,worker,log-server,http-ingress]";

fn write_target(cluster: &Cluster, name: &str, toml: &str) -> String {
    let path = cluster.dir.path().join(name);
    std::fs::write(&path, toml).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path.display().to_string()
}

fn migrate(cluster: &Cluster, args: &[&str]) -> (bool, String) {
    let address = cluster.nodes[0].fabric_url();
    let mut all = vec!["-s", address.as_str(), "metadata", "migrate"];
    all.extend_from_slice(args);
    let output = restatectl(&all);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Restarts every node with new settings and waits until all are alive again.
async fn restart_all(cluster: &mut Cluster, migration_mode: bool, env: &[(String, String)]) -> anyhow::Result<()> {
    for node in &mut cluster.nodes {
        node.terminate(Duration::from_secs(20))?;
        let spec = node.spec_mut();
        spec.args.retain(|a| a != "--metadata-migration-mode");
        if migration_mode {
            spec.args.push("--metadata-migration-mode".into());
        }
        spec.env.extend(env.iter().cloned());
        node.restart();
    }
    cluster.wait_all_alive(START_TIMEOUT).await?;
    Ok(())
}

/// Every user key with its value and version, read through the admin API.
async fn user_keys(cluster: &Cluster) -> anyhow::Result<Vec<(String, Option<(u32, Vec<u8>)>)>> {
    let http = MetadataHttp::new();
    let mut keys = Vec::new();
    for i in 0..5 {
        let key = format!("user-key-{i}");
        keys.push((key.clone(), http.get(&cluster.nodes[0].admin_url(), &key).await?));
    }
    Ok(keys)
}

/// The migrated store holds the system keys at least at the versions they had before; the
/// logs configuration may have moved on since (partition processors that restarted get new
/// segments), the partition table may not.
fn assert_system_versions_kept(cluster: &Cluster, before: &[(String, serde_json::Value)]) {
    let after = system_versions(cluster);
    for ((key, was), (_, now)) in before.iter().zip(&after) {
        match key.as_str() {
            "partition_table" => assert_eq!(now, was, "{key}: {after:?} vs {before:?}"),
            _ => assert!(now.as_u64() >= was.as_u64(), "{key}: {after:?} vs {before:?}"),
        }
    }
}

fn system_versions(cluster: &Cluster) -> Vec<(String, serde_json::Value)> {
    ["partition_table", "bifrost_config"]
        .iter()
        .map(|key| {
            let got = restatectl_json(&["-s", &cluster.address_list(), "metadata", "get", "--key", key, "--json"]);
            (key.to_string(), got["version"].clone())
        })
        .collect()
}

async fn prepare(cluster: &mut Cluster) -> anyhow::Result<()> {
    cluster.wait_all_alive(START_TIMEOUT).await?;
    let http = MetadataHttp::new();
    for i in 0..5u32 {
        let url = cluster.nodes[i as usize % cluster.nodes.len()].admin_url();
        for version in 1..=(i + 1) {
            let if_match = if version == 1 {
                "does-not-exist".to_owned()
            } else {
                (version - 1).to_string()
            };
            let outcome = http
                .put(
                    &url,
                    &format!("user-key-{i}"),
                    &if_match,
                    version,
                    format!("value {i}.{version}").into_bytes(),
                )
                .await;
            assert_eq!(outcome, PutOutcome::Written);
        }
    }
    Ok(())
}

#[tokio::test]
async fn replicated_to_etcd_to_dynamodb() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3, Some(example_config("cluster-3/n1.toml")), |_, spec| {
        spec.env("RESTATE_AUTO_PROVISION", "true")
    });
    prepare(&mut cluster).await?;
    let before_keys = user_keys(&cluster).await?;
    let before_system = system_versions(&cluster);
    let servers = TempServers::start(&cluster);
    let etcd_target = write_target(
        &cluster,
        "etcd.toml",
        &format!(
            "[metadata-client]\ntype = \"etcd\"\naddresses = [\"{}\"]\n",
            servers.etcd.endpoints.join("\", \"")
        ),
    );

    // Refused while nodes still run roles that write metadata.
    let (ok, text) = migrate(&cluster, &["--toml", &etcd_target]);
    assert!(!ok && text.contains("--metadata-migration-mode"), "{text}");
    // A file without [metadata-client] is refused by restatectl itself.
    let empty = write_target(&cluster, "empty.toml", "cluster-name = \"x\"\n");
    let (ok, text) = migrate(&cluster, &["--toml", &empty]);
    assert!(!ok && text.contains("has no [metadata-client] table"), "{text}");

    restart_all(&mut cluster, true, &[]).await?;
    let health = reqwest::get(format!("{}health", cluster.nodes[0].fabric_url()))
        .await?
        .json::<serde_json::Value>()
        .await?;
    assert_eq!(health["metadata_migration_mode"], true, "{health}");
    assert_eq!(
        health["roles"],
        serde_json::json!(["metadata-server", "admin"]),
        "{health}"
    );

    let (ok, text) = migrate(&cluster, &["--toml", &etcd_target, "--dry-run"]);
    assert!(ok && text.contains("Dry run") && text.contains("user-key-4"), "{text}");
    let (ok, text) = migrate(&cluster, &["--toml", &etcd_target]);
    assert!(
        ok && text.contains("Copied and verified") && text.contains("type = \"etcd\""),
        "{text}"
    );
    let (ok, text) = migrate(&cluster, &["--toml", &etcd_target]);
    assert!(
        !ok && text.contains("target keys exist") && text.contains("nodes_config"),
        "{text}"
    );
    let (ok, text) = migrate(&cluster, &["--toml", &etcd_target, "--force"]);
    assert!(ok, "{text}");

    // Restart on etcd without the metadata-server role: everything is there.
    let etcd_env: Vec<(String, String)> = vec![
        ("RESTATE_ROLES".into(), AFTER_ROLES.into()),
        ("RESTATE_METADATA_CLIENT__TYPE".into(), "etcd".into()),
        (
            "RESTATE_METADATA_CLIENT__ADDRESSES".into(),
            format!("[{}]", servers.etcd.endpoints.join(",")),
        ),
    ];
    restart_all(&mut cluster, false, &etcd_env).await?;
    assert_eq!(user_keys(&cluster).await?, before_keys);
    assert_system_versions_kept(&cluster, &before_system);

    // External to external: etcd → DynamoDB, and the same store is refused as a target.
    restart_all(&mut cluster, true, &[]).await?;
    let (ok, text) = migrate(&cluster, &["--toml", &etcd_target]);
    assert!(!ok && text.contains("already uses"), "{text}");
    servers.moto.create_table("migrated");
    let dynamo_target = write_target(
        &cluster,
        "dynamo.toml",
        &format!(
            "[metadata-client]\ntype = \"dynamo-db\"\ntable = \"migrated\"\naws-endpoint-url = \"{}\"\naws-region = \"us-east-1\"\n\
             aws-access-key-id = \"test\"\naws-secret-access-key = \"test\"\n",
            servers.moto.endpoint
        ),
    );
    let (ok, text) = migrate(&cluster, &["--toml", &dynamo_target]);
    assert!(ok && text.contains("etcd → dynamo-db"), "{text}");
    assert!(
        text.contains("aws-secret-access-key = \"***\""),
        "secrets are redacted: {text}"
    );
    let mut dynamo_env: Vec<(String, String)> = servers.moto.dynamodb_env("migrated");
    dynamo_env.push(("RESTATE_ROLES".into(), AFTER_ROLES.into()));
    restart_all(&mut cluster, false, &dynamo_env).await?;
    assert_eq!(user_keys(&cluster).await?, before_keys);
    assert_system_versions_kept(&cluster, &before_system);
    Ok(())
}

#[tokio::test]
async fn replicated_to_s3() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(1, Some(example_config("single-node.toml")), |_, spec| spec);
    prepare(&mut cluster).await?;
    let before_keys = user_keys(&cluster).await?;
    let before_system = system_versions(&cluster);
    let servers = TempServers::start(&cluster);
    servers.moto.create_bucket("metadata");
    let target = write_target(
        &cluster,
        "s3.toml",
        &format!(
            "[metadata-client]\ntype = \"object-store\"\npath = \"s3://metadata/cluster\"\naws-endpoint-url = \"{}\"\n\
             aws-allow-http = true\naws-region = \"us-east-1\"\naws-access-key-id = \"test\"\naws-secret-access-key = \"test\"\n",
            servers.moto.endpoint
        ),
    );
    restart_all(&mut cluster, true, &[]).await?;
    let (ok, text) = migrate(&cluster, &["--toml", &target]);
    assert!(ok && text.contains("replicated → object-store"), "{text}");
    let mut env = servers.moto.s3_env("s3://metadata/cluster");
    env.push(("RESTATE_ROLES".into(), AFTER_ROLES.into()));
    restart_all(&mut cluster, false, &env).await?;
    assert_eq!(user_keys(&cluster).await?, before_keys);
    assert_system_versions_kept(&cluster, &before_system);
    Ok(())
}

/// The external stores of one test, in the cluster's directory.
struct TempServers {
    etcd: Etcd,
    moto: Moto,
}

impl TempServers {
    fn start(cluster: &Cluster) -> Self {
        Self {
            etcd: Etcd::start(cluster.dir.path(), 1),
            moto: Moto::start(cluster.dir.path()),
        }
    }
}

#[tokio::test]
async fn etcd_to_replicated() -> anyhow::Result<()> {
    let etcd_dir = restate_cluster_tests::TestDir::new();
    let etcd = Etcd::start(etcd_dir.path(), 1);
    let etcd_addresses = format!("[{}]", etcd.endpoints.join(","));
    let mut cluster = Cluster::start(3, Some(example_config("cluster-3/n1.toml")), |_, spec| {
        spec.env("RESTATE_AUTO_PROVISION", "true")
            .env("RESTATE_ROLES", AFTER_ROLES)
            .env("RESTATE_METADATA_CLIENT__TYPE", "etcd")
            .env("RESTATE_METADATA_CLIENT__ADDRESSES", etcd_addresses.clone())
    });
    prepare(&mut cluster).await?;
    let before_keys = user_keys(&cluster).await?;
    let before_system = system_versions(&cluster);
    let fabric: Vec<String> = cluster.nodes.iter().map(|n| n.fabric_url()).collect();
    let target = write_target(
        &cluster,
        "replicated.toml",
        &format!(
            "[metadata-client]\ntype = \"replicated\"\naddresses = [\"{}\"]\n",
            fabric.join("\", \"")
        ),
    );

    // Migration mode with the metadata-server role: the servers wait to become the target.
    let all_roles = "[metadata-server,admin,worker,log-server,http-ingress]";
    restart_all(&mut cluster, true, &[("RESTATE_ROLES".into(), all_roles.into())]).await?;
    let (ok, text) = migrate(&cluster, &["--toml", &target]);
    assert!(ok && text.contains("etcd → replicated"), "{text}");

    let replicated_env: Vec<(String, String)> = vec![
        ("RESTATE_METADATA_CLIENT__TYPE".into(), "replicated".into()),
        (
            "RESTATE_METADATA_CLIENT__ADDRESSES".into(),
            format!("[{}]", fabric.join(",")),
        ),
    ];
    restart_all(&mut cluster, false, &replicated_env).await?;
    assert_eq!(user_keys(&cluster).await?, before_keys);
    assert_system_versions_kept(&cluster, &before_system);
    let servers = restatectl_json(&[
        "-s",
        &cluster.address_list(),
        "metadata-server",
        "list-servers",
        "--json",
    ]);
    let members = servers
        .as_array()
        .and_then(|s| s.iter().find(|s| s["status"] == "MEMBER"))
        .and_then(|s| s["members"].as_array().map(Vec::len));
    assert_eq!(members, Some(3), "every metadata server joined: {servers}");
    Ok(())
}
