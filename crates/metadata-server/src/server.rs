//! Lifecycle of a metadata server: awaiting provisioning → (provisioned | joining) → member.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use openraft::ChangeMembers;
use openraft::error::{ClientWriteError, RaftError};
use restate_config::Configuration;
use restate_metadata_store::LeaderHint;
use restate_proto::metadata as pb;
use restate_proto::metadata_server::metadata_server_network_svc_client::MetadataServerNetworkSvcClient;
use restate_proto::metadata_server::{JoinClusterRequest, RetireRequest};
use restate_types::GenerationalNodeId;
use restate_types::metadata::{NODES_CONFIG_KEY, NodesConfiguration, Precondition, Version, VersionedValue};
use tonic::metadata::MetadataValue;

use crate::lease::MetricsClock;
use crate::network::{ChannelPool, NetworkFactory, PeerIdentity};
use crate::raft_types::{Command, CommandResult, MemberNode, NodeId, Raft};
use crate::state_machine::{SharedState, StateMachine};
use crate::storage::{Storage, StorageOpenError};
use crate::timing::{LEASE_MARGIN, RaftTiming, quorum_silence_limit};

/// Directory of the store inside the node directory.
pub const STORAGE_DIR: &str = "replicated-metadata-server";
/// Longest wait for a membership change to commit.
const MEMBERSHIP_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Request header naming the calling node (`N<id>:<generation>`, or `N<id>` if its generation
/// is not known) on `JoinCluster` and `Retire`; the receiver checks it against `nodes_config`.
pub(crate) const CALLER_HEADER: &str = "x-restate-caller-node";
/// Largest snapshot chunk per install-snapshot message (openraft's default), less if the
/// message size limit is smaller.
const SNAPSHOT_CHUNK_BYTES: u64 = 3 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MetadataServerError {
    #[error(transparent)]
    Storage(#[from] StorageOpenError),
    #[error("metadata server storage failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("metadata server: {0}")]
    Raft(String),
    #[error("{0}")]
    Refused(String),
}

/// Where the server is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerStatus {
    /// No cluster yet: waiting for provisioning (or for its node to join a cluster).
    AwaitingProvisioning,
    /// The node has an id but this server is not a member (auto-join is off, or it was removed).
    Standby,
    /// Asking the leader to become a member.
    Joining,
    /// Replicates the log but does not vote yet.
    Learner,
    /// Voting member.
    Member,
}

impl ServerStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            ServerStatus::AwaitingProvisioning => "AWAITING_PROVISIONING",
            ServerStatus::Standby => "STANDBY",
            ServerStatus::Joining => "JOINING",
            ServerStatus::Learner => "LEARNER",
            ServerStatus::Member => "MEMBER",
        }
    }
}

/// A metadata server; cheap to clone.
#[derive(Clone)]
pub struct MetadataServer {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) cluster_name: String,
    pub(crate) advertised_address: String,
    /// Configured metadata addresses, asked when joining.
    peers: Vec<String>,
    raft_config: Arc<openraft::Config>,
    pub(crate) request_timeout: Duration,
    pub(crate) max_value_size: usize,
    /// Largest gRPC message between nodes (`networking.message-size-limit`).
    pub(crate) message_size_limit: usize,
    node_name: String,
    auto_join: bool,
    storage: Storage,
    pub(crate) storage_id: u64,
    pub(crate) shared: SharedState,
    /// Metrics of the current Raft instance, stamped with the local clock (read lease, quorum
    /// loss).
    pub(crate) clock: MetricsClock,
    /// One channel per peer address, for Raft traffic and membership calls.
    pool: ChannelPool,
    committed_index: std::sync::Mutex<Option<Arc<AtomicU64>>>,
    /// Removed from the metadata cluster: no Raft until added again.
    retired: std::sync::atomic::AtomicBool,
    raft: RwLock<Option<Raft>>,
    node_id: OnceLock<NodeId>,
    /// The node's plain id once it has joined the cluster (0 = not yet).
    assigned_node_id: AtomicU32,
    /// The node's generation plus one, once the node told it (0 = unknown).
    assigned_generation: AtomicU64,
    joining: std::sync::atomic::AtomicBool,
    lifecycle: tokio::sync::Mutex<()>,
    /// When an append-entries (or heartbeat) last arrived, and from whom: the other followers
    /// refuse votes until the leader lease after it has passed.
    last_append: std::sync::Mutex<Option<(NodeId, Instant)>>,
}

