use std::io::Write;
use std::path::PathBuf;

use restate_types::Role;

use crate::{CliOverrides, ConfigError, LoadRequest, LoadedConfig, MetadataClientKind, load};

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn load_with(text: &str, vars: &[(&str, &str)], cli: CliOverrides) -> Result<LoadedConfig, ConfigError> {
    let config = file(text);
    load(LoadRequest {
        config_file: Some(config.path().to_owned()),
        cli,
        env: env(vars),
        ..Default::default()
    })
}

#[test]
fn defaults_without_any_file() {
    let loaded = load(LoadRequest {
        cli: CliOverrides {
            node_name: Some("n1".into()),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let config = loaded.config;
    assert_eq!(config.roles.len(), 5);
    assert_eq!(config.cluster_name, "localcluster");
    assert_eq!(config.bind_address.port(), 5122);
    assert_eq!(config.admin.bind_address.port(), 9070);
    assert_eq!(config.ingress.bind_address.port(), 8080);
    assert_eq!(config.default_num_partitions, 24);
    assert!(config.auto_provision);
    assert_eq!(config.node_dir(), PathBuf::from("restate-data/n1"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn flags_beat_environment_beat_file() {
    let text = "node-name = \"from-file\"\ncluster-name = \"file-cluster\"\ndefault-num-partitions = 4\n";
    let vars = [
        ("RESTATE_NODE_NAME", "from-env"),
        ("RESTATE_CLUSTER_NAME", "env-cluster"),
    ];
    let cli = CliOverrides {
        node_name: Some("from-flag".into()),
        ..Default::default()
    };
    let config = load_with(text, &vars, cli).unwrap().config;
    assert_eq!(config.node_name(), "from-flag");
    assert_eq!(config.cluster_name, "env-cluster");
    assert_eq!(config.default_num_partitions, 4);
}

#[test]
fn environment_nests_with_double_underscore_and_parses_lists() {
    let vars = [
        ("RESTATE_ROLES", "[worker,admin]"),
        ("RESTATE_METADATA_CLIENT__TYPE", "etcd"),
        ("RESTATE_METADATA_CLIENT__ADDRESSES", "[127.0.0.1:2379]"),
        ("RESTATE_ADMIN__BIND_ADDRESS", "127.0.0.1:19070"),
        ("RESTATE_WORKER__SNAPSHOTS__DESTINATION", "s3://bucket/prefix"),
        ("RESTATE_CONFIG", "/not/a/key.toml"),
    ];
    let loaded = load_with("node-name = \"n\"\n", &vars, CliOverrides::default()).unwrap();
    let config = loaded.config;
    assert_eq!(config.roles, vec![Role::Worker, Role::Admin]);
    assert_eq!(config.metadata_client.kind, MetadataClientKind::Etcd);
    assert_eq!(config.metadata_client.addresses, vec!["127.0.0.1:2379".to_string()]);
    assert_eq!(config.admin.bind_address.to_string(), "127.0.0.1:19070");
    assert_eq!(
        config.worker.snapshots.destination.as_deref(),
        Some("s3://bucket/prefix")
    );
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn unknown_keys_warn_with_file_and_suggestion() {
    let config = file("node-name = \"n\"\nauto-provison = false\n[metadata-client]\nadresses = []\n");
    let loaded = load(LoadRequest {
        config_file: Some(config.path().to_owned()),
        env: env(&[("RESTATE_CLUSTR_NAME", "x")]),
        ..Default::default()
    })
    .unwrap();
    let path = config.path().display().to_string();
    let warnings = loaded.warnings.join("\n");
    assert!(
        warnings.contains(&format!(
            "config file {path}: unknown key `auto-provison`; did you mean `auto-provision`?"
        )),
        "{warnings}"
    );
    assert!(
        warnings.contains("`metadata-client.adresses`; did you mean `metadata-client.addresses`?"),
        "{warnings}"
    );
    assert!(
        warnings.contains("environment variable RESTATE_CLUSTR_NAME is not a configuration key; did you mean"),
        "{warnings}"
    );
    // The typo changes nothing: the default stays in force.
    assert!(loaded.config.auto_provision);
}

#[test]
fn legacy_keys_are_mapped_with_a_warning() {
    let text = "node-name = \"n\"\n[metadata-server]\ntype = \"replicated\"\n[bifrost.replicated-loglet]\ndefault-log-replication = 2\n[admin.query-engine]\npgsql-bind-address = \"127.0.0.1:9071\"\n";
    let loaded = load_with(text, &[], CliOverrides::default()).unwrap();
    assert_eq!(loaded.config.default_replication.num_copies(), 2);
    assert_eq!(
        loaded.config.admin.query_engine.pgsql_bind_address,
        Some("127.0.0.1:9071".parse().unwrap())
    );
    assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
    assert!(loaded.warnings.iter().all(|w| w.contains("legacy key")));
}

#[test]
fn production_turns_auto_provision_off_unless_configured() {
    let request = |text: &str| {
        let config = file(text);
        load(LoadRequest {
            config_file: Some(config.path().to_owned()),
            production: true,
            ..Default::default()
        })
        .unwrap()
        .config
        .auto_provision
    };
    assert!(!request("node-name = \"n\"\n"));
    assert!(request("node-name = \"n\"\nauto-provision = true\n"));
}

#[test]
fn migration_mode_keeps_only_admin_and_metadata_server() {
    let config = file("node-name = \"n\"\n");
    let loaded = load(LoadRequest {
        config_file: Some(config.path().to_owned()),
        metadata_migration_mode: true,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(loaded.config.roles, vec![Role::MetadataServer, Role::Admin]);
    assert_eq!(loaded.migration_mode_dropped_roles.len(), 3);
}

#[test]
fn bad_inputs_name_the_file_key_and_expectation() {
    let missing = load(LoadRequest {
        config_file: Some("/nonexistent/restate.toml".into()),
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        missing.contains("/nonexistent/restate.toml does not exist"),
        "{missing}"
    );

    let toml = load_with("node-name = \"n\"\nroles = [\"worker\"\n", &[], CliOverrides::default())
        .unwrap_err()
        .to_string();
    assert!(toml.contains("is not valid TOML at line 3, column 1"), "{toml}");

    let role = load_with("roles = [\"wrker\"]\n", &[], CliOverrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        role.contains("key `roles[0]`") && role.contains("unknown role `wrker`"),
        "{role}"
    );

    let address = load_with("[admin]\nbind-address = \"localhost\"\n", &[], CliOverrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        address.contains("key `admin.bind-address`") && address.contains("expected IP:PORT"),
        "{address}"
    );

    let node_id = load_with("force-node-id = 0\n", &[], CliOverrides::default())
        .unwrap_err()
        .to_string();
    assert!(node_id.contains("`force-node-id`: 0 is reserved"), "{node_id}");

    let env_error = load_with(
        "",
        &[("RESTATE_DEFAULT_NUM_PARTITIONS", "many")],
        CliOverrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        env_error.contains("environment variable RESTATE_DEFAULT_NUM_PARTITIONS"),
        "{env_error}"
    );

    let role_conflict = load_with(
        "roles = [\"metadata-server\", \"worker\"]\n[metadata-client]\ntype = \"etcd\"\naddresses = [\"127.0.0.1:2379\"]\n",
        &[],
        CliOverrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        role_conflict.contains("remove metadata-server from roles"),
        "{role_conflict}"
    );
}

#[test]
fn dump_config_redacts_secrets() {
    let text = "node-name = \"n\"\nroles = [\"worker\"]\n[metadata-client]\ntype = \"dynamo-db\"\ntable = \"t\"\naws-access-key-id = \"AKID\"\naws-secret-access-key = \"very-secret\"\n";
    let config = load_with(text, &[], CliOverrides::default()).unwrap().config;
    let dumped = toml::to_string(&config).unwrap();
    assert!(!dumped.contains("very-secret"), "{dumped}");
    assert!(dumped.contains("aws-secret-access-key = \"***\""), "{dumped}");
    assert_eq!(
        config.metadata_client.aws_secret_access_key.unwrap().expose(),
        "very-secret"
    );
}

#[test]
fn every_shipped_example_config_loads_without_warnings() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut files = Vec::new();
    let mut pending = vec![dir];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 4, "{files:?}");
    for path in files {
        let loaded = load(LoadRequest {
            config_file: Some(path.clone()),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(loaded.warnings.is_empty(), "{}: {:?}", path.display(), loaded.warnings);
    }
}

#[test]
fn a_web_ui_dir_must_hold_a_release_and_names_the_key_when_it_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let load_dir = |path: &std::path::Path| {
        load_with(
            "",
            &[("RESTATE_ADMIN__WEB_UI_DIR", &path.display().to_string())],
            CliOverrides::default(),
        )
    };
    let message = |result: Result<LoadedConfig, ConfigError>| match result {
        Err(error) => error.to_string(),
        Ok(_) => "loaded".into(),
    };
    let missing = message(load_dir(&dir.path().join("nowhere")));
    assert!(
        missing.contains("admin.web-ui-dir") && missing.contains("does not exist"),
        "{missing}"
    );
    // A release wrapped in a folder: the message names the folder to use.
    std::fs::create_dir_all(dir.path().join("ui-v1/assets")).unwrap();
    std::fs::write(dir.path().join("ui-v1/index.html"), "<html></html>").unwrap();
    let wrapped = message(load_dir(dir.path()));
    assert!(wrapped.contains("ui-v1"), "{wrapped}");
    assert!(load_dir(&dir.path().join("ui-v1")).is_ok());
    let not_zip = dir.path().join("ui.tar");
    std::fs::write(&not_zip, "x").unwrap();
    assert!(message(load_dir(&not_zip)).contains("not a .zip"));
    let zip = dir.path().join("ui.zip");
    std::fs::write(&zip, "checked when the admin role starts").unwrap();
    assert!(load_dir(&zip).is_ok());
    // Not checked when the UI is off.
    let off = load_with(
        "[admin]\ndisable-web-ui = true\n",
        &[("RESTATE_ADMIN__WEB_UI_DIR", "/nowhere")],
        CliOverrides::default(),
    );
    assert!(off.is_ok());
}
