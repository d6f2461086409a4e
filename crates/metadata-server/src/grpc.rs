//! The gRPC services of a metadata server: the store API (`MetadataServerSvc`) and the Raft
//! transport (`MetadataServerNetworkSvc`).

use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, RaftError};
use restate_metadata_store::proto_conv::{self, unavailable};
use restate_metadata_store::{AWAITING_PROVISIONING, KNOWN_LEADER_HEADER, LeaderHint};
use restate_proto::metadata as pb;
use restate_proto::metadata_server::metadata_server_network_svc_server::{
    MetadataServerNetworkSvc, MetadataServerNetworkSvcServer,
};
use restate_proto::metadata_server::metadata_server_svc_server::{MetadataServerSvc, MetadataServerSvcServer};
use restate_proto::metadata_server::{
    AddNodeRequest, AddNodeResponse, JoinClusterRequest, JoinClusterResponse, Member, ProvisionRequest,
    ProvisionResponse, RaftMessage, RemoveNodeRequest, RemoveNodeResponse, RetireRequest, RetireResponse,
    StatusRequest, StatusResponse,
};
use restate_types::metadata::{NodeConfig, NodesConfiguration, Version};
use restate_types::{ClusterFingerprint, GenerationalNodeId, PlainNodeId};
use serde::Serialize;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::lease::lease_holds;
use crate::network::{KIND_APPEND, KIND_SNAPSHOT, KIND_VOTE};
use crate::raft_types::{Command, CommandResult, MemberNode, NodeId, Raft};
use crate::server::{CALLER_HEADER, MetadataServer, ServerStatus, WriteFailure};
use crate::timing::quorum_silence_limit;

