//! The configuration tree. Field names are the TOML keys in kebab-case; every section has
//! a `Default` so a file only names what it changes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use restate_types::{ReplicationProperty, Role};
use serde::{Deserialize, Serialize};

use crate::addresses::{AdvertisedAddress, bind_address};
use crate::secret::SecretString;

pub const DEFAULT_FABRIC_PORT: u16 = 5122;
pub const DEFAULT_ADMIN_PORT: u16 = 9070;
pub const DEFAULT_INGRESS_PORT: u16 = 8080;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct Configuration {
    /// Roles this node runs.
    pub roles: Vec<Role>,
    /// Unique name of the node in its cluster; defaults to the host name.
    pub node_name: Option<String>,
    pub cluster_name: String,
    /// Parent of the node directory `<base-dir>/<node-name>/`.
    pub base_dir: PathBuf,
    /// Provision the cluster at start when it is not provisioned yet.
    pub auto_provision: bool,
    /// Partitions created at provisioning.
    pub default_num_partitions: u16,
    /// Copies kept of partitions and logs, set at provisioning.
    pub default_replication: ReplicationProperty,
    /// `region[.zone]` of this node, used to spread replicas.
    pub location: Option<String>,
    /// Fixes this node's id instead of letting the cluster assign one.
    pub force_node_id: Option<u32>,
    /// Fabric listener: node-to-node gRPC, `restatectl`, `/health`, `/metrics`.
    #[serde(with = "bind_address")]
    pub bind_address: SocketAddr,
    /// URL other nodes use to reach this node's fabric port.
    pub advertised_address: Option<AdvertisedAddress>,
    /// Tracing filter, e.g. `info` or `info,restate_metadata_server=debug`; `RUST_LOG` overrides it.
    pub log_filter: String,
    pub log_format: LogFormat,
    pub log_disable_ansi_codes: bool,
    /// restate-rs sends no telemetry; the key is accepted so Restate configs load unchanged.
    pub disable_telemetry: bool,
    /// Time given to roles to stop on SIGTERM before the process exits anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Upper bound for joining the cluster at start.
    #[serde(with = "humantime_serde")]
    pub initialization_timeout: Duration,
    /// How often a node re-reads cluster metadata it has not been told about.
    #[serde(with = "humantime_serde")]
    pub metadata_update_interval: Duration,
    /// How often a node sends a heartbeat to every other node.
    #[serde(with = "humantime_serde")]
    pub gossip_interval: Duration,
    /// Silence after which a peer counts as suspect.
    #[serde(with = "humantime_serde")]
    pub gossip_suspect_after: Duration,
    /// Silence after which a peer counts as dead.
    #[serde(with = "humantime_serde")]
    pub gossip_dead_after: Duration,
    pub networking: NetworkingOptions,
    pub metadata_client: MetadataClientOptions,
    pub metadata_server: MetadataServerOptions,
    pub bifrost: BifrostOptions,
    pub admin: AdminOptions,
    pub ingress: IngressOptions,
    pub worker: WorkerOptions,
    pub log_server: LogServerOptions,
    /// How failed invocation attempts are retried, unless a service says otherwise.
    pub default_retry_policy: RetryPolicyOptions,
    /// Offer service protocol V7 to deployments (V6 otherwise, as Restate 1.7 does by default).
    pub experimental_enable_protocol_v7: bool,
    /// How long the result of an invocation with an idempotency key is kept (services and
    /// handlers may say otherwise).
    #[serde(with = "humantime_serde")]
    pub default_idempotency_retention: Duration,
    /// How long a workflow's result, state and promises are kept after its `run` ended.
    #[serde(with = "humantime_serde")]
    pub default_workflow_completion_retention: Duration,
    /// How long a finished invocation keeps its journal (and, without an idempotency key, its
    /// status and result), so operators can inspect it and restart it as new.
    #[serde(with = "humantime_serde")]
    pub default_journal_retention: Duration,
    /// Set by `--metadata-migration-mode` (not a configuration key).
    #[serde(skip)]
    pub metadata_migration_mode: bool,
}

