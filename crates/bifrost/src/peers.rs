//! Clients for the other nodes Bifrost talks to: log-servers (behind [`LogServerRpc`], so
//! tests can put in-process log-servers with injected faults in their place) and remote
//! sequencers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use restate_proto::bifrost::bifrost_svc_client::BifrostSvcClient;
use restate_proto::log_server as pb;
use restate_proto::log_server::log_server_svc_client::LogServerSvcClient;
use restate_types::PlainNodeId;
use tonic::Status;
use tonic::transport::Channel;

use crate::BifrostError;

/// The calls Bifrost makes to a log-server. The gRPC implementation talks to the node's
/// fabric port; the unit tests use in-process log-servers behind a fault-injecting layer.
#[tonic::async_trait]
pub(crate) trait LogServerRpc: Send + Sync + 'static {
    async fn store(
        &self,
        node: PlainNodeId,
        address: &str,
        request: pb::StoreRequest,
    ) -> Result<pb::StoreResponse, Status>;
    async fn seal(&self, node: PlainNodeId, address: &str, request: pb::SealRequest) -> Result<pb::LogletInfo, Status>;
    async fn get_records(
        &self,
        node: PlainNodeId,
        address: &str,
        request: pb::GetRecordsRequest,
    ) -> Result<pb::GetRecordsResponse, Status>;
    async fn get_loglet_info(
        &self,
        node: PlainNodeId,
        address: &str,
        request: pb::GetLogletInfoRequest,
    ) -> Result<pb::LogletInfo, Status>;
    async fn trim(&self, node: PlainNodeId, address: &str, request: pb::TrimRequest) -> Result<pb::LogletInfo, Status>;
}

/// Channels to other nodes, one per address, shared by every call to that node.
struct Channels {
    connect_timeout: Duration,
    /// Upper bound of any unary call on these channels; each caller applies its own, shorter
    /// deadline as well.
    request_timeout: Duration,
    by_address: Mutex<HashMap<String, Channel>>,
}