impl MetadataServer {
    /// The store API service, for the fabric router. Messages are bounded by
    /// `networking.message-size-limit` (values are capped at 95 % of it).
    pub fn store_service(&self) -> MetadataServerSvcServer<MetadataServer> {
        let limit = self.inner().message_size_limit;
        MetadataServerSvcServer::new(self.clone())
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    /// The Raft transport service, for the fabric router. Messages are bounded by
    /// `networking.message-size-limit`; senders split larger append batches.
    pub fn network_service(&self) -> MetadataServerNetworkSvcServer<MetadataServer> {
        let limit = self.inner().message_size_limit;
        MetadataServerNetworkSvcServer::new(self.clone())
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    fn check_identity(&self, cluster: Option<&pb::ClusterIdentity>) -> Result<(), Status> {
        let Some(cluster) = cluster else {
            return Err(Status::invalid_argument("the request names no cluster"));
        };
        let inner = self.inner();
        if cluster.cluster_name != inner.cluster_name {
            return Err(Status::permission_denied(format!(
                "this metadata server belongs to cluster `{}`, but the request is for cluster `{}`",
                inner.cluster_name, cluster.cluster_name
            )));
        }
        let mine = inner.shared.fingerprint();
        if cluster.fingerprint != 0 && mine != 0 && cluster.fingerprint != mine {
            return Err(Status::permission_denied(format!(
                "cluster fingerprint mismatch: the request is for cluster `{}` with fingerprint {}, but this \
                 metadata server's cluster `{}` has fingerprint {}; the caller belongs to another cluster of the same name",
                cluster.cluster_name,
                ClusterFingerprint(cluster.fingerprint),
                inner.cluster_name,
                ClusterFingerprint(mine)
            )));
        }
        Ok(())
    }

    fn not_serving(&self) -> Status {
        match self.status() {
            ServerStatus::AwaitingProvisioning => proto_conv::awaiting_provisioning(format!(
                "this metadata server is {AWAITING_PROVISIONING}: provision the cluster (auto-provision or `restatectl provision`)"
            )),
            ServerStatus::Standby => unavailable("this metadata server is on standby (not a member)"),
            status => unavailable(format!("this metadata server is {}", status.as_str().to_lowercase())),
        }
    }

    /// The Raft handle if this server leads and still hears from a majority; otherwise the
    /// answer that sends the caller elsewhere.
    fn leader(&self) -> Result<Raft, Status> {
        let raft = self.raft().ok_or_else(|| self.not_serving())?;
        let me = self.node_id().ok_or_else(|| self.not_serving())?;
        let metrics = raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        match metrics.current_leader {
            Some(leader) if leader == me => {
                let quorum_timeout = Duration::from_millis(quorum_silence_limit(&raft));
                if let Some(silence) = self.quorum_silence()
                    && silence > quorum_timeout
                {
                    let voters: Vec<String> = membership.voter_ids().map(|id| format!("N{id}")).collect();
                    return Err(unavailable(format!(
                        "the metadata leader N{me} has not heard from a majority of its members [{}] for {} ms \
                         (or its Raft core is stalled): quorum is lost; bring members back",
                        voters.join(", "),
                        silence.as_millis()
                    )));
                }
                Ok(raft)
            }
            Some(leader) => Err(redirect(
                leader,
                membership.get_node(&leader).map(|n| n.address.clone()),
                "this metadata server is a follower",
            )),
            None => {
                let voters: Vec<String> = membership.voter_ids().map(|id| format!("N{id}")).collect();
                Err(unavailable(format!(
                    "no metadata leader is elected: a majority of the members [{}] must be reachable",
                    voters.join(", ")
                )))
            }
        }
    }

    /// Waits until this leader's state reflects every write committed before the call.
    async fn read_barrier(&self, raft: &Raft) -> Result<(), Status> {
        if self.holds_read_lease(raft) {
            return Ok(());
        }
        let timeout = self.inner().request_timeout;
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(timeout, raft.ensure_linearizable()) => outcome,
            silence = self.quorum_lost(raft) => {
                return Err(unavailable(format!(
                    "the metadata leader lost its quorum ({silence} ms without a majority); the read cannot be confirmed"
                )));
            }
        };
        match outcome {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)))) => Err(redirect(
                forward.leader_id.unwrap_or_default(),
                forward.leader_node.map(|n| n.address),
                "leadership moved",
            )),
            Ok(Err(error)) => Err(unavailable(format!("read not confirmed by a majority: {error}"))),
            Err(_) => Err(unavailable(format!(
                "read not confirmed by a majority within {timeout:?}"
            ))),
        }
    }

    async fn propose(&self, command: Command) -> Result<(), Status> {
        let raft = self.leader()?;
        match self.write(&raft, command).await {
            Ok(CommandResult::Applied | CommandResult::NoCommand) => Ok(()),
            Ok(CommandResult::PreconditionFailed { actual, reason }) => {
                let mut status = Status::failed_precondition(reason);
                if let Some(version) = actual
                    && let Ok(value) = MetadataValue::try_from(version.0.to_string())
                {
                    status.metadata_mut().insert(proto_conv::ACTUAL_VERSION_HEADER, value);
                }
                Err(status)
            }
            Err(WriteFailure::NotLeader(Some(hint))) => Err(redirect(
                u64::from(hint.node_id),
                Some(hint.address),
                "leadership moved",
            )),
            Err(WriteFailure::NotLeader(None)) => Err(unavailable("leadership moved and no new leader is known yet")),
            Err(WriteFailure::Unknown(reason)) => Err(proto_conv::write_error_to_status(
                restate_metadata_store::WriteError::UnknownOutcome(reason),
            )),
        }
    }

    pub fn status_response(&self) -> StatusResponse {
        let inner = self.inner();
        let mut response = StatusResponse {
            status: self.status().as_str().to_owned(),
            node_id: self.node_id().map(|id| id as u32).or(self.assigned_node_id()),
            storage_id: inner.storage_id,
            cluster_name: inner.cluster_name.clone(),
            fingerprint: inner.shared.fingerprint(),
            committed_index: self.committed_index(),
            snapshot_index: inner.shared.snapshot_index(),
            ..Default::default()
        };
        if let Some(raft) = self.raft() {
            let metrics = raft.metrics().borrow().clone();
            let membership = metrics.membership_config.membership();
            let voters: Vec<NodeId> = membership.voter_ids().collect();
            response.term = metrics.current_term;
            response.applied_index = metrics.last_applied.map_or(0, |id| id.index);
            response.last_log_index = metrics.last_log_index.unwrap_or(0);
            response.configuration_version = metrics.membership_config.log_id().map_or(0, |id| id.index);
            response.leader_id = metrics.current_leader.map(|id| id as u32);
            response.leader_address = metrics
                .current_leader
                .and_then(|id| membership.get_node(&id))
                .map(|n| n.address.clone())
                .unwrap_or_default();
            response.members = membership
                .nodes()
                .map(|(id, node)| Member {
                    node_id: *id as u32,
                    address: node.address.clone(),
                    storage_id: node.storage_id,
                    voter: voters.contains(id),
                })
                .collect();
        }
        response
    }
}