impl MetadataServer {
    /// Opens (or creates) the store under `<node-dir>/replicated-metadata-server/`.
    pub fn open(config: &Configuration) -> Result<Self, MetadataServerError> {
        let path = config.node_dir().join(STORAGE_DIR);
        let (storage, storage_id) = Storage::open(&path, config.node_name())?;
        let options = &config.metadata_server;
        let timing = RaftTiming::from_options(options);
        let limit = usize::try_from(config.networking.message_size_limit.0).unwrap_or(usize::MAX);
        let raft_config = openraft::Config {
            cluster_name: config.cluster_name.clone(),
            // openraft also uses the heartbeat interval as the append-entries timeout.
            heartbeat_interval: timing.heartbeat_ms,
            election_timeout_min: timing.election_min_ms,
            election_timeout_max: timing.election_max_ms,
            install_snapshot_timeout: 10_000,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES.min(limit as u64 / 2).max(64 * 1024),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(options.log_trim_threshold.max(1)),
            // Entries kept behind a snapshot for followers that lag slightly; a follower further
            // behind receives the snapshot.
            max_in_snapshot_log_to_keep: options.log_trim_threshold / 4,
            purge_batch_size: 256,
            ..Default::default()
        }
        .validate()
        .map_err(|e| MetadataServerError::Refused(format!("invalid [metadata-server] timing: {e}")))?;
        let server = Self {
            inner: Arc::new(Inner {
                cluster_name: config.cluster_name.clone(),
                advertised_address: config.advertised_address().to_string(),
                peers: config
                    .metadata_client
                    .addresses
                    .iter()
                    .map(|a| restate_net::normalize_address(a))
                    .collect(),
                raft_config: Arc::new(raft_config),
                request_timeout: config.metadata_client.request_timeout,
                max_value_size: (limit / 100 * 95).min(restate_metadata_store::REPLICATED_MAX_VALUE_SIZE),
                message_size_limit: limit,
                node_name: config.node_name().to_owned(),
                auto_join: options.auto_join,
                storage,
                storage_id,
                shared: SharedState::default(),
                clock: MetricsClock::default(),
                pool: ChannelPool::new(config.networking.connect_timeout),
                committed_index: std::sync::Mutex::new(None),
                retired: Default::default(),
                raft: RwLock::new(None),
                node_id: OnceLock::new(),
                assigned_node_id: AtomicU32::new(0),
                assigned_generation: AtomicU64::new(0),
                joining: Default::default(),
                lifecycle: tokio::sync::Mutex::new(()),
                last_append: std::sync::Mutex::new(None),
            }),
        };
        Ok(server)
    }

    /// Resumes Raft if this server was a member before the restart.
    pub async fn start(&self) -> Result<(), MetadataServerError> {
        let _guard = self.inner.lifecycle.lock().await;
        let (retired, node_id) = self
            .inner
            .storage
            .blocking(|storage| Ok((storage.retired()?, storage.node_id()?)))
            .await?;
        if retired {
            self.inner.retired.store(true, Ordering::Relaxed);
            tracing::info!(
                "this metadata server was removed from the metadata cluster and stays on standby; \
                 `restatectl metadata-server add-node` adds it again"
            );
        } else if let Some(node_id) = node_id {
            self.create_raft(node_id).await?;
            tracing::info!(
                node_id = format!("N{node_id}"),
                "metadata server resumed its Raft state"
            );
        } else {
            tracing::info!("metadata server has no Raft state yet: awaiting provisioning or joining a cluster");
        }
        Ok(())
    }

