//! Lifecycle of a metadata server: awaiting provisioning → (provisioned | joining) → member.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::error::{ClientWriteError, RaftError};
use restate_config::Configuration;
use restate_metadata_store::LeaderHint;
use restate_proto::metadata as pb;
use restate_proto::metadata_server::metadata_server_network_svc_client::MetadataServerNetworkSvcClient;
use restate_proto::metadata_server::{JoinClusterRequest, RetireRequest};
use restate_types::metadata::{NODES_CONFIG_KEY, Precondition, Version, VersionedValue};

use crate::network::{NetworkFactory, PeerIdentity};
use crate::raft_types::{Command, CommandResult, MemberNode, NodeId, Raft};
use crate::state_machine::{SharedState, StateMachine};
use crate::storage::{Storage, StorageOpenError};

/// Directory of the store inside the node directory.
pub const STORAGE_DIR: &str = "replicated-metadata-server";
/// Longest wait for a membership change to commit.
const MEMBERSHIP_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

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
    connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) max_value_size: usize,
    auto_join: bool,
    storage: Storage,
    pub(crate) storage_id: u64,
    pub(crate) shared: SharedState,
    committed_index: std::sync::Mutex<Option<Arc<AtomicU64>>>,
    /// Removed from the metadata cluster: no Raft until added again.
    retired: std::sync::atomic::AtomicBool,
    raft: RwLock<Option<Raft>>,
    node_id: OnceLock<NodeId>,
    /// The node's plain id once it has joined the cluster (0 = not yet).
    assigned_node_id: AtomicU32,
    joining: std::sync::atomic::AtomicBool,
    lifecycle: tokio::sync::Mutex<()>,
}