impl MetadataServer {
    /// Whether this leader may answer a read from its applied state without a read-index round.
    ///
    /// Followers do not vote for a new leader before the leader lease (the maximum election
    /// timeout) has passed since they last heard from this leader, and do not campaign before
    /// the lease plus their own election timeout. openraft times a majority's acknowledgement
    /// from when the acknowledged request was sent, so a leader that heard from a majority
    /// within half the lease is still the only leader. Its silence is judged by the local clock
    /// ([`lease_holds`]): metrics that stopped updating (a blocked Raft core) end the lease.
    /// Once it has applied an entry of its own term it has applied everything its predecessors
    /// committed, and it applies its own writes before acknowledging them, so its applied
    /// state holds every acknowledged write: the read is linearizable.
    fn holds_read_lease(&self, raft: &Raft) -> bool {
        let config = raft.config();
        let lease = Duration::from_millis(config.election_timeout_max / 2);
        // A running core publishes metrics at least every tick (1.5 heartbeat intervals).
        let max_age = Duration::from_millis(config.heartbeat_interval * 2);
        lease_holds(self.inner().clock.latest().as_ref(), Instant::now(), lease, max_age)
    }

    /// Checks the node that sent a `JoinCluster` or `Retire` against the nodes configuration
    /// stored in the metadata: its id must be registered there, and the generation it names
    /// must not be older than the registered one (an outdated incarnation of a node is
    /// refused). `claimed` is the node the request body speaks for, if it is the caller.
    ///
    /// `exact_generation` (JoinCluster, answered by the leader, whose state holds the
    /// caller's registration) also refuses a generation newer than the registered one — with
    /// `UNAVAILABLE`, as the registration may not be applied here yet.
    fn check_caller(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        claimed: Option<u32>,
        exact_generation: bool,
    ) -> Result<(CallerNode, NodeConfig), Status> {
        let caller = match metadata.get(CALLER_HEADER).map(|v| v.to_str()) {
            Some(Ok(value)) => Some(parse_caller(value)?),
            Some(Err(_)) => {
                return Err(Status::invalid_argument(format!(
                    "the `{CALLER_HEADER}` header is not text"
                )));
            }
            None => None,
        };
        let caller = match (caller, claimed) {
            (Some(caller), Some(claimed)) if caller.id.0 != claimed => {
                return Err(Status::permission_denied(format!(
                    "the request speaks for N{claimed} but its caller is {}",
                    caller.id
                )));
            }
            (Some(caller), _) => caller,
            (None, Some(claimed)) => CallerNode {
                id: PlainNodeId(claimed),
                generation: None,
            },
            (None, None) => {
                return Err(Status::permission_denied(format!(
                    "the request does not name its calling node (`{CALLER_HEADER}`)"
                )));
            }
        };
        let Some(nodes) = self.nodes_config() else {
            return Err(Status::failed_precondition(format!(
                "this metadata server holds no nodes configuration yet, so it cannot check the caller {caller}"
            )));
        };
        let registered = check_caller_against(&nodes, caller, exact_generation)?;
        Ok((caller, registered.clone()))
    }
}

/// A calling node as it names itself; the generation is absent when the caller does not know
/// it (e.g. a node that did not report it to its metadata server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CallerNode {
    id: PlainNodeId,
    generation: Option<u32>,
}

impl std::fmt::Display for CallerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.generation {
            Some(generation) => write!(f, "{}", self.id.with_generation(generation)),
            None => write!(f, "{}", self.id),
        }
    }
}

fn parse_caller(value: &str) -> Result<CallerNode, Status> {
    let invalid = |reason: String| Status::invalid_argument(format!("invalid `{CALLER_HEADER}` header: {reason}"));
    if value.contains(':') {
        let id: GenerationalNodeId = value.parse().map_err(invalid)?;
        Ok(CallerNode {
            id: id.id,
            generation: Some(id.generation),
        })
    } else {
        Ok(CallerNode {
            id: value.parse().map_err(invalid)?,
            generation: None,
        })
    }
}

