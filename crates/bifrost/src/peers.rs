//! gRPC clients for the other nodes Bifrost talks to: log-servers and remote sequencers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use restate_proto::bifrost::bifrost_svc_client::BifrostSvcClient;
use restate_proto::log_server::LogServerIdentity;
use restate_proto::log_server::log_server_svc_client::LogServerSvcClient;
use tonic::transport::Channel;

use crate::BifrostError;

pub(crate) struct Peers {
    pub(crate) cluster_name: String,
    connect_timeout: Duration,
    pub(crate) rpc_timeout: Duration,
    /// How long a sequencer keeps retrying a batch on its nodeset before the append reports
    /// failure (and the log may be reconfigured around the failing log-servers).
    pub(crate) store_deadline: Duration,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Peers {
    pub(crate) fn new(
        cluster_name: &str,
        connect_timeout: Duration,
        rpc_timeout: Duration,
        store_deadline: Duration,
    ) -> Self {
        Self {
            cluster_name: cluster_name.to_owned(),
            connect_timeout,
            rpc_timeout,
            store_deadline,
            channels: Mutex::default(),
        }
    }

    fn channel(&self, address: &str) -> Result<Channel, BifrostError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = restate_net::channel(address, self.connect_timeout, self.rpc_timeout)
            .map_err(|e| BifrostError::Invalid(e.to_string()))?;
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    pub(crate) fn log_server(&self, address: &str) -> Result<LogServerSvcClient<Channel>, BifrostError> {
        Ok(LogServerSvcClient::new(self.channel(address)?)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    pub(crate) fn bifrost(&self, address: &str) -> Result<BifrostSvcClient<Channel>, BifrostError> {
        Ok(BifrostSvcClient::new(self.channel(address)?)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    pub(crate) fn identity(&self, node_id: u32) -> Option<LogServerIdentity> {
        Some(LogServerIdentity {
            cluster_name: self.cluster_name.clone(),
            node_id,
        })
    }
}

/// Whether a failed call certainly never reached the peer's process (it is not running).
pub(crate) fn refused(status: &tonic::Status) -> bool {
    restate_metadata_store::proto_conv::certainly_not_applied(status)
        && !status
            .metadata()
            .contains_key(restate_metadata_store::proto_conv::NOT_APPLIED_HEADER)
}