impl Default for Configuration {
    fn default() -> Self {
        Self {
            roles: Role::ALL.to_vec(),
            node_name: None,
            cluster_name: "localcluster".to_owned(),
            base_dir: PathBuf::from("restate-data"),
            auto_provision: true,
            default_num_partitions: 24,
            default_replication: ReplicationProperty::default(),
            location: None,
            force_node_id: None,
            bind_address: SocketAddr::from(([0u16; 8], DEFAULT_FABRIC_PORT)),
            advertised_address: None,
            log_filter: "info,openraft=warn".to_owned(),
            log_format: LogFormat::Pretty,
            log_disable_ansi_codes: false,
            disable_telemetry: false,
            shutdown_timeout: Duration::from_secs(60),
            initialization_timeout: Duration::from_secs(300),
            metadata_update_interval: Duration::from_secs(2),
            gossip_interval: Duration::from_millis(100),
            gossip_suspect_after: Duration::from_secs(1),
            gossip_dead_after: Duration::from_secs(2),
            networking: NetworkingOptions::default(),
            metadata_client: MetadataClientOptions::default(),
            metadata_server: MetadataServerOptions::default(),
            bifrost: BifrostOptions::default(),
            admin: AdminOptions::default(),
            ingress: IngressOptions::default(),
            worker: WorkerOptions::default(),
            default_retry_policy: RetryPolicyOptions::default(),
            experimental_enable_protocol_v7: false,
            default_idempotency_retention: Duration::from_secs(86_400),
            default_workflow_completion_retention: Duration::from_secs(86_400),
            default_journal_retention: Duration::from_secs(86_400),
            log_server: LogServerOptions::default(),
            metadata_migration_mode: false,
        }
    }
}

impl Configuration {
    /// Silence after which a node that leads a partition, sequences a log or should store its
    /// copies counts as gone: five missed heartbeats (at most `gossip-suspect-after`), so a few
    /// late answers on a busy machine move nothing. A killed node is passed over sooner: its
    /// refused connections count at once.
    pub fn failover_silence(&self) -> Duration {
        (self.gossip_interval * 5).min(self.gossip_suspect_after)
    }

    /// The node name, resolved at load time (never empty after [`crate::load`]).
    pub fn node_name(&self) -> &str {
        self.node_name.as_deref().unwrap_or_default()
    }

    /// `<base-dir>/<node-name>/`: everything this node stores lives below it.
    pub fn node_dir(&self) -> PathBuf {
        self.base_dir.join(self.node_name())
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The fabric URL of this node (resolved at load time).
    pub fn advertised_address(&self) -> AdvertisedAddress {
        self.advertised_address
            .clone()
            .unwrap_or_else(|| AdvertisedAddress::from_bind_address(self.bind_address, "127.0.0.1"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Pretty,
    Compact,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct NetworkingOptions {
    /// Largest gRPC message between nodes.
    pub message_size_limit: ByteSize,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for NetworkingOptions {
    fn default() -> Self {
        Self {
            message_size_limit: ByteSize(32 * 1024 * 1024),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// A size in bytes; accepts `33554432` or `"32 MiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(text) => parse_byte_size(&text).map(ByteSize).map_err(serde::de::Error::custom),
        }
    }
}

fn parse_byte_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid size `{text}`: expected a number of bytes or e.g. \"32 MiB\""))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1 << 10,
        "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size `{text}`: unknown unit `{other}`; use B, KiB, MiB or GiB"
            ));
        }
    };
    Ok((number * factor as f64) as u64)
}

/// Which metadata store the node talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MetadataClientKind {
    /// The built-in Raft store on nodes with the `metadata-server` role.
    #[serde(alias = "embedded")]
    Replicated,
    Etcd,
    #[serde(alias = "dynamodb")]
    DynamoDb,
    #[serde(alias = "objectstore", alias = "s3")]
    ObjectStore,
}