/// The caller's node id must be in `nodes`, and its generation (if named) must not be older
/// than the registered one — nor newer, with `exact_generation`.
fn check_caller_against(
    nodes: &NodesConfiguration,
    caller: CallerNode,
    exact_generation: bool,
) -> Result<&NodeConfig, Status> {
    let Some(registered) = nodes.nodes.get(&caller.id) else {
        return Err(Status::permission_denied(format!(
            "{caller} is not a node of cluster `{}` (it is not in the nodes configuration); request refused",
            nodes.cluster_name
        )));
    };
    match caller.generation {
        Some(generation) if generation < registered.generation => Err(Status::permission_denied(format!(
            "{caller} is an outdated incarnation: the nodes configuration has {}; request refused",
            registered.generational_id()
        ))),
        Some(generation) if exact_generation && generation > registered.generation => Err(unavailable(format!(
            "{caller} is newer than {} in this server's nodes configuration; retry once it is applied",
            registered.generational_id()
        ))),
        _ => Ok(registered),
    }
}

fn redirect(leader: NodeId, address: Option<String>, why: &str) -> Status {
    let Some(address) = address else {
        return unavailable(format!("{why}; the leader N{leader} has no known address"));
    };
    let mut status = unavailable(format!("{why}; the leader is N{leader} at {address}"));
    let hint = LeaderHint {
        node_id: leader as u32,
        address,
    };
    if let Ok(json) = serde_json::to_string(&hint)
        && let Ok(value) = MetadataValue::try_from(json)
    {
        status.metadata_mut().insert(KNOWN_LEADER_HEADER, value);
    }
    status
}

#[tonic::async_trait]
impl MetadataServerSvc for MetadataServer {
    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let request = request.into_inner();
        self.check_identity(request.cluster.as_ref())?;
        let raft = self.leader()?;
        self.read_barrier(&raft).await?;
        let (value, write_id) = {
            let state = self.inner().shared.read();
            (
                state.entries.get(&request.key).cloned(),
                state.writers.get(&request.key).copied().unwrap_or(0),
            )
        };
        Ok(Response::new(pb::GetResponse {
            value: value.map(proto_conv::value_to_proto),
            write_id,
        }))
    }

    async fn get_version(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetVersionResponse>, Status> {
        let request = request.into_inner();
        self.check_identity(request.cluster.as_ref())?;
        let raft = self.leader()?;
        self.read_barrier(&raft).await?;
        let version = self
            .inner()
            .shared
            .read()
            .entries
            .get(&request.key)
            .map(|v| v.version.0);
        Ok(Response::new(pb::GetVersionResponse { version }))
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let request = request.into_inner();
        self.check_identity(request.cluster.as_ref())?;
        let value = proto_conv::value_from_proto(request.value)?;
        let limit = self.inner().max_value_size;
        if value.value.len() > limit {
            return Err(proto_conv::write_error_to_status(
                restate_metadata_store::WriteError::TooLarge {
                    key: request.key,
                    size: value.value.len(),
                    limit,
                },
            ));
        }
        let precondition = proto_conv::precondition_from_proto(request.precondition)?;
        self.propose(Command::Put {
            key: request.key,
            value,
            precondition,
            write_id: request.write_id,
        })
        .await?;
        Ok(Response::new(pb::PutResponse {}))
    }

    async fn delete(&self, request: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        let request = request.into_inner();
        self.check_identity(request.cluster.as_ref())?;
        let precondition = proto_conv::precondition_from_proto(request.precondition)?;
        self.propose(Command::Delete {
            key: request.key,
            precondition,
        })
        .await?;
        Ok(Response::new(pb::DeleteResponse {}))
    }

    async fn list_keys(&self, request: Request<pb::ListKeysRequest>) -> Result<Response<pb::ListKeysResponse>, Status> {
        let request = request.into_inner();
        self.check_identity(request.cluster.as_ref())?;
        let raft = self.leader()?;
        self.read_barrier(&raft).await?;
        let keys = self.inner().shared.read().entries.keys().cloned().collect();
        Ok(Response::new(pb::ListKeysResponse { keys }))
    }

    async fn provision(&self, request: Request<ProvisionRequest>) -> Result<Response<ProvisionResponse>, Status> {
        let request = request.into_inner();
        self.check_identity(request.cluster.as_ref())?;
        if request.node_id == 0 {
            return Err(Status::invalid_argument("node id 0 is reserved"));
        }
        let version = Version(request.version.unwrap_or(1).max(1));
        let newly_provisioned = MetadataServer::provision(self, request.node_id, request.nodes_configuration, version)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(ProvisionResponse { newly_provisioned }))
    }

    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(self.status_response()))
    }

    async fn add_node(&self, _request: Request<AddNodeRequest>) -> Result<Response<AddNodeResponse>, Status> {
        if self.status() == ServerStatus::Member {
            return Ok(Response::new(AddNodeResponse {}));
        }
        let Some(node_id) = self.assigned_node_id() else {
            return Err(Status::failed_precondition(
                "this node has not joined a cluster yet, so it has no node id to join the metadata cluster with",
            ));
        };
        let timeout = Duration::from_secs(60);
        match tokio::time::timeout(timeout, self.join(node_id)).await {
            Ok(Ok(())) => Ok(Response::new(AddNodeResponse {})),
            Ok(Err(error)) => Err(Status::failed_precondition(error.to_string())),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "N{node_id} did not become a member within {timeout:?}; it keeps trying"
            ))),
        }
    }

    async fn remove_node(&self, request: Request<RemoveNodeRequest>) -> Result<Response<RemoveNodeResponse>, Status> {
        let request = request.into_inner();
        let raft = self.leader()?;
        self.remove(&raft, NodeId::from(request.node_id), request.storage_id)
            .await?;
        Ok(Response::new(RemoveNodeResponse {}))
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    postcard::to_allocvec(value).map_err(|e| Status::internal(format!("cannot encode a Raft answer: {e}")))
}

