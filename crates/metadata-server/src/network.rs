//! Raft transport between metadata servers: one unary gRPC call per Raft RPC, with the
//! openraft request and result encoded by postcard.
//!
//! Every message names the sender's and the receiver's storage ids, so a member whose disk
//! was wiped never answers (or votes) as its former self.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use restate_proto::metadata as pb;
use restate_proto::metadata_server::RaftMessage;
use restate_proto::metadata_server::metadata_server_network_svc_client::MetadataServerNetworkSvcClient;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use crate::raft_types::{MemberNode, NodeId, TypeConfig};

pub const KIND_APPEND: &str = "append-entries";
pub const KIND_VOTE: &str = "vote";
pub const KIND_SNAPSHOT: &str = "install-snapshot";

/// Who this server is, as stamped on every outgoing Raft message.
pub struct PeerIdentity {
    pub cluster_name: String,
    pub fingerprint: Arc<AtomicU64>,
    pub node_id: NodeId,
    pub storage_id: u64,
    pub connect_timeout: Duration,
}

impl PeerIdentity {
    pub fn cluster(&self) -> pb::ClusterIdentity {
        pb::ClusterIdentity {
            cluster_name: self.cluster_name.clone(),
            fingerprint: self.fingerprint.load(Ordering::Relaxed),
        }
    }
}

/// Creates one connection per peer for openraft's replication tasks.
pub struct NetworkFactory {
    pub identity: Arc<PeerIdentity>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> Self::Network {
        PeerConnection {
            target,
            target_node: node.clone(),
            identity: self.identity.clone(),
            client: None,
        }
    }
}

pub struct PeerConnection {
    target: NodeId,
    target_node: MemberNode,
    identity: Arc<PeerIdentity>,
    client: Option<MetadataServerNetworkSvcClient<Channel>>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, MemberNode, RaftError<NodeId, E>>>;

impl PeerConnection {
    fn client(&mut self, timeout: Duration) -> Result<MetadataServerNetworkSvcClient<Channel>, std::io::Error> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let channel = restate_net::channel(&self.target_node.address, self.identity.connect_timeout, timeout)
            .map_err(std::io::Error::other)?;
        let client = MetadataServerNetworkSvcClient::new(channel).max_decoding_message_size(usize::MAX);
        self.client = Some(client.clone());
        Ok(client)
    }

    async fn send<Req, Resp, E>(&mut self, kind: &str, request: &Req, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = postcard::to_allocvec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let message = RaftMessage {
            cluster: Some(self.identity.cluster()),
            from_node_id: self.identity.node_id as u32,
            from_storage_id: self.identity.storage_id,
            to_node_id: self.target as u32,
            to_storage_id: self.target_node.storage_id,
            kind: kind.to_owned(),
            payload,
        };
        let mut client = self
            .client(option.hard_ttl())
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let response = match tokio::time::timeout(option.hard_ttl(), client.raft(message)).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                let error = std::io::Error::other(format!("{}: {}", self.target_node.address, status.message()));
                return Err(if restate_metadata_store::proto_conv::certainly_not_applied(&status) {
                    RPCError::Unreachable(Unreachable::new(&error))
                } else {
                    RPCError::Network(NetworkError::new(&error))
                });
            }
            Err(_) => {
                let error = std::io::Error::new(std::io::ErrorKind::TimedOut, "raft rpc timed out");
                return Err(RPCError::Network(NetworkError::new(&error)));
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            postcard::from_bytes(&response.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|error| {
            RPCError::RemoteError(RemoteError::new_with_node(self.target, self.target_node.clone(), error))
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.send(KIND_APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.send(KIND_SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.send(KIND_VOTE, &rpc, &option).await
    }

    fn backoff(&self) -> Backoff {
        // A restarted peer is picked up again within a fifth of a second.
        Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