    pub fn storage_id(&self) -> u64 {
        self.inner.storage_id
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    pub fn raft(&self) -> Option<Raft> {
        self.inner.raft.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn node_id(&self) -> Option<NodeId> {
        self.inner.node_id.get().copied()
    }

    /// Starts an election now if the Raft leader this member follows is `gone` (the node's
    /// failure detector no longer hears it) and this member is the one to run: the voter with
    /// the lowest id among those not gone, so two followers do not split the vote. Without it
    /// the followers wait for their election timeout after the leader's lease. Returns whether
    /// it campaigned (the vote still fails while the others' leader lease lasts).
    pub async fn campaign_if_leader_gone(&self, gone: impl Fn(NodeId) -> bool) -> bool {
        let (Some(raft), Some(me)) = (self.raft(), self.node_id()) else {
            return false;
        };
        let metrics = raft.metrics().borrow().clone();
        let Some(leader) = metrics.current_leader else {
            return false;
        };
        if leader == me || !gone(leader) {
            return false;
        }
        let first_candidate = metrics
            .membership_config
            .membership()
            .voter_ids()
            .filter(|voter| *voter != leader && !gone(*voter))
            .min();
        if first_candidate != Some(me) {
            return false;
        }
        // The other voters refuse votes for the leader lease after the leader's last
        // heartbeat; a campaign before then fails and the next waits a whole election
        // timeout. Heartbeats reach every follower together, so ours dates theirs.
        let heard = *self.inner.last_append.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((from, at)) = heard
            && from == leader
        {
            let lease = Duration::from_millis(raft.config().election_timeout_max);
            let lease_end = at + lease + LEASE_MARGIN;
            if Instant::now() < lease_end {
                tokio::time::sleep_until(lease_end.into()).await;
                let metrics = raft.metrics().borrow().clone();
                if metrics.current_leader != Some(leader) || !gone(leader) {
                    return false;
                }
            }
        }
        tracing::debug!(
            leader = format!("N{leader}"),
            "the metadata leader is gone: campaigning now"
        );
        raft.trigger().elect().await.is_ok()
    }

    /// Notes that an append-entries from `leader` arrived now (see [`Self::campaign_if_leader_gone`]).
    pub(crate) fn heard_append_from(&self, leader: NodeId) {
        *self.inner.last_append.lock().unwrap_or_else(|p| p.into_inner()) = Some((leader, Instant::now()));
    }

    /// Whether the node should make this server a member at start: `auto-join` is on and an
    /// operator has not removed it.
    pub fn auto_join(&self) -> bool {
        self.inner.auto_join && !self.inner.retired.load(Ordering::Relaxed)
    }

    /// Committed index as last persisted by this server.
    pub(crate) fn committed_index(&self) -> u64 {
        self.inner
            .committed_index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub fn status(&self) -> ServerStatus {
        let Some(raft) = self.raft() else {
            if self.inner.retired.load(Ordering::Relaxed) {
                return ServerStatus::Standby;
            }
            return match self.inner.assigned_node_id.load(Ordering::Relaxed) {
                0 => ServerStatus::AwaitingProvisioning,
                _ if self.inner.joining.load(Ordering::Relaxed) => ServerStatus::Joining,
                _ => ServerStatus::Standby,
            };
        };
        let Some(me) = self.node_id() else {
            return ServerStatus::AwaitingProvisioning;
        };
        let metrics = raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let is_me = |node: Option<&MemberNode>| node.is_some_and(|n| n.storage_id == self.inner.storage_id);
        if membership.voter_ids().any(|id| id == me) && is_me(membership.get_node(&me)) {
            ServerStatus::Member
        } else if is_me(membership.get_node(&me)) {
            ServerStatus::Learner
        } else if self.inner.joining.load(Ordering::Relaxed) {
            ServerStatus::Joining
        } else if membership.nodes().next().is_none() {
            ServerStatus::AwaitingProvisioning
        } else {
            ServerStatus::Standby
        }
    }

    /// Records the node's id (used by `AddNode`) and generation after it joined the cluster:
    /// the generation lets the leader refuse a join from an outdated incarnation of the node.
    pub fn set_assigned_node(&self, node_id: GenerationalNodeId) {
        self.inner.assigned_node_id.store(node_id.id.0, Ordering::Relaxed);
        self.inner
            .assigned_generation
            .store(u64::from(node_id.generation) + 1, Ordering::Relaxed);
    }

    /// This server's node as it names itself to peers: the generation the node reported, else
    /// (with `lookup_local`) the one in the locally applied `nodes_config` for this node's
    /// name. Only a leader should look it up: it has applied every committed entry, among them
    /// its node's latest registration, whereas a joining or lagging server may hold an older
    /// generation and would be refused as outdated.
    fn caller_identity(&self, node_id: NodeId, lookup_local: bool) -> String {
        let plain = node_id as u32;
        let known = match self.inner.assigned_generation.load(Ordering::Relaxed) {
            generation if generation > 0 && self.assigned_node_id() == Some(plain) => Some(generation - 1),
            _ if !lookup_local => None,
            _ => self.nodes_config().and_then(|nodes| {
                nodes
                    .nodes
                    .values()
                    .find(|n| n.id.0 == plain && n.name == self.inner.node_name)
                    .map(|n| u64::from(n.generation))
            }),
        };
        match known {
            Some(generation) => format!("N{plain}:{generation}"),
            None => format!("N{plain}"),
        }
    }

    /// The nodes configuration in this server's applied state, if any.
    pub(crate) fn nodes_config(&self) -> Option<NodesConfiguration> {
        let state = self.inner.shared.read();
        let value = state.entries.get(NODES_CONFIG_KEY)?;
        serde_json::from_slice(&value.value).ok()
    }

    pub fn assigned_node_id(&self) -> Option<u32> {
        match self.inner.assigned_node_id.load(Ordering::Relaxed) {
            0 => None,
            id => Some(id),
        }
    }

    async fn create_raft(&self, node_id: NodeId) -> Result<Raft, MetadataServerError> {
        if let Some(raft) = self.raft() {
            return Ok(raft);
        }
        let inner = &self.inner;
        let shared = inner.shared.clone();
        // Reading the log state and decoding the snapshot block: off the async workers.
        let (log_store, state_machine) = inner
            .storage
            .blocking(move |storage| {
                let log_store = storage.log_store()?;
                let state_machine = StateMachine::open(storage.clone(), shared)?;
                Ok((log_store, state_machine))
            })
            .await?;
        *inner.committed_index.lock().unwrap_or_else(|p| p.into_inner()) = Some(log_store.committed_index());
        let network = NetworkFactory {
            identity: Arc::new(PeerIdentity {
                cluster_name: inner.cluster_name.clone(),
                fingerprint: inner.shared.fingerprint_handle(),
                node_id,
                storage_id: inner.storage_id,
                message_size_limit: inner.message_size_limit,
            }),
            pool: inner.pool.clone(),
        };
        let raft = Raft::new(node_id, inner.raft_config.clone(), network, log_store, state_machine)
            .await
            .map_err(|e| MetadataServerError::Raft(format!("cannot start Raft: {e}")))?;
        inner.clock.watch(&raft);
        let _ = inner.node_id.set(node_id);
        *inner.raft.write().unwrap_or_else(|p| p.into_inner()) = Some(raft.clone());
        Ok(raft)
    }

    fn me(&self) -> MemberNode {
        MemberNode {
            address: self.inner.advertised_address.clone(),
            storage_id: self.inner.storage_id,
        }
    }

    /// Seeds a one-member Raft group on this server and stores `nodes_config` as its first
    /// value. Returns false if this server already holds a cluster's nodes configuration.
    pub async fn provision(
        &self,
        node_id: u32,
        nodes_config: Vec<u8>,
        version: Version,
    ) -> Result<bool, MetadataServerError> {
        let _guard = self.inner.lifecycle.lock().await;
        let node_id = NodeId::from(node_id);
        if self.inner.shared.read().entries.contains_key(NODES_CONFIG_KEY) {
            return Ok(false);
        }
        let stored_node_id = self.inner.storage.blocking(|storage| storage.node_id()).await?;
        match (self.node_id(), stored_node_id) {
            (Some(existing), _) | (None, Some(existing)) if existing != node_id => {
                return Err(MetadataServerError::Refused(format!(
                    "this metadata server is already N{existing}; it cannot be provisioned as N{node_id}"
                )));
            }
            _ => {}
        }
        self.inner
            .storage
            .blocking(move |storage| storage.set_node_id(node_id))
            .await?;
        let raft = self.create_raft(node_id).await?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| MetadataServerError::Raft(e.to_string()))?;
        if !initialized {
            let members = std::collections::BTreeMap::from([(node_id, self.me())]);
            raft.initialize(members)
                .await
                .map_err(|e| MetadataServerError::Raft(format!("cannot initialize the Raft group: {e}")))?;
        }
        raft.wait(Some(Duration::from_secs(10)))
            .current_leader(node_id, "provisioning: waiting to lead the new group")
            .await
            .map_err(|e| MetadataServerError::Raft(format!("the new group elected no leader: {e}")))?;
        let command = Command::Put {
            key: NODES_CONFIG_KEY.to_owned(),
            value: VersionedValue::new(version, nodes_config),
            precondition: Precondition::DoesNotExist,
            write_id: 0,
        };
        let response = raft
            .client_write(command)
            .await
            .map_err(|e| MetadataServerError::Raft(format!("cannot store the nodes configuration: {e}")))?;
        let newly = matches!(response.data, CommandResult::Applied);
        if newly {
            tracing::info!(
                node_id = format!("N{node_id}"),
                "provisioned the metadata store: this server leads a new Raft group"
            );
        }
        Ok(newly)
    }

    /// Makes this server a voting member of the metadata cluster: creates its Raft instance
    /// (as `node_id`) if needed and asks the leader to add it, until it is a voter. Runs until
    /// it succeeds; the caller bounds it.
    pub async fn join(&self, node_id: u32) -> Result<(), MetadataServerError> {
        let node_id = NodeId::from(node_id);
        let raft = {
            let _guard = self.inner.lifecycle.lock().await;
            let (stored_node_id, stored_retired) = self
                .inner
                .storage
                .blocking(|storage| Ok((storage.node_id()?, storage.retired()?)))
                .await?;
            match self.node_id().or(stored_node_id) {
                Some(existing) if existing != node_id => {
                    return Err(MetadataServerError::Refused(format!(
                        "this metadata server's storage belongs to N{existing}, but the node now has id N{node_id}; \
                         remove {} to start it afresh",
                        self.inner.storage.path.display()
                    )));
                }
                _ => {}
            }
            let rejoining = self.inner.retired.swap(false, Ordering::Relaxed) || stored_retired;
            self.inner
                .storage
                .blocking(move |storage| {
                    storage.set_node_id(node_id)?;
                    if rejoining {
                        storage.set_retired(false)?;
                    }
                    Ok(())
                })
                .await?;
            if rejoining {
                tracing::info!(
                    node_id = format!("N{node_id}"),
                    "rejoining the metadata cluster after a removal"
                );
            }
            self.create_raft(node_id).await?
        };
        self.inner.joining.store(true, Ordering::Relaxed);
        let result = self.join_loop(&raft, node_id).await;
        self.inner.joining.store(false, Ordering::Relaxed);
        result
    }

    async fn join_loop(&self, raft: &Raft, node_id: NodeId) -> Result<(), MetadataServerError> {
        let mut pause = Duration::from_millis(100);
        let mut logged = false;
        // This server's own view may be stale (e.g. it was removed and never heard of it):
        // only the leader's acceptance counts.
        let mut accepted = false;
        loop {
            if accepted && self.status() == ServerStatus::Member {
                tracing::info!(
                    node_id = format!("N{node_id}"),
                    "this metadata server is a voting member"
                );
                return Ok(());
            }
            let mut targets: Vec<String> = Vec::new();
            let metrics = raft.metrics().borrow().clone();
            if let Some(leader) = metrics.current_leader.filter(|l| *l != node_id)
                && let Some(node) = metrics.membership_config.membership().get_node(&leader)
            {
                targets.push(node.address.clone());
            }
            targets.extend(
                self.inner
                    .peers
                    .iter()
                    .filter(|p| **p != self.inner.advertised_address)
                    .cloned(),
            );
            let mut queue: std::collections::VecDeque<String> = targets.into();
            let mut last_error = String::from("no peer address to ask");
            let mut attempts = 0;
            while let Some(target) = queue.pop_front() {
                if attempts == 16 {
                    break;
                }
                attempts += 1;
                match self.ask_to_join(&target, node_id).await {
                    Ok(()) => {
                        accepted = true;
                        last_error.clear();
                        break;
                    }
                    Err(status) => {
                        if let Some(hint) = LeaderHint::from_status(&status) {
                            let hint = restate_net::normalize_address(&hint.address);
                            if hint != target {
                                queue.push_front(hint);
                            }
                        }
                        last_error = format!("{target}: {}", status.message());
                    }
                }
            }
            if !last_error.is_empty() && !logged {
                tracing::info!(reason = %last_error, "waiting to join the metadata cluster");
                logged = true;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// A client for membership calls to `address`, over the pooled channel.
    fn network_client(
        &self,
        address: &str,
    ) -> Result<MetadataServerNetworkSvcClient<tonic::transport::Channel>, tonic::Status> {
        let channel = self
            .inner
            .pool
            .get(address)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let limit = self.inner.message_size_limit;
        Ok(MetadataServerNetworkSvcClient::new(channel)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit))
    }

    /// `message` as a request that names this node as its caller (see [`Self::caller_identity`]).
    fn request_naming_me<T>(&self, message: T, me: NodeId, lookup_local: bool, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        if let Ok(value) = MetadataValue::try_from(self.caller_identity(me, lookup_local)) {
            request.metadata_mut().insert(CALLER_HEADER, value);
        }
        request
    }

    async fn tell_retired(&self, me: NodeId, node_id: NodeId, member: &MemberNode) -> Result<(), tonic::Status> {
        let timeout = Duration::from_secs(2);
        let request = self.request_naming_me(
            RetireRequest {
                cluster: Some(self.identity()),
                node_id: node_id as u32,
                storage_id: member.storage_id,
            },
            me,
            true,
            timeout,
        );
        let mut client = self.network_client(&member.address)?;
        match tokio::time::timeout(timeout, client.retire(request)).await {
            Ok(result) => result.map(|_| ()),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "no answer within {timeout:?}"
            ))),
        }
    }

    async fn ask_to_join(&self, target: &str, node_id: NodeId) -> Result<(), tonic::Status> {
        let timeout = MEMBERSHIP_CHANGE_TIMEOUT * 2;
        let request = self.request_naming_me(
            JoinClusterRequest {
                cluster: Some(self.identity()),
                node_id: node_id as u32,
                storage_id: self.inner.storage_id,
                address: self.inner.advertised_address.clone(),
            },
            node_id,
            false,
            timeout,
        );
        let mut client = self.network_client(target)?;
        match tokio::time::timeout(timeout, client.join_cluster(request)).await {
            Ok(result) => result.map(|_| ()),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "no answer within {timeout:?}"
            ))),
        }
    }

    pub(crate) fn identity(&self) -> pb::ClusterIdentity {
        pb::ClusterIdentity {
            cluster_name: self.inner.cluster_name.clone(),
            fingerprint: self.inner.shared.fingerprint(),
        }
    }

    /// On the leader: adds (or re-adds, after a wipe) `node_id` as a voting member.
    pub(crate) async fn admit(&self, raft: &Raft, node_id: NodeId, node: MemberNode) -> Result<(), String> {
        let metrics = raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let change = |changes: ChangeMembers<NodeId, MemberNode>| async move {
            tokio::time::timeout(MEMBERSHIP_CHANGE_TIMEOUT, raft.change_membership(changes, false))
                .await
                .map_err(|_| format!("membership change did not commit within {MEMBERSHIP_CHANGE_TIMEOUT:?}"))?
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        match membership.get_node(&node_id) {
            Some(existing) if existing.storage_id != node.storage_id => {
                tracing::warn!(
                    node_id = format!("N{node_id}"),
                    old_storage = existing.storage_id,
                    new_storage = node.storage_id,
                    "a metadata member returned with new storage (its data was wiped); replacing its old membership"
                );
                change(ChangeMembers::RemoveVoters(BTreeSet::from([node_id]))).await?;
            }
            Some(existing) if existing.address != node.address => {
                change(ChangeMembers::SetNodes(std::collections::BTreeMap::from([(
                    node_id,
                    node.clone(),
                )])))
                .await?;
            }
            _ => {}
        }
        let membership = raft.metrics().borrow().membership_config.membership().clone();
        if membership.get_node(&node_id).is_none() {
            tokio::time::timeout(MEMBERSHIP_CHANGE_TIMEOUT, raft.add_learner(node_id, node, true))
                .await
                .map_err(|_| format!("N{node_id} did not catch up within {MEMBERSHIP_CHANGE_TIMEOUT:?}"))?
                .map_err(|e| e.to_string())?;
        }
        let membership = raft.metrics().borrow().membership_config.membership().clone();
        if !membership.voter_ids().any(|id| id == node_id) {
            change(ChangeMembers::AddVoterIds(BTreeSet::from([node_id]))).await?;
            tracing::info!(
                node_id = format!("N{node_id}"),
                "added a voting member to the metadata cluster"
            );
        }
        Ok(())
    }

    /// On the leader: removes a member. The last voting member cannot be removed.
    pub(crate) async fn remove(
        &self,
        raft: &Raft,
        node_id: NodeId,
        storage_id: Option<u64>,
    ) -> Result<(), tonic::Status> {
        let membership = raft.metrics().borrow().membership_config.membership().clone();
        let Some(existing) = membership.get_node(&node_id).cloned() else {
            return Err(tonic::Status::not_found(format!(
                "N{node_id} is not a member of the metadata cluster"
            )));
        };
        if let Some(storage_id) = storage_id
            && existing.storage_id != storage_id
        {
            return Err(tonic::Status::failed_precondition(format!(
                "N{node_id} has storage id {}, not {storage_id}; nothing removed",
                existing.storage_id
            )));
        }
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        if voters == [node_id] {
            return Err(tonic::Status::failed_precondition(format!(
                "N{node_id} is the last member of the metadata cluster and cannot be removed"
            )));
        }
        tokio::time::timeout(
            MEMBERSHIP_CHANGE_TIMEOUT,
            raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([node_id])), false),
        )
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("the membership change did not commit in time"))?
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        tracing::info!(
            node_id = format!("N{node_id}"),
            "removed a member from the metadata cluster"
        );
        // Tell the removed member, so it stops campaigning with a membership it no longer has.
        let me = self.node_id().unwrap_or_default();
        if let Err(status) = self.tell_retired(me, node_id, &existing).await {
            tracing::warn!(
                node_id = format!("N{node_id}"),
                reason = %status.message(),
                "the removed member could not be told; it stays out of the quorum, but may start elections until it is restarted"
            );
        }
        Ok(())
    }

    /// Proposes a write through Raft and waits for its outcome, or until the leader loses
    /// its quorum (then the outcome is unknown at once rather than after the timeout).
    pub(crate) async fn write(&self, raft: &Raft, command: Command) -> Result<CommandResult, WriteFailure> {
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(self.inner.request_timeout, raft.client_write(command)) => outcome,
            silence = self.quorum_lost(raft) => {
                return Err(WriteFailure::Unknown(format!(
                    "the leader lost its quorum while the write was pending ({silence} ms without a majority); \
                     it is applied only if enough members come back"
                )));
            }
        };
        match outcome {
            Ok(Ok(response)) => Ok(response.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => Err(WriteFailure::NotLeader(
                forward.leader_id.zip(forward.leader_node).map(|(id, node)| LeaderHint {
                    node_id: id as u32,
                    address: node.address,
                }),
            )),
            Ok(Err(error)) => Err(WriteFailure::Unknown(error.to_string())),
            Err(_) => Err(WriteFailure::Unknown(format!(
                "the write was not committed within {:?}",
                self.inner.request_timeout
            ))),
        }
    }

    /// Leaves Raft after the leader removed this server; it stays on standby (also across
    /// restarts) until it is added again.
    pub(crate) async fn retire(&self) -> Result<(), MetadataServerError> {
        let _guard = self.inner.lifecycle.lock().await;
        self.inner.storage.blocking(|storage| storage.set_retired(true)).await?;
        self.inner.retired.store(true, Ordering::Relaxed);
        let raft = self.inner.raft.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(raft) = raft {
            let _ = raft.shutdown().await;
        }
        tracing::info!("removed from the metadata cluster: this server is on standby");
        Ok(())
    }

    pub async fn shutdown(&self) {
        if let Some(raft) = self.raft()
            && let Err(error) = raft.shutdown().await
        {
            tracing::warn!(%error, "metadata server Raft did not shut down cleanly");
        }
    }
}

impl MetadataServer {
    /// How long this leader has not heard from a majority, by the local clock: the silence in
    /// its latest metrics plus the age of that update (metrics stop updating while the Raft
    /// core is blocked, so the reported value alone can be far too small). `None` unless the
    /// latest metrics say this server leads.
    pub(crate) fn quorum_silence(&self) -> Option<Duration> {
        self.inner.clock.latest()?.quorum_silence(Instant::now())
    }

    /// Resolves once this leader has not heard from a majority for [`quorum_silence_limit`],
    /// with that silence in milliseconds.
    pub(crate) async fn quorum_lost(&self, raft: &Raft) -> u64 {
        let limit = Duration::from_millis(quorum_silence_limit(raft));
        loop {
            if let Some(silence) = self.quorum_silence()
                && silence > limit
            {
                return silence.as_millis() as u64;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Why a proposed write did not produce an outcome.
pub(crate) enum WriteFailure {
    /// Not applied: another server leads (if known).
    NotLeader(Option<LeaderHint>),
    /// Might or might not have been applied.
    Unknown(String),
}
