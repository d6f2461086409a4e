//! Command line of the `restate` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use restate_config::{CliOverrides, LoadRequest, LoadedConfig};
use restate_types::Role;

use crate::node::Node;

/// Exit code for a configuration that cannot be used.
const EXIT_CONFIG_ERROR: u8 = 2;
/// Exit code for a node that could not start or failed while running.
const EXIT_RUNTIME_ERROR: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "restate",
    version,
    about = "restate-rs cluster node: runs any mix of the roles metadata-server, log-server, http-ingress, worker and admin"
)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "RESTATE_CONFIG", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Print the effective configuration (defaults + file + environment + flags, secrets redacted) and exit.
    #[arg(long)]
    pub dump_config: bool,
    /// Production defaults: auto-provision is off unless configured.
    #[arg(long)]
    pub production: bool,
    /// Run only the admin and metadata-server roles, to migrate metadata to another store.
    #[arg(long)]
    pub metadata_migration_mode: bool,
    /// Unique name of this node in its cluster (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// Parent directory of the node directory `<base-dir>/<node-name>/`.
    #[arg(long, value_name = "DIR")]
    pub base_dir: Option<PathBuf>,
    /// Roles to run, comma separated (metadata-server, log-server, http-ingress, worker, admin).
    #[arg(long, value_delimiter = ',', value_parser = parse_role)]
    pub roles: Option<Vec<Role>>,
    /// Fabric listener, e.g. 0.0.0.0:5122.
    #[arg(long, value_name = "IP:PORT")]
    pub bind_address: Option<String>,
    /// URL other nodes use to reach this node, e.g. http://node-1:5122/.
    #[arg(long, value_name = "URL")]
    pub advertised_address: Option<String>,
    /// Provision the cluster at start if it is not provisioned yet.
    #[arg(long, alias = "allow-bootstrap", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub auto_provision: Option<bool>,
    /// Use this node id instead of letting the cluster assign one.
    #[arg(long, value_name = "ID")]
    pub force_node_id: Option<u32>,
    /// Partitions created when provisioning the cluster.
    #[arg(long, value_name = "N")]
    pub default_num_partitions: Option<u16>,
    /// Tracing filter, e.g. info or debug,hyper=info.
    #[arg(long, value_name = "FILTER")]
    pub log_filter: Option<String>,
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse().map_err(|e: restate_types::ParseRoleError| e.to_string())
}

impl Cli {
    fn load_request(&self) -> LoadRequest {
        LoadRequest {
            config_file: self.config_file.clone(),
            production: self.production,
            metadata_migration_mode: self.metadata_migration_mode,
            cli: CliOverrides {
                node_name: self.node_name.clone(),
                cluster_name: self.cluster_name.clone(),
                base_dir: self.base_dir.clone(),
                roles: self.roles.clone(),
                bind_address: self.bind_address.clone(),
                advertised_address: self.advertised_address.clone(),
                auto_provision: self.auto_provision,
                force_node_id: self.force_node_id,
                default_num_partitions: self.default_num_partitions,
                log_filter: self.log_filter.clone(),
            },
            env: std::env::vars().collect(),
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = match restate_config::load(cli.load_request()) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_CONFIG_ERROR);
        }
    };
    if cli.dump_config {
        return match toml::to_string(&loaded.config) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: cannot print the configuration as TOML: {error}");
                ExitCode::from(EXIT_RUNTIME_ERROR)
            }
        };
    }
    if let Err(error) = crate::logging::init(&loaded.config) {
        eprintln!("error: {error}");
        return ExitCode::from(EXIT_CONFIG_ERROR);
    }
    report_load_warnings(&loaded);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_RUNTIME_ERROR);
        }
    };
    match runtime.block_on(Node::run_until_signalled(loaded.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("error: {error}");
            ExitCode::from(EXIT_RUNTIME_ERROR)
        }
    }
}

fn report_load_warnings(loaded: &LoadedConfig) {
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    if !loaded.migration_mode_dropped_roles.is_empty() {
        let dropped: Vec<&str> = loaded.migration_mode_dropped_roles.iter().map(Role::as_str).collect();
        tracing::warn!(
            "metadata migration mode: only the admin and metadata-server roles run; not starting {}",
            dropped.join(", ")
        );
    }
}