impl MetadataServer {
    /// Opens (or creates) the store under `<node-dir>/replicated-metadata-server/`.
    pub fn open(config: &Configuration) -> Result<Self, MetadataServerError> {
        let path = config.node_dir().join(STORAGE_DIR);
        let (storage, marker) = Storage::open(&path, config.node_name())?;
        let options = &config.metadata_server;
        let tick = options.raft_tick_interval.as_millis().max(1) as u64;
        let election_min = tick * u64::from(options.raft_election_tick.max(2));
        let raft_config = openraft::Config {
            cluster_name: config.cluster_name.clone(),
            heartbeat_interval: tick * u64::from(options.raft_heartbeat_tick.max(1)),
            election_timeout_min: election_min,
            election_timeout_max: election_min * 2,
            install_snapshot_timeout: 10_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(options.log_trim_threshold.max(1)),
            // Entries kept behind a snapshot for followers that lag slightly; a follower further
            // behind receives the snapshot.
            max_in_snapshot_log_to_keep: options.log_trim_threshold / 4,
            purge_batch_size: 256,
            ..Default::default()
        }
        .validate()
        .map_err(|e| MetadataServerError::Refused(format!("invalid [metadata-server] timing: {e}")))?;
        let limit = config.networking.message_size_limit.0 as usize;
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
                connect_timeout: config.networking.connect_timeout,
                request_timeout: config.metadata_client.request_timeout,
                max_value_size: (limit / 100 * 95).min(restate_metadata_store::REPLICATED_MAX_VALUE_SIZE),
                auto_join: options.auto_join,
                storage,
                storage_id: marker.created_at_millis,
                shared: SharedState::default(),
                committed_index: std::sync::Mutex::new(None),
                retired: Default::default(),
                raft: RwLock::new(None),
                node_id: OnceLock::new(),
                assigned_node_id: AtomicU32::new(0),
                joining: Default::default(),
                lifecycle: tokio::sync::Mutex::new(()),
            }),
        };
        Ok(server)
    }

    /// Resumes Raft if this server was a member before the restart.
    pub async fn start(&self) -> Result<(), MetadataServerError> {
        let _guard = self.inner.lifecycle.lock().await;
        if self.inner.storage.retired()? {
            self.inner.retired.store(true, Ordering::Relaxed);
            tracing::info!(
                "this metadata server was removed from the metadata cluster and stays on standby; \
                 `restatectl metadata-server add-node` adds it again"
            );
        } else if let Some(node_id) = self.inner.storage.node_id()? {
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

    /// Records the plain id the node got when it joined the cluster (used by `AddNode`).
    pub fn set_assigned_node_id(&self, node_id: u32) {
        self.inner.assigned_node_id.store(node_id, Ordering::Relaxed);
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
        let log_store = inner.storage.log_store()?;
        *inner.committed_index.lock().unwrap_or_else(|p| p.into_inner()) = Some(log_store.committed_index());
        let state_machine = StateMachine::open(inner.storage.clone(), inner.shared.clone())?;
        let network = NetworkFactory {
            identity: Arc::new(PeerIdentity {
                cluster_name: inner.cluster_name.clone(),
                fingerprint: inner.shared.fingerprint_handle(),
                node_id,
                storage_id: inner.storage_id,
                connect_timeout: inner.connect_timeout,
            }),
        };
        let raft = Raft::new(node_id, inner.raft_config.clone(), network, log_store, state_machine)
            .await
            .map_err(|e| MetadataServerError::Raft(format!("cannot start Raft: {e}")))?;
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
        match (self.node_id(), self.inner.storage.node_id()?) {
            (Some(existing), _) | (None, Some(existing)) if existing != node_id => {
                return Err(MetadataServerError::Refused(format!(
                    "this metadata server is already N{existing}; it cannot be provisioned as N{node_id}"
                )));
            }
            _ => {}
        }
        self.inner.storage.set_node_id(node_id)?;
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
            match self.node_id().or(self.inner.storage.node_id()?) {
                Some(existing) if existing != node_id => {
                    return Err(MetadataServerError::Refused(format!(
                        "this metadata server's storage belongs to N{existing}, but the node now has id N{node_id}; \
                         remove {} to start it afresh",
                        self.inner.storage.path.display()
                    )));
                }
                _ => {}
            }
            self.inner.storage.set_node_id(node_id)?;
            if self.inner.retired.swap(false, Ordering::Relaxed) || self.inner.storage.retired()? {
                self.inner.storage.set_retired(false)?;
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

    async fn tell_retired(&self, node_id: NodeId, member: &MemberNode) -> Result<(), tonic::Status> {
        let timeout = Duration::from_secs(2);
        let channel = restate_net::channel(&member.address, self.inner.connect_timeout.min(timeout), timeout)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        MetadataServerNetworkSvcClient::new(channel)
            .retire(RetireRequest {
                cluster: Some(self.identity()),
                node_id: node_id as u32,
                storage_id: member.storage_id,
            })
            .await
            .map(|_| ())
    }

    async fn ask_to_join(&self, target: &str, node_id: NodeId) -> Result<(), tonic::Status> {
        let channel = restate_net::channel(target, self.inner.connect_timeout, MEMBERSHIP_CHANGE_TIMEOUT * 2)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let mut client = MetadataServerNetworkSvcClient::new(channel);
        client
            .join_cluster(JoinClusterRequest {
                cluster: Some(self.identity()),
                node_id: node_id as u32,
                storage_id: self.inner.storage_id,
                address: self.inner.advertised_address.clone(),
            })
            .await
            .map(|_| ())
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
        if let Err(status) = self.tell_retired(node_id, &existing).await {
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
            silence = quorum_lost(raft) => {
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
        self.inner.storage.set_retired(true)?;
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

/// How long a leader may go without acknowledgements from a majority before it reports the
/// quorum lost: long enough for a large entry in flight, short enough to fail fast.
pub(crate) fn quorum_silence_limit(raft: &Raft) -> u64 {
    (raft.config().election_timeout_max * 4).max(2000)
}

/// Resolves once this leader has not heard from a majority for [`quorum_silence_limit`], with
/// that silence in milliseconds.
pub(crate) async fn quorum_lost(raft: &Raft) -> u64 {
    let limit = quorum_silence_limit(raft);
    loop {
        let silence = raft.metrics().borrow().millis_since_quorum_ack;
        if let Some(silence) = silence
            && silence > limit
        {
            return silence;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Why a proposed write did not produce an outcome.
pub(crate) enum WriteFailure {
    /// Not applied: another server leads (if known).
    NotLeader(Option<LeaderHint>),
    /// Might or might not have been applied.
    Unknown(String),
}