impl MetadataClientKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            MetadataClientKind::Replicated => "replicated",
            MetadataClientKind::Etcd => "etcd",
            MetadataClientKind::DynamoDb => "dynamo-db",
            MetadataClientKind::ObjectStore => "object-store",
        }
    }
}

/// `[metadata-client]`: one flat table; `type` selects which of the keys apply.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct MetadataClientOptions {
    #[serde(rename = "type")]
    pub kind: MetadataClientKind,
    /// `replicated`: fabric URLs of metadata servers; `etcd`: `host:port` endpoints.
    pub addresses: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub keep_alive_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub keep_alive_timeout: Duration,
    /// Largest metadata value; writes above 95 % of it are rejected.
    pub message_size_limit: Option<ByteSize>,
    /// DynamoDB table holding the metadata.
    pub table: Option<String>,
    /// Prefix put before every key, so several clusters can share one store.
    pub key_prefix: Option<String>,
    /// Object store location, `s3://bucket/prefix`.
    pub path: Option<String>,
    pub aws_profile: Option<String>,
    pub aws_region: Option<String>,
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<SecretString>,
    pub aws_session_token: Option<SecretString>,
    pub aws_endpoint_url: Option<String>,
    pub aws_allow_http: Option<bool>,
}

impl Default for MetadataClientOptions {
    fn default() -> Self {
        Self {
            kind: MetadataClientKind::Replicated,
            addresses: Vec::new(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            keep_alive_interval: Duration::from_secs(5),
            keep_alive_timeout: Duration::from_secs(5),
            message_size_limit: None,
            table: None,
            key_prefix: None,
            path: None,
            aws_profile: None,
            aws_region: None,
            aws_access_key_id: None,
            aws_secret_access_key: None,
            aws_session_token: None,
            aws_endpoint_url: None,
            aws_allow_http: None,
        }
    }
}

/// `[metadata-server]`: the built-in Raft metadata store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct MetadataServerOptions {
    /// Join the Raft group as a voter automatically when the node joins the cluster.
    pub auto_join: bool,
    /// Base interval of the Raft timers.
    #[serde(with = "humantime_serde")]
    pub raft_tick_interval: Duration,
    /// Election timeout in ticks (randomised up to twice this). A follower starts an election
    /// after the leader's lease (the maximum timeout) plus its own timeout without heartbeats.
    /// The default (2 × 100 ms) replaces a dead leader in about 0.6–1 s.
    pub raft_election_tick: u32,
    /// Ticks between leader heartbeats; also the append-entries timeout, so it must stay well
    /// above a disk's fsync stalls (the default is 100 ms).
    pub raft_heartbeat_tick: u32,
    /// Applied entries after which the Raft log is compacted into a snapshot.
    pub log_trim_threshold: u64,
}