fn decode<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Status> {
    postcard::from_bytes(bytes).map_err(|e| Status::invalid_argument(format!("cannot decode a Raft message: {e}")))
}

#[tonic::async_trait]
impl MetadataServerNetworkSvc for MetadataServer {
    async fn raft(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let message = request.into_inner();
        self.check_identity(message.cluster.as_ref())?;
        let raft = self.raft().ok_or_else(|| self.not_serving())?;
        let me = self.node_id().unwrap_or_default();
        if u64::from(message.to_node_id) != me {
            return Err(unavailable(format!(
                "this metadata server is N{me}, not N{}",
                message.to_node_id
            )));
        }
        if message.to_storage_id != self.storage_id() {
            return Err(unavailable(format!(
                "N{me} has storage {} but the sender expects storage {}: this node's data was replaced, so it does \
                 not answer as its former self until it is re-admitted",
                self.storage_id(),
                message.to_storage_id
            )));
        }
        let membership = raft.metrics().borrow().membership_config.membership().clone();
        if let Some(known) = membership.get_node(&u64::from(message.from_node_id))
            && known.storage_id != message.from_storage_id
        {
            return Err(unavailable(format!(
                "N{} speaks with storage {} but is a member with storage {}; ignoring it until it is re-admitted",
                message.from_node_id, message.from_storage_id, known.storage_id
            )));
        }
        let payload = match message.kind.as_str() {
            KIND_APPEND => {
                let answer = raft.append_entries(decode(&message.payload)?).await;
                if answer.as_ref().is_ok_and(|answer| answer.is_success()) {
                    self.heard_append_from(u64::from(message.from_node_id));
                }
                encode(&answer)?
            }
            KIND_VOTE => encode(&raft.vote(decode(&message.payload)?).await)?,
            KIND_SNAPSHOT => encode(&raft.install_snapshot(decode(&message.payload)?).await)?,
            other => return Err(Status::invalid_argument(format!("unknown Raft message kind `{other}`"))),
        };
        Ok(Response::new(RaftMessage {
            cluster: Some(self.identity()),
            from_node_id: me as u32,
            from_storage_id: self.storage_id(),
            to_node_id: message.from_node_id,
            to_storage_id: message.from_storage_id,
            kind: message.kind,
            payload,
        }))
    }

