//! Raft transport between metadata servers: one unary gRPC call per Raft RPC, with the
//! openraft request and result encoded by postcard. All calls to one peer address share one
//! HTTP/2 channel ([`ChannelPool`]).
//!
//! Every message names the sender's and the receiver's storage ids, so a member whose disk
//! was wiped never answers (or votes) as its former self.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
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

/// Room left in a message for everything around the Raft payload.
const ENVELOPE_BYTES: usize = 64 * 1024;
/// Per-channel request timeout; every call also has its own, shorter deadline.
const CHANNEL_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// One lazily connecting gRPC channel per peer address, shared by all Raft replication
/// streams, votes and membership calls to that peer (a channel multiplexes calls and
/// reconnects by itself), instead of a new connection for every stream or election.
#[derive(Clone)]
pub struct ChannelPool {
    connect_timeout: Duration,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl ChannelPool {
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            channels: Default::default(),
        }
    }

    /// The channel to `address`, created on first use. Callers bound each call themselves.
    pub fn get(&self, address: &str) -> Result<Channel, restate_net::ChannelError> {
        let key = restate_net::normalize_address(address);
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(&key) {
            return Ok(channel.clone());
        }
        let channel = restate_net::channel(&key, self.connect_timeout, CHANNEL_REQUEST_TIMEOUT)?;
        channels.insert(key, channel.clone());
        Ok(channel)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.channels.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Who this server is, as stamped on every outgoing Raft message.
pub struct PeerIdentity {
    pub cluster_name: String,
    pub fingerprint: Arc<AtomicU64>,
    pub node_id: NodeId,
    pub storage_id: u64,
    /// Largest gRPC message between nodes (`networking.message-size-limit`).
    pub message_size_limit: usize,
}

impl PeerIdentity {
    pub fn cluster(&self) -> pb::ClusterIdentity {
        pb::ClusterIdentity {
            cluster_name: self.cluster_name.clone(),
            fingerprint: self.fingerprint.load(Ordering::Relaxed),
        }
    }
}

/// Hands openraft's replication and election tasks clients over the pooled channels.
pub struct NetworkFactory {
    pub identity: Arc<PeerIdentity>,
    pub pool: ChannelPool,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> Self::Network {
        PeerConnection {
            target,
            target_node: node.clone(),
            identity: self.identity.clone(),
            pool: self.pool.clone(),
        }
    }
}

pub struct PeerConnection {
    target: NodeId,
    target_node: MemberNode,
    identity: Arc<PeerIdentity>,
    pool: ChannelPool,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, MemberNode, RaftError<NodeId, E>>>;

impl PeerConnection {
    fn client(&self) -> Result<MetadataServerNetworkSvcClient<Channel>, std::io::Error> {
        let channel = self
            .pool
            .get(&self.target_node.address)
            .map_err(std::io::Error::other)?;
        let limit = self.identity.message_size_limit;
        Ok(MetadataServerNetworkSvcClient::new(channel)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit))
    }

    async fn send<Req, Resp, E>(&mut self, kind: &str, request: &Req, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = postcard::to_allocvec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send_encoded(kind, payload, option).await
    }

    async fn send_encoded<Resp, E>(&mut self, kind: &str, payload: Vec<u8>, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let message = RaftMessage {
            cluster: Some(self.identity.cluster()),
            from_node_id: self.identity.node_id as u32,
            from_storage_id: self.identity.storage_id,
            to_node_id: self.target as u32,
            to_storage_id: self.target_node.storage_id,
            kind: kind.to_owned(),
            payload,
        };
        let mut client = self.client().map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
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

/// If an append-entries payload of `entries` entries and `payload_len` bytes exceeds
/// `budget`, how many entries to send instead (fewer, at least one). A single entry always
/// goes: values are capped below the message limit when they are written.
fn fewer_entries_hint(entries: usize, payload_len: usize, budget: usize) -> Option<u64> {
    if payload_len <= budget || entries <= 1 {
        return None;
    }
    let fitting = (entries as u128 * budget as u128 / payload_len as u128) as u64;
    Some(fitting.clamp(1, entries as u64 - 1))
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        let payload = postcard::to_allocvec(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let budget = self.identity.message_size_limit.saturating_sub(ENVELOPE_BYTES);
        if let Some(entries) = fewer_entries_hint(rpc.entries.len(), payload.len(), budget) {
            // openraft retries at once with at most this many entries.
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries)));
        }
        self.send_encoded(KIND_APPEND, payload, &option).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_channel_per_peer_address() {
        let pool = ChannelPool::new(Duration::from_secs(1));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            pool.get("127.0.0.1:5122").expect("channel");
            pool.get("http://127.0.0.1:5122/").expect("channel");
            pool.get("http://127.0.0.1:5122").expect("channel");
            assert_eq!(pool.len(), 1, "the same address in three spellings shares one channel");
            pool.get("127.0.0.1:5123").expect("channel");
            assert_eq!(pool.len(), 2);
        });
    }

    #[test]
    fn oversized_append_batches_are_split() {
        assert_eq!(fewer_entries_hint(10, 100, 100), None);
        assert_eq!(fewer_entries_hint(1, 1_000, 100), None, "a single entry always goes");
        assert_eq!(fewer_entries_hint(10, 1_000, 100), Some(1));
        assert_eq!(fewer_entries_hint(10, 200, 100), Some(5));
        assert_eq!(fewer_entries_hint(3, 101, 100), Some(2));
    }
}