impl Default for MetadataServerOptions {
    fn default() -> Self {
        Self {
            auto_join: true,
            raft_tick_interval: Duration::from_millis(100),
            raft_election_tick: 2,
            raft_heartbeat_tick: 1,
            log_trim_threshold: 1000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogProviderKind {
    Local,
    Replicated,
}

impl LogProviderKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            LogProviderKind::Local => "local",
            LogProviderKind::Replicated => "replicated",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct BifrostOptions {
    /// Log provider written at provisioning.
    pub default_provider: LogProviderKind,
    /// Appends failing this long trigger a reconfiguration of the log.
    #[serde(with = "humantime_serde")]
    pub auto_recovery_interval: Duration,
    /// How long an append keeps waiting (through reconfigurations, or for enough log-servers)
    /// before it fails with the reason.
    #[serde(with = "humantime_serde")]
    pub append_timeout: Duration,
    pub replicated_loglet: ReplicatedLogletOptions,
}

impl Default for BifrostOptions {
    fn default() -> Self {
        Self {
            default_provider: LogProviderKind::Replicated,
            auto_recovery_interval: Duration::from_secs(3),
            append_timeout: Duration::from_secs(30),
            replicated_loglet: ReplicatedLogletOptions::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct ReplicatedLogletOptions {
    /// Log-servers per segment; 0 picks automatically.
    pub default_nodeset_size: u16,
    #[serde(with = "humantime_serde")]
    pub rpc_timeout: Duration,
}

impl Default for ReplicatedLogletOptions {
    fn default() -> Self {
        Self {
            default_nodeset_size: 0,
            rpc_timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct AdminOptions {
    /// Admin REST API listener.
    #[serde(with = "bind_address")]
    pub bind_address: SocketAddr,
    pub advertised_address: Option<AdvertisedAddress>,
    pub query_engine: QueryEngineOptions,
    /// An unpacked Restate web UI release (or its `.zip`) served at `/ui/`: this build bundles
    /// none, so without it `/ui/` says how to get one.
    pub web_ui_dir: Option<PathBuf>,
    /// Serve no `/ui/` at all (and no redirect of `/` to it).
    pub disable_web_ui: bool,
}

impl Default for AdminOptions {
    fn default() -> Self {
        Self {
            bind_address: SocketAddr::from(([0u16; 8], DEFAULT_ADMIN_PORT)),
            advertised_address: None,
            query_engine: QueryEngineOptions::default(),
            web_ui_dir: None,
            disable_web_ui: false,
        }
    }
}

/// `[admin.query-engine]`: the SQL introspection of `POST /query`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct QueryEngineOptions {
    /// Also serve the SQL over the PostgreSQL wire protocol here (for `psql` and BI tools).
    /// Off unless set; it has no authentication, so bind it to a private address.
    pub pgsql_bind_address: Option<SocketAddr>,
    /// Memory all running queries may hold for sorts, joins and aggregations together; a
    /// query that needs more fails, naming this key.
    pub memory_size: ByteSize,
    /// A query still running after this long is stopped with an error.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// Queries running at once; more are refused (429) until one ends.
    pub concurrent_queries_limit: usize,
}

impl Default for QueryEngineOptions {
    fn default() -> Self {
        Self {
            pgsql_bind_address: None,
            memory_size: ByteSize(1 << 30),
            query_timeout: Duration::from_secs(60),
            concurrent_queries_limit: 8,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct IngressOptions {
    /// HTTP ingress listener, where clients invoke services.
    #[serde(with = "bind_address")]
    pub bind_address: SocketAddr,
    pub advertised_address: Option<AdvertisedAddress>,
    /// Largest request body accepted (default: `networking.message-size-limit`).
    pub request_size_limit: Option<ByteSize>,
    /// Requests handled at once; more are answered 429 with `Retry-After` instead of
    /// queueing in memory.
    pub concurrent_api_requests_limit: usize,
}

impl Default for IngressOptions {
    fn default() -> Self {
        Self {
            bind_address: SocketAddr::from(([0u16; 8], DEFAULT_INGRESS_PORT)),
            advertised_address: None,
            request_size_limit: None,
            concurrent_api_requests_limit: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct WorkerOptions {
    /// How often a partition leader deletes completed invocations whose retention expired.
    #[serde(with = "humantime_serde")]
    pub cleanup_interval: Duration,
    /// Timers a partition leader keeps in memory (the earliest due); later ones are read
    /// from the store as these fire.
    pub num_timers_in_memory_limit: usize,
    /// What a partition's log may be trimmed below: see [`DurabilityMode`]. Unset, it is
    /// `balanced` in a cluster (more than one worker node, or partitions with more than one
    /// replica) and `replica-set-only` on a single node.
    pub durability_mode: Option<DurabilityMode>,
    /// How long a leader waits after records became safe to trim before it trims them (a
    /// replica that is restored from an older backup can still catch up meanwhile).
    #[serde(with = "humantime_serde")]
    pub trim_delay_interval: Duration,
    pub invoker: InvokerOptions,
    pub snapshots: SnapshotsOptions,
}

/// `[worker] durability-mode`: which copies of a partition's state must hold a record before
/// the partition's log may drop it. Trimming below what a replica made durable means that
/// replica must restore from a snapshot; trimming below the snapshots means a replica that
/// loses its disk cannot come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DurabilityMode {
    /// Never trim automatically.
    None,
    /// Below what every replica of the partition made durable.
    ReplicaSetOnly,
    /// Below what every replica made durable and a snapshot holds.
    SnapshotAndReplicaSet,
    /// Below what a snapshot holds and at least one replica made durable.
    Balanced,
    /// Below what a snapshot holds.
    SnapshotOnly,
}

impl DurabilityMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            DurabilityMode::None => "none",
            DurabilityMode::ReplicaSetOnly => "replica-set-only",
            DurabilityMode::SnapshotAndReplicaSet => "snapshot-and-replica-set",
            DurabilityMode::Balanced => "balanced",
            DurabilityMode::SnapshotOnly => "snapshot-only",
        }
    }
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            cleanup_interval: Duration::from_secs(3600),
            num_timers_in_memory_limit: 4096,
            durability_mode: None,
            trim_delay_interval: Duration::from_secs(600),
            invoker: InvokerOptions::default(),
            snapshots: SnapshotsOptions::default(),
        }
    }
}

/// `[worker.invoker]`: how attempts talk to deployments.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct InvokerOptions {
    /// No message either way for this long: close the request so the SDK suspends.
    #[serde(with = "humantime_serde")]
    pub inactivity_timeout: Duration,
    /// After the request is closed, no answer for this long aborts the attempt.
    #[serde(with = "humantime_serde")]
    pub abort_timeout: Duration,
    /// Attempts running at once on this node; more wait for a slot.
    pub concurrent_invocations_limit: usize,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for InvokerOptions {
    fn default() -> Self {
        Self {
            inactivity_timeout: Duration::from_secs(60),
            abort_timeout: Duration::from_secs(600),
            concurrent_invocations_limit: 1000,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// `[default-retry-policy]`: exponential backoff between attempts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RetryPolicyOptions {
    #[serde(with = "humantime_serde")]
    pub initial_interval: Duration,
    pub exponentiation_factor: f64,
    #[serde(with = "humantime_serde")]
    pub max_interval: Duration,
    /// Attempts in all, the first included; `"unlimited"` never gives up.
    pub max_attempts: MaxAttempts,
    /// What happens when the attempts are used up.
    pub on_max_attempts: OnMaxAttempts,
}

impl Default for RetryPolicyOptions {
    fn default() -> Self {
        Self {
            initial_interval: Duration::from_millis(500),
            exponentiation_factor: 2.0,
            max_interval: Duration::from_secs(60),
            max_attempts: MaxAttempts::Limited(70),
            on_max_attempts: OnMaxAttempts::Pause,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MaxAttempts {
    Limited(u32),
    Unlimited(UnlimitedKeyword),
}

/// The word `unlimited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnlimitedKeyword {
    Unlimited,
}

impl MaxAttempts {
    pub fn limit(self) -> Option<u32> {
        match self {
            MaxAttempts::Limited(n) => Some(n.max(1)),
            MaxAttempts::Unlimited(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnMaxAttempts {
    Pause,
    Kill,
}

/// `[worker.snapshots]`: where partition snapshots are stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct SnapshotsOptions {
    /// `s3://bucket/prefix` or `file:///path`.
    pub destination: Option<String>,
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Option<Duration>,
    pub snapshot_interval_num_records: Option<u64>,
    pub num_retained: u32,
    pub aws_profile: Option<String>,
    pub aws_region: Option<String>,
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<SecretString>,
    pub aws_session_token: Option<SecretString>,
    pub aws_endpoint_url: Option<String>,
    pub aws_allow_http: Option<bool>,
}

impl Default for SnapshotsOptions {
    fn default() -> Self {
        Self {
            destination: None,
            snapshot_interval: None,
            snapshot_interval_num_records: None,
            num_retained: 1,
            aws_profile: None,
            aws_region: None,
            aws_access_key_id: None,
            aws_secret_access_key: None,
            aws_session_token: None,
            aws_endpoint_url: None,
            aws_allow_http: None,
        }
    }
}

/// `[log-server]`: the record store of the `log-server` role.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct LogServerOptions {}