    async fn retire(&self, request: Request<RetireRequest>) -> Result<Response<RetireResponse>, Status> {
        let caller_metadata = request.metadata().clone();
        let request = request.into_inner();
        self.check_identity(request.cluster.as_ref())?;
        if self.node_id() != Some(NodeId::from(request.node_id)) || request.storage_id != self.storage_id() {
            return Err(Status::failed_precondition(format!(
                "this metadata server is not N{} with storage {}",
                request.node_id, request.storage_id
            )));
        }
        // This server's nodes configuration may lag the leader's: a newer generation than the
        // one registered here is accepted.
        let (caller, _) = self.check_caller(&caller_metadata, None, false)?;
        tracing::info!(%caller, "told by the metadata leader that this server was removed");
        MetadataServer::retire(self)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(RetireResponse {}))
    }

    async fn join_cluster(
        &self,
        request: Request<JoinClusterRequest>,
    ) -> Result<Response<JoinClusterResponse>, Status> {
        let caller_metadata = request.metadata().clone();
        let request = request.into_inner();
        self.check_identity(request.cluster.as_ref())?;
        if request.node_id == 0 {
            return Err(Status::invalid_argument("node id 0 is reserved"));
        }
        let raft = self.leader()?;
        let (caller, registered) = self.check_caller(&caller_metadata, Some(request.node_id), true)?;
        let node = MemberNode {
            address: restate_net::normalize_address(&request.address),
            storage_id: request.storage_id,
        };
        // The member's address comes from the caller: it must be the one the node registered.
        if restate_net::normalize_address(&registered.address) != node.address {
            return Err(Status::permission_denied(format!(
                "{caller} asks to join from {}, but the nodes configuration has it at {}; request refused",
                node.address, registered.address
            )));
        }
        self.admit(&raft, NodeId::from(request.node_id), node)
            .await
            .map_err(|reason| unavailable(format!("cannot add N{}: {reason}", request.node_id)))?;
        Ok(Response::new(JoinClusterResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use restate_types::ClusterFingerprint;
    use tonic::Code;

    use super::*;

    fn nodes() -> NodesConfiguration {
        let mut nodes = NodesConfiguration::new("test", ClusterFingerprint(7));
        nodes.nodes.insert(
            PlainNodeId(2),
            NodeConfig {
                id: PlainNodeId(2),
                generation: 5,
                name: "n2".into(),
                address: "http://127.0.0.1:5122/".into(),
                roles: vec![],
                location: None,
                log_server_state: Default::default(),
                binary_version: String::new(),
            },
        );
        nodes
    }

    fn caller(id: u32, generation: Option<u32>) -> CallerNode {
        CallerNode {
            id: PlainNodeId(id),
            generation,
        }
    }

    #[test]
    fn callers_are_checked_against_the_nodes_configuration() {
        let nodes = nodes();
        assert!(check_caller_against(&nodes, caller(2, Some(5)), true).is_ok());
        assert!(check_caller_against(&nodes, caller(2, None), true).is_ok());
        let unknown = check_caller_against(&nodes, caller(3, Some(1)), true).unwrap_err();
        assert_eq!(unknown.code(), Code::PermissionDenied);
        assert!(
            unknown.message().contains("N3:1 is not a node"),
            "{}",
            unknown.message()
        );
        let outdated = check_caller_against(&nodes, caller(2, Some(4)), false).unwrap_err();
        assert_eq!(outdated.code(), Code::PermissionDenied);
        assert!(outdated.message().contains("outdated"), "{}", outdated.message());
        // A generation this server has not applied yet: retryable for a join, accepted for a
        // retire (the removed member's configuration may lag the leader's).
        let ahead = check_caller_against(&nodes, caller(2, Some(6)), true).unwrap_err();
        assert_eq!(ahead.code(), Code::Unavailable);
        assert!(check_caller_against(&nodes, caller(2, Some(6)), false).is_ok());
    }

    #[test]
    fn caller_headers_parse() {
        assert_eq!(parse_caller("N2:5").unwrap(), caller(2, Some(5)));
        assert_eq!(parse_caller("N2").unwrap(), caller(2, None));
        assert_eq!(parse_caller("bogus").unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(parse_caller("N2:x").unwrap_err().code(), Code::InvalidArgument);
    }
}
