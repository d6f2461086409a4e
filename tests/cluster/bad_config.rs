//! Every bad input exits non-zero with one line naming the file, key or value.

use std::fs;
use std::net::TcpListener;

use restate_cluster_tests::{TestDir, restate_output};

fn write(dir: &TestDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path.display().to_string()
}

/// Runs `restate` and returns (exit code, stderr).
fn run(dir: &TestDir, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let output = restate_output(args, env, dir.path());
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn missing_config_file() {
    let dir = TestDir::new();
    let (code, stderr) = run(&dir, &["--config-file", "/nonexistent/restate.toml"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/restate.toml does not exist"), "{stderr}");
}

#[test]
fn invalid_toml_names_line_and_column() {
    let dir = TestDir::new();
    let file = write(&dir, "bad.toml", "node-name = \"n1\"\ncluster-name = = \"x\"\n");
    let (code, stderr) = run(&dir, &["--config-file", &file], &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains(&format!("{file} is not valid TOML at line 2, column")),
        "{stderr}"
    );
}

#[test]
fn unknown_role() {
    let dir = TestDir::new();
    let file = write(&dir, "roles.toml", "roles = [\"worker\", \"wizard\"]\n");
    let (code, stderr) = run(&dir, &["--config-file", &file], &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("key `roles[1]`") && stderr.contains("unknown role `wizard`"),
        "{stderr}"
    );
    assert!(stderr.contains(&file), "{stderr}");
}

#[test]
fn unknown_role_on_the_command_line() {
    let dir = TestDir::new();
    let (code, stderr) = run(&dir, &["--roles", "worker,wizard"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown role `wizard`"), "{stderr}");
}

#[test]
fn malformed_address() {
    let dir = TestDir::new();
    let file = write(&dir, "addr.toml", "[ingress]\nbind-address = \"127.0.0.1\"\n");
    let (code, stderr) = run(&dir, &["--config-file", &file], &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("key `ingress.bind-address`") && stderr.contains("expected IP:PORT"),
        "{stderr}"
    );

    let (code, stderr) = run(&dir, &[], &[("RESTATE_ADVERTISED_ADDRESS", "node-1:5122")]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("RESTATE_ADVERTISED_ADDRESS") && stderr.contains("expected a URL"),
        "{stderr}"
    );
}

#[test]
fn force_node_id_zero() {
    let dir = TestDir::new();
    let file = write(&dir, "id.toml", "force-node-id = 0\n");
    let (code, stderr) = run(&dir, &["--config-file", &file], &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("force-node-id") && stderr.contains("0 is reserved"),
        "{stderr}"
    );
}

#[test]
fn port_in_use_names_address_and_key() {
    let dir = TestDir::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let port = taken.local_addr().map(|a| a.port()).unwrap_or_default();
    let base = dir.path().display().to_string();
    let (code, stderr) = run(
        &dir,
        &[
            "--node-name",
            "n1",
            "--base-dir",
            &base,
            "--bind-address",
            "127.0.0.1:0",
        ],
        &[
            ("RESTATE_ADMIN__BIND_ADDRESS", &format!("127.0.0.1:{port}")),
            ("RESTATE_INGRESS__BIND_ADDRESS", "127.0.0.1:0"),
        ],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (config key `admin.bind-address`)"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("already in use"), "{stderr}");
}

#[test]
fn unusable_base_dir() {
    let dir = TestDir::new();
    let not_a_dir = write(&dir, "plain-file", "");
    let (code, stderr) = run(&dir, &["--node-name", "n1", "--base-dir", &not_a_dir], &[]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("cannot create the node directory") && stderr.contains(&not_a_dir),
        "{stderr}"
    );
}

#[test]
fn node_directory_of_another_cluster() {
    let dir = TestDir::new();
    let node_dir = dir.path().join("n1");
    fs::create_dir_all(&node_dir).unwrap_or_else(|e| panic!("{e}"));
    fs::write(
        node_dir.join(".cluster-marker"),
        r#"{"cluster_name":"other","is_provisioned":true,"node_name":"n1","created_at_millis":1,"binary_version":"0.1.0"}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let base = dir.path().display().to_string();
    let (code, stderr) = run(
        &dir,
        &["--node-name", "n1", "--base-dir", &base, "--cluster-name", "mine"],
        &[],
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("belongs to cluster `other`"), "{stderr}");
}

#[test]
fn dump_config_shows_effective_values_without_secrets() {
    let dir = TestDir::new();
    let file = write(
        &dir,
        "dump.toml",
        "cluster-name = \"from-file\"\n[metadata-client]\ntype = \"object-store\"\npath = \"s3://b/p\"\naws-secret-access-key = \"hunter2\"\n",
    );
    let output = restate_output(
        &["--dump-config", "--config-file", &file, "--node-name", "flag-node"],
        &[
            ("RESTATE_DEFAULT_NUM_PARTITIONS", "7"),
            ("RESTATE_ROLES", "[worker,admin]"),
        ],
        dir.path(),
    );
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("cluster-name = \"from-file\""), "{text}");
    assert!(text.contains("node-name = \"flag-node\""), "{text}");
    assert!(text.contains("default-num-partitions = 7"), "{text}");
    assert!(text.contains("roles = [\"worker\", \"admin\"]"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    let parsed: toml::Table = text.parse().unwrap_or_else(|e| panic!("dump is not TOML: {e}"));
    assert_eq!(parsed["metadata-client"]["aws-secret-access-key"].as_str(), Some("***"));
}

#[test]
fn metadata_migration_mode_is_reflected_in_dump() {
    let dir = TestDir::new();
    let output = restate_output(&["--dump-config", "--metadata-migration-mode"], &[], dir.path());
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("roles = [\"metadata-server\", \"admin\"]"), "{text}");
}
