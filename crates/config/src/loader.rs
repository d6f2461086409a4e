//! Layering: defaults < TOML file < `RESTATE_*` environment < command-line flags.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};

use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider, Source};
use restate_types::Role;
use serde::Serialize;

use crate::addresses::AdvertisedAddress;
use crate::legacy::map_legacy_keys;
use crate::options::{Configuration, MetadataClientKind};
use crate::unknown_keys::{suggest, unknown_keys};

/// Values given as command-line flags; `None` leaves the lower layers in charge.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CliOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<Role>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_provision: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force_node_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_num_partitions: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_filter: Option<String>,
}

/// What the node was asked to load.
#[derive(Debug, Clone, Default)]
pub struct LoadRequest {
    pub config_file: Option<PathBuf>,
    /// `--production`: auto-provision defaults to off.
    pub production: bool,
    /// `--metadata-migration-mode`: only the admin and metadata-server roles run.
    pub metadata_migration_mode: bool,
    pub cli: CliOverrides,
    /// Environment variables to read (the process environment in the binary; explicit in tests).
    pub env: Vec<(String, String)>,
}

/// The effective configuration plus the warnings produced while loading it; the caller logs
/// them once logging is set up with the loaded filter.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Configuration,
    pub warnings: Vec<String>,
    /// Roles dropped by metadata migration mode.
    pub migration_mode_dropped_roles: Vec<Role>,
}

/// A configuration that cannot be used. Each variant prints as one line naming the file,
/// key or value and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} does not exist: pass an existing file to --config-file (or RESTATE_CONFIG)")]
    FileNotFound { path: PathBuf },
    #[error("config file {path} cannot be read: {reason}")]
    FileUnreadable { path: PathBuf, reason: String },
    #[error("config file {path} is not valid TOML at line {line}, column {column}: {reason}")]
    InvalidToml {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("invalid value for key `{key}` ({source_name}): {reason}")]
    InvalidValue {
        key: String,
        source_name: String,
        reason: String,
    },
    #[error("invalid configuration: key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

const ENV_PREFIX: &str = "RESTATE_";
/// `RESTATE_*` variables that are not configuration keys.
const ENV_NOT_CONFIG: &[&str] = &["config"];

/// Loads, layers and validates the configuration.
pub fn load(request: LoadRequest) -> Result<LoadedConfig, ConfigError> {
    let mut warnings = Vec::new();
    let mut defaults = Configuration::default();
    if request.production {
        defaults.auto_provision = false;
    }
    let mut figment = Figment::from(figment::providers::Serialized::defaults(&defaults));

    if let Some(path) = &request.config_file {
        let (table, file_warnings) = read_config_file(path)?;
        warnings.extend(file_warnings);
        figment = figment.merge(TableProvider {
            name: format!("file {}", path.display()),
            source: Source::File(path.clone()),
            table,
        });
    }

    let (env_table, env_warnings) = env_layer(&request.env);
    warnings.extend(env_warnings);
    figment = figment.merge(TableProvider {
        name: "environment".to_owned(),
        source: Source::Custom("RESTATE_* environment variables".into()),
        table: env_table,
    });
    figment = figment.merge(figment::providers::Serialized::defaults(&request.cli));

    let mut config: Configuration = figment.extract().map_err(describe_figment_error)?;
    let dropped = resolve(&mut config, request.metadata_migration_mode)?;
    config.metadata_migration_mode = request.metadata_migration_mode;
    validate(&config)?;
    warnings.extend(metadata_client_key_warnings(&config));
    Ok(LoadedConfig {
        config,
        warnings,
        migration_mode_dropped_roles: dropped,
    })
}

fn read_config_file(path: &Path) -> Result<(toml::Table, Vec<String>), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ConfigError::FileNotFound { path: path.to_owned() },
        _ => ConfigError::FileUnreadable {
            path: path.to_owned(),
            reason: e.to_string(),
        },
    })?;
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let offset = e.span().map(|span| span.start).unwrap_or(0);
        let (line, column) = line_and_column(&text, offset);
        ConfigError::InvalidToml {
            path: path.to_owned(),
            line,
            column,
            reason: e.message().trim().to_owned(),
        }
    })?;
    let source = format!("config file {}", path.display());
    let mut warnings = map_legacy_keys(&mut table, &source);
    warnings.extend(unknown_key_warnings(&table, |key| {
        format!("{source}: unknown key `{key}`")
    }));
    Ok((table, warnings))
}