impl Channels {
    fn get(&self, address: &str) -> Result<Channel, Status> {
        let mut channels = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = restate_net::channel(address, self.connect_timeout, self.request_timeout)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// Log-servers reached over gRPC on their fabric ports.
struct GrpcLogServers {
    channels: Arc<Channels>,
    max_message_size: usize,
}

impl GrpcLogServers {
    fn client(&self, address: &str) -> Result<LogServerSvcClient<Channel>, Status> {
        Ok(LogServerSvcClient::new(self.channels.get(address)?)
            .max_decoding_message_size(self.max_message_size)
            .max_encoding_message_size(self.max_message_size))
    }
}

#[tonic::async_trait]
impl LogServerRpc for GrpcLogServers {
    async fn store(
        &self,
        _node: PlainNodeId,
        address: &str,
        request: pb::StoreRequest,
    ) -> Result<pb::StoreResponse, Status> {
        Ok(self.client(address)?.store(request).await?.into_inner())
    }

    async fn seal(
        &self,
        _node: PlainNodeId,
        address: &str,
        request: pb::SealRequest,
    ) -> Result<pb::LogletInfo, Status> {
        Ok(self.client(address)?.seal(request).await?.into_inner())
    }

    async fn get_records(
        &self,
        _node: PlainNodeId,
        address: &str,
        request: pb::GetRecordsRequest,
    ) -> Result<pb::GetRecordsResponse, Status> {
        Ok(self.client(address)?.get_records(request).await?.into_inner())
    }

    async fn get_loglet_info(
        &self,
        _node: PlainNodeId,
        address: &str,
        request: pb::GetLogletInfoRequest,
    ) -> Result<pb::LogletInfo, Status> {
        Ok(self.client(address)?.get_loglet_info(request).await?.into_inner())
    }

    async fn trim(
        &self,
        _node: PlainNodeId,
        address: &str,
        request: pb::TrimRequest,
    ) -> Result<pb::LogletInfo, Status> {
        Ok(self.client(address)?.trim(request).await?.into_inner())
    }
}

/// The node's own log-server called in-process, every other one over gRPC.
struct LocalFirstLogServers {
    me: PlainNodeId,
    local: restate_log_server::LogServerService,
    remote: GrpcLogServers,
}

#[tonic::async_trait]
impl LogServerRpc for LocalFirstLogServers {
    async fn store(
        &self,
        node: PlainNodeId,
        address: &str,
        request: pb::StoreRequest,
    ) -> Result<pb::StoreResponse, Status> {
        use restate_proto::log_server::log_server_svc_server::LogServerSvc;
        match node == self.me {
            true => Ok(self.local.store(tonic::Request::new(request)).await?.into_inner()),
            false => self.remote.store(node, address, request).await,
        }
    }

    async fn seal(&self, node: PlainNodeId, address: &str, request: pb::SealRequest) -> Result<pb::LogletInfo, Status> {
        use restate_proto::log_server::log_server_svc_server::LogServerSvc;
        match node == self.me {
            true => Ok(self.local.seal(tonic::Request::new(request)).await?.into_inner()),
            false => self.remote.seal(node, address, request).await,
        }
    }

    async fn get_records(
        &self,
        node: PlainNodeId,
        address: &str,
        request: pb::GetRecordsRequest,
    ) -> Result<pb::GetRecordsResponse, Status> {
        use restate_proto::log_server::log_server_svc_server::LogServerSvc;
        match node == self.me {
            true => Ok(self.local.get_records(tonic::Request::new(request)).await?.into_inner()),
            false => self.remote.get_records(node, address, request).await,
        }
    }

    async fn get_loglet_info(
        &self,
        node: PlainNodeId,
        address: &str,
        request: pb::GetLogletInfoRequest,
    ) -> Result<pb::LogletInfo, Status> {
        use restate_proto::log_server::log_server_svc_server::LogServerSvc;
        match node == self.me {
            true => Ok(self
                .local
                .get_loglet_info(tonic::Request::new(request))
                .await?
                .into_inner()),
            false => self.remote.get_loglet_info(node, address, request).await,
        }
    }

    async fn trim(&self, node: PlainNodeId, address: &str, request: pb::TrimRequest) -> Result<pb::LogletInfo, Status> {
        use restate_proto::log_server::log_server_svc_server::LogServerSvc;
        match node == self.me {
            true => Ok(self.local.trim(tonic::Request::new(request)).await?.into_inner()),
            false => self.remote.trim(node, address, request).await,
        }
    }
}

pub(crate) struct Peers {
    pub(crate) cluster_name: String,
    pub(crate) rpc_timeout: Duration,
    /// How long a sequencer keeps retrying a batch on its nodeset before the append reports
    /// failure (and the log may be reconfigured around the failing log-servers).
    pub(crate) store_deadline: Duration,
    pub(crate) log_servers: Arc<dyn LogServerRpc>,
    channels: Arc<Channels>,
    max_message_size: usize,
    /// The failure detector, the silence after which a log-server counts as gone, and this
    /// node (never gone to itself, however late its own heartbeat loop runs under load).
    liveness: Option<(restate_types::ClusterView, Duration, PlainNodeId)>,
}

impl Peers {
    pub(crate) fn new(
        cluster_name: &str,
        connect_timeout: Duration,
        rpc_timeout: Duration,
        store_deadline: Duration,
        max_message_size: usize,
    ) -> Self {
        let channels = Arc::new(Channels {
            connect_timeout,
            request_timeout: Self::forward_timeout_of(rpc_timeout, store_deadline),
            by_address: Mutex::default(),
        });
        let log_servers = Arc::new(GrpcLogServers {
            channels: channels.clone(),
            max_message_size,
        });
        Self {
            cluster_name: cluster_name.to_owned(),
            rpc_timeout,
            store_deadline,
            log_servers,
            channels,
            max_message_size,
            liveness: None,
        }
    }

    /// Lets stores stop waiting for log-servers the failure detector finds silent.
    pub(crate) fn with_liveness(
        mut self,
        view: restate_types::ClusterView,
        silence: Duration,
        me: PlainNodeId,
    ) -> Self {
        self.liveness = Some((view, silence, me));
        self
    }

    /// Whether `node` (another node) refused a connection or stopped answering heartbeats a
    /// while ago.
    pub(crate) fn silent(&self, node: PlainNodeId) -> bool {
        self.liveness
            .as_ref()
            .is_some_and(|(view, silence, me)| node != *me && view.silent(node, *silence))
    }

    /// Runs a call to `node` for at most the RPC timeout, and only while `node` answers
    /// heartbeats (a paused node keeps the connection open and answers nothing). Errors name
    /// the node.
    pub(crate) async fn within_deadline<T>(
        &self,
        node: PlainNodeId,
        call: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, String> {
        let falls_silent = restate_net::until(|| self.silent(node));
        tokio::select! {
            answer = tokio::time::timeout(self.rpc_timeout, call) => match answer {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(status)) => Err(format!("{node}: {}", status.message())),
                Err(_) => Err(format!("{node}: no answer")),
            },
            () = falls_silent => Err(format!("{node}: stopped answering heartbeats")),
        }
    }

    /// Tells the failure detector that `node` refused a connection: it counts as dead at once
    /// (until it answers a heartbeat again), so appends and the quorum check need not wait for
    /// the next heartbeat to learn it.
    pub(crate) fn note_refused(&self, node: PlainNodeId) {
        if let Some((view, _, me)) = &self.liveness
            && node != *me
        {
            view.connection_refused(node);
        }
    }

    /// Calls the log-server of node `me` in-process through `local`.
    pub(crate) fn with_local_log_server(
        mut self,
        me: PlainNodeId,
        local: restate_log_server::LogServerService,
    ) -> Self {
        self.log_servers = Arc::new(LocalFirstLogServers {
            me,
            local,
            remote: GrpcLogServers {
                channels: self.channels.clone(),
                max_message_size: self.max_message_size,
            },
        });
        self
    }

    /// Peers whose log-servers are reached through `log_servers` instead of gRPC.
    #[cfg(test)]
    pub(crate) fn with_log_servers(
        cluster_name: &str,
        rpc_timeout: Duration,
        store_deadline: Duration,
        log_servers: Arc<dyn LogServerRpc>,
    ) -> Self {
        let mut peers = Self::new(cluster_name, rpc_timeout, rpc_timeout, store_deadline, 4 << 20);
        peers.log_servers = log_servers;
        peers
    }

    /// How long a node waits for an append it forwarded to the sequencer: the sequencer
    /// answers within its store deadline plus one store call, so a caller that gave up earlier
    /// would report "outcome unknown" for batches that are still being stored.
    fn forward_timeout_of(rpc_timeout: Duration, store_deadline: Duration) -> Duration {
        store_deadline + rpc_timeout * 2
    }

    pub(crate) fn forward_timeout(&self) -> Duration {
        Self::forward_timeout_of(self.rpc_timeout, self.store_deadline)
    }

    pub(crate) fn bifrost(&self, address: &str) -> Result<BifrostSvcClient<Channel>, BifrostError> {
        let channel = self
            .channels
            .get(address)
            .map_err(|e| BifrostError::Invalid(e.message().to_owned()))?;
        Ok(BifrostSvcClient::new(channel)
            .max_decoding_message_size(self.max_message_size)
            .max_encoding_message_size(self.max_message_size))
    }

    pub(crate) fn identity(&self, node_id: u32) -> Option<pb::LogServerIdentity> {
        Some(pb::LogServerIdentity {
            cluster_name: self.cluster_name.clone(),
            node_id,
        })
    }
}

/// Whether a failed call certainly never reached the peer's process (it is not running). Only
/// a transport failure here counts: a status the peer sent back may quote another node's
/// connection failure in its message, but that peer answered.
pub(crate) fn refused(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some() && restate_metadata_store::proto_conv::never_reached_a_process(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_connection_that_could_not_be_opened_is_a_refusal() {
        // A port nothing listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap();
        let peers = Peers::new(
            "c",
            Duration::from_secs(1),
            Duration::from_secs(1),
            Duration::from_secs(1),
            1 << 20,
        );
        let mut client = peers.bifrost(&format!("http://{closed}/")).unwrap();
        let status = client
            .find_tail(pb_bifrost::FindTailRequest { log_id: 1 })
            .await
            .unwrap_err();
        assert!(refused(&status), "{status:?}");
        // The same words in a status another node sent back are not a refusal of that node.
        let answered = tonic::Status::unknown("only 1 of the 2 copies needed could be stored (N1: tcp connect error)");
        assert!(!refused(&answered));
    }

    use restate_proto::bifrost as pb_bifrost;
}