fn unknown_key_warnings(table: &toml::Table, describe: impl Fn(&str) -> String) -> Vec<String> {
    unknown_keys(table)
        .into_iter()
        .map(|key| {
            let hint = match suggest(&key) {
                Some(known) => format!("; did you mean `{known}`?"),
                None => "; it is ignored".to_owned(),
            };
            format!("{}{hint}", describe(&key))
        })
        .collect()
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Turns `RESTATE_METADATA_CLIENT__TYPE=etcd` into `metadata-client.type = "etcd"`.
fn env_layer(env: &[(String, String)]) -> (toml::Table, Vec<String>) {
    let mut table = toml::Table::new();
    let mut warnings = Vec::new();
    for (name, raw) in env {
        let key_path: Vec<String> = if name == "RUST_LOG" {
            vec!["log-filter".to_owned()]
        } else if let Some(rest) = name.strip_prefix(ENV_PREFIX) {
            rest.to_ascii_lowercase()
                .split("__")
                .map(|s| s.replace('_', "-"))
                .collect()
        } else {
            continue;
        };
        if key_path.len() == 1 && ENV_NOT_CONFIG.contains(&key_path[0].as_str()) {
            continue;
        }
        let parsed: figment::value::Value = raw.parse().unwrap_or_else(|_| raw.clone().into());
        let value = match toml::Value::try_from(&parsed) {
            Ok(value) => value,
            Err(_) => toml::Value::String(raw.clone()),
        };
        insert_path(&mut table, &key_path, value);
    }
    warnings.extend(map_legacy_keys(&mut table, "environment"));
    warnings.extend(unknown_key_warnings(&table, |key| {
        format!("environment variable {} is not a configuration key", env_var_name(key))
    }));
    (table, warnings)
}

fn insert_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut level = table;
    for parent in parents {
        let entry = level
            .entry(parent.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else { return };
        level = next;
    }
    level.insert(last.clone(), value);
}

fn env_var_name(dotted_key: &str) -> String {
    let nested: Vec<String> = dotted_key
        .split('.')
        .map(|segment| segment.replace('-', "_").to_ascii_uppercase())
        .collect();
    format!("{ENV_PREFIX}{}", nested.join("__"))
}

fn describe_figment_error(error: figment::Error) -> ConfigError {
    let key = display_key(&error.path);
    let source_name = match error.metadata.as_ref() {
        Some(metadata) if metadata.name == "environment" => {
            format!("environment variable {}", env_var_name(&error.path.join(".")))
        }
        Some(metadata) if metadata.name.starts_with("file ") => metadata.name.to_string(),
        Some(metadata) if metadata.name.contains("Serialized") => "command-line flag".to_owned(),
        Some(metadata) => metadata.name.to_string(),
        None => "configuration".to_owned(),
    };
    ConfigError::InvalidValue {
        key,
        source_name,
        reason: error.kind.to_string(),
    }
}

/// `["roles", "1"]` → `roles[1]`, `["admin", "bind-address"]` → `admin.bind-address`.
fn display_key(path: &[String]) -> String {
    let mut key = String::new();
    for segment in path {
        if segment.parse::<usize>().is_ok() {
            key.push_str(&format!("[{segment}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(segment);
        }
    }
    key
}

/// Fills in what depends on other values: the node name, advertised addresses, and the
/// roles kept in metadata migration mode. Returns the roles migration mode dropped.
fn resolve(config: &mut Configuration, migration_mode: bool) -> Result<Vec<Role>, ConfigError> {
    if config.node_name.as_deref().is_none_or(str::is_empty) {
        let hostname = gethostname::gethostname().to_string_lossy().trim().to_owned();
        if hostname.is_empty() {
            return Err(ConfigError::Invalid {
                key: "node-name".into(),
                reason: "not set and the host name is empty; set node-name".into(),
            });
        }
        config.node_name = Some(hostname);
    }
    let host = advertised_host(config.bind_address);
    if config.advertised_address.is_none() {
        config.advertised_address = Some(AdvertisedAddress::from_bind_address(config.bind_address, &host));
    }
    if config.admin.advertised_address.is_none() {
        config.admin.advertised_address = Some(AdvertisedAddress::from_bind_address(config.admin.bind_address, &host));
    }
    if config.ingress.advertised_address.is_none() {
        config.ingress.advertised_address =
            Some(AdvertisedAddress::from_bind_address(config.ingress.bind_address, &host));
    }
    let mut dropped = Vec::new();
    if migration_mode {
        config.roles.retain(|role| {
            let keep = matches!(role, Role::Admin | Role::MetadataServer);
            if !keep {
                dropped.push(*role);
            }
            keep
        });
    }
    config.roles.sort();
    config.roles.dedup();
    Ok(dropped)
}

/// The host other machines should use when the node binds every interface: the address
/// of the interface that routes outwards (no packet is sent), else loopback.
fn advertised_host(bind: SocketAddr) -> String {
    if !bind.ip().is_unspecified() {
        return bind.ip().to_string();
    }
    UdpSocket::bind("0.0.0.0:0")
        .and_then(|socket| {
            socket.connect("192.0.2.1:9")?;
            socket.local_addr()
        })
        .map(|addr| addr.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".to_owned())
}

/// The folders directly under `dir` that hold an `index.html`: a web UI release unpacked with
/// the folder it was zipped in.
pub fn web_ui_folders(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|folder| folder.join("index.html").is_file())
        .collect()
}

/// `[admin] web-ui-dir` is a directory with `index.html` at its top, or a `.zip` file.
fn validate_web_ui_dir(path: &Path) -> Result<(), ConfigError> {
    let invalid = |reason: String| {
        Err(ConfigError::Invalid {
            key: "admin.web-ui-dir".into(),
            reason,
        })
    };
    let shown = path.display();
    if path.is_file() {
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("zip")) {
            return Ok(());
        }
        return invalid(format!(
            "{shown} is a file but not a .zip; give the directory of an unpacked web UI release or its .zip"
        ));
    }
    if !path.is_dir() {
        return invalid(format!(
            "{shown} does not exist; give the directory of an unpacked web UI release (ui-vX.Y.Z.zip from \
             https://github.com/restatedev/restate-web-ui/releases) or the .zip itself"
        ));
    }
    if path.join("index.html").is_file() {
        return Ok(());
    }
    match web_ui_folders(path).as_slice() {
        [one] => invalid(format!(
            "{shown} has no index.html at its top; the UI seems to be in {}: use that directory",
            one.display()
        )),
        _ => invalid(format!(
            "{shown} has no index.html: it is not an unpacked web UI release"
        )),
    }
}

fn validate(config: &Configuration) -> Result<(), ConfigError> {
    let invalid = |key: &str, reason: String| {
        Err(ConfigError::Invalid {
            key: key.into(),
            reason,
        })
    };
    if config.roles.is_empty() {
        return invalid(
            "roles",
            "no role is configured; name at least one of metadata-server, log-server, http-ingress, worker, admin"
                .into(),
        );
    }
    if config.force_node_id == Some(0) {
        return invalid("force-node-id", "0 is reserved; use a node id of 1 or more".into());
    }
    if config.cluster_name.trim().is_empty() {
        return invalid("cluster-name", "must not be empty".into());
    }
    let node_name = config.node_name();
    if node_name.contains(['/', '\\']) || node_name == "." || node_name == ".." {
        return invalid(
            "node-name",
            format!("`{node_name}` cannot be used as a directory name; use letters, digits, `-` or `_`"),
        );
    }
    if config.default_num_partitions == 0 {
        return invalid("default-num-partitions", "must be at least 1".into());
    }
    // In metadata migration mode a metadata server may run beside an external store: it is
    // the (unprovisioned) target of a migration into the replicated store.
    if config.has_role(Role::MetadataServer)
        && config.metadata_client.kind != MetadataClientKind::Replicated
        && !config.metadata_migration_mode
    {
        return invalid(
            "roles",
            format!(
                "the metadata-server role only serves `[metadata-client] type = \"replicated\"`, but the type is `{}`; \
                 remove metadata-server from roles (the {} store holds the metadata)",
                config.metadata_client.kind.as_str(),
                config.metadata_client.kind.as_str()
            ),
        );
    }
    if config.metadata_client.kind == MetadataClientKind::Replicated
        && !config.has_role(Role::MetadataServer)
        && config.metadata_client.addresses.is_empty()
    {
        return invalid(
            "metadata-client.addresses",
            "this node has no metadata-server role, so it needs the fabric URLs of the metadata servers, \
             e.g. addresses = [\"http://node-1:5122/\"]"
                .into(),
        );
    }
    validate_metadata_client(&config.metadata_client)?;
    if let Some(dir) = &config.admin.web_ui_dir
        && config.has_role(Role::Admin)
        && !config.admin.disable_web_ui
    {
        validate_web_ui_dir(dir)?;
    }
    if config.gossip_interval.is_zero() || config.gossip_suspect_after <= config.gossip_interval {
        return invalid(
            "gossip-suspect-after",
            format!(
                "{:?} must be longer than `gossip-interval` ({:?}), or every peer looks suspect",
                config.gossip_suspect_after, config.gossip_interval
            ),
        );
    }
    if config.gossip_dead_after <= config.gossip_suspect_after {
        return invalid(
            "gossip-dead-after",
            format!(
                "{:?} must be longer than `gossip-suspect-after` ({:?})",
                config.gossip_dead_after, config.gossip_suspect_after
            ),
        );
    }
    let listeners = [
        ("bind-address", config.bind_address),
        ("admin.bind-address", config.admin.bind_address),
        ("ingress.bind-address", config.ingress.bind_address),
    ];
    for (i, (key, addr)) in listeners.iter().enumerate() {
        for (other_key, other) in &listeners[i + 1..] {
            if addr == other && addr.port() != 0 {
                return invalid(
                    key,
                    format!("{addr} is also used by `{other_key}`; every listener needs its own port"),
                );
            }
        }
    }
    Ok(())
}

/// Checks the keys the chosen `[metadata-client] type` needs.
pub fn validate_metadata_client(options: &crate::MetadataClientOptions) -> Result<(), ConfigError> {
    let invalid = |key: &str, reason: &str| {
        Err(ConfigError::Invalid {
            key: format!("metadata-client.{key}"),
            reason: reason.to_owned(),
        })
    };
    match options.kind {
        MetadataClientKind::Replicated => Ok(()),
        MetadataClientKind::Etcd if options.addresses.is_empty() => invalid(
            "addresses",
            "type = \"etcd\" needs the etcd endpoints, e.g. addresses = [\"127.0.0.1:2379\"]",
        ),
        MetadataClientKind::DynamoDb if options.table.as_deref().is_none_or(str::is_empty) => invalid(
            "table",
            "type = \"dynamo-db\" needs the DynamoDB table, e.g. table = \"restate-metadata\"",
        ),
        MetadataClientKind::ObjectStore if !options.path.as_deref().is_some_and(|p| p.starts_with("s3://")) => invalid(
            "path",
            "type = \"object-store\" needs an s3:// location, e.g. path = \"s3://bucket/prefix\"",
        ),
        _ if options.aws_profile.is_some() && options.aws_access_key_id.is_some() => invalid(
            "aws-profile",
            "`aws-profile` and `aws-access-key-id` are mutually exclusive; keep one",
        ),
        _ => Ok(()),
    }
}

/// Keys set for another store type than the chosen one: they have no effect, say so.
fn metadata_client_key_warnings(config: &Configuration) -> Vec<String> {
    use MetadataClientKind::*;
    let options = &config.metadata_client;
    let kind = options.kind;
    let aws = [DynamoDb, ObjectStore];
    let checks: [(&str, bool, &[MetadataClientKind]); 11] = [
        ("addresses", !options.addresses.is_empty(), &[Replicated, Etcd]),
        ("table", options.table.is_some(), &[DynamoDb]),
        ("key-prefix", options.key_prefix.is_some(), &[DynamoDb, Etcd]),
        ("path", options.path.is_some(), &[ObjectStore]),
        ("aws-allow-http", options.aws_allow_http.is_some(), &[ObjectStore]),
        ("aws-profile", options.aws_profile.is_some(), &aws),
        ("aws-region", options.aws_region.is_some(), &aws),
        ("aws-access-key-id", options.aws_access_key_id.is_some(), &aws),
        ("aws-secret-access-key", options.aws_secret_access_key.is_some(), &aws),
        ("aws-session-token", options.aws_session_token.is_some(), &aws),
        ("aws-endpoint-url", options.aws_endpoint_url.is_some(), &aws),
    ];
    checks
        .iter()
        .filter(|(_, set, applies)| *set && !applies.contains(&kind))
        .map(|(key, _, applies)| {
            let types: Vec<&str> = applies.iter().map(|k| k.as_str()).collect();
            format!(
                "`[metadata-client] {key}` only applies to type = {}; with type = \"{}\" it is ignored",
                types.join(" or "),
                kind.as_str()
            )
        })
        .collect()
}

/// Feeds an already parsed (and legacy-mapped) table into figment, named after its origin
/// so value errors say where the value came from.
struct TableProvider {
    name: String,
    source: Source,
    table: toml::Table,
}

impl Provider for TableProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone()).source(self.source.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        figment::providers::Serialized::defaults(&self.table).data()
    }
}
