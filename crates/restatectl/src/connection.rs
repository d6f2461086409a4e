//! Reaching nodes: the addresses given on the command line and gRPC clients for them.

use std::future::Future;
use std::time::Duration;

use anyhow::{anyhow, bail};
use restate_proto::metadata as pb;
use restate_proto::metadata::metadata_proxy_svc_client::MetadataProxySvcClient;
use restate_proto::node_ctl::node_ctl_svc_client::NodeCtlSvcClient;
use restate_proto::node_ctl::{GetIdentRequest, IdentResponse};
use restate_types::metadata::{NODES_CONFIG_KEY, NodesConfiguration};
use tonic::transport::Channel;

pub(crate) struct Addresses {
    pub(crate) addresses: Vec<String>,
    /// `--single-address`: only these addresses are asked, never other nodes of the cluster.
    pub(crate) single: bool,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl Addresses {
    pub(crate) fn new(
        addresses: Vec<String>,
        connect_timeout: Duration,
        request_timeout: Duration,
        single: bool,
    ) -> anyhow::Result<Self> {
        let mut normalized: Vec<String> = Vec::new();
        for address in addresses.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
            if address.to_ascii_lowercase().starts_with("https://") {
                bail!(
                    "`{address}`: restate-rs nodes serve their fabric port over plain http (no TLS); use http://{}",
                    &address["https://".len()..]
                );
            }
            let address = restate_net::normalize_address(address);
            if !normalized.contains(&address) {
                normalized.push(address);
            }
        }
        Ok(Self {
            addresses: normalized,
            single,
            connect_timeout,
            request_timeout,
        })
    }

    pub(crate) fn channel(&self, address: &str) -> anyhow::Result<Channel> {
        Ok(restate_net::channel(
            address,
            self.connect_timeout,
            self.request_timeout,
        )?)
    }

    /// A channel for requests that take as long as their work (a snapshot of a large
    /// partition): only the connect timeout applies.
    pub(crate) fn long_channel(&self, address: &str) -> anyhow::Result<Channel> {
        Ok(restate_net::channel_without_deadline(address, self.connect_timeout)?)
    }

    pub(crate) async fn ident(&self, address: &str) -> anyhow::Result<IdentResponse> {
        let mut client = NodeCtlSvcClient::new(self.channel(address)?);
        let response = client
            .get_ident(GetIdentRequest {})
            .await
            .map_err(|status| call_error(address, &status))?;
        Ok(response.into_inner())
    }

    /// Makes sure the given addresses belong to one cluster (and to `expected`, if given).
    /// Unreachable addresses are left to the command, which notes them.
    pub(crate) async fn check_cluster(&self, expected: Option<&str>) -> anyhow::Result<()> {
        if expected.is_none() && self.addresses.len() < 2 {
            return Ok(());
        }
        let idents = futures::future::join_all(self.addresses.iter().map(|address| async move {
            let ident = tokio::time::timeout(Duration::from_secs(2), self.ident(address)).await;
            (address.clone(), ident.ok().and_then(Result::ok))
        }))
        .await;
        let mut clusters: Vec<(String, String)> = idents
            .into_iter()
            .filter_map(|(address, ident)| ident.map(|i| (address, i.cluster_name)))
            .collect();
        if let Some(expected) = expected
            && let Some((address, found)) = clusters.iter().find(|(_, name)| name != expected)
        {
            anyhow::bail!("{address} belongs to cluster `{found}`, not to cluster `{expected}`");
        }
        clusters.sort_by(|a, b| a.1.cmp(&b.1));
        clusters.dedup_by(|a, b| a.1 == b.1);
        if clusters.len() > 1 {
            let listed: Vec<String> = clusters.iter().map(|(a, c)| format!("{a} is in `{c}`")).collect();
            anyhow::bail!("the addresses belong to different clusters: {}", listed.join(", "));
        }
        Ok(())
    }

    /// Runs `call` against the given addresses in order until one answers; calls that fail
    /// because the node is unreachable move on to the next address (with a note).
    pub(crate) async fn first_answer<T, F, Fut>(&self, call: F) -> anyhow::Result<T>
    where
        F: Fn(Channel, String) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut unreachable = Vec::new();
        for address in &self.addresses {
            match call(self.channel(address)?, address.clone()).await {
                Ok(answer) => {
                    for note in &unreachable {
                        crate::settings::note(&format!("skipped {note}"));
                    }
                    crate::settings::verbose(&format!("{address} answered"));
                    return Ok(answer);
                }
                Err(status) if is_unreachable(&status) => unreachable.push(format!("{address}: {}", describe(&status))),
                Err(status) => return Err(call_error(address, &status)),
            }
        }
        match unreachable.len() {
            0 => bail!("no address given: use --address"),
            1 => bail!(
                "cannot reach {}; is a restate node running there? (set the address with --address or RESTATECTL_ADDRESS)",
                unreachable[0]
            ),
            _ => bail!("cannot reach any of the given nodes: {}", unreachable.join("; ")),
        }
    }

    /// A metadata key's value, read through the first reachable node (whatever store the
    /// cluster uses).
    pub(crate) async fn metadata_value(&self, key: &str) -> anyhow::Result<Option<pb::VersionedValue>> {
        self.first_answer(|channel, _| async move {
            MetadataProxySvcClient::new(channel)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX)
                .get(pb::GetRequest {
                    cluster: None,
                    key: key.to_owned(),
                })
                .await
                .map(|r| r.into_inner().value)
        })
        .await
    }

    /// The nodes configuration, read through the first reachable node.
    pub(crate) async fn nodes_config(&self) -> anyhow::Result<Option<(u32, NodesConfiguration)>> {
        let Some(value) = self.metadata_value(NODES_CONFIG_KEY).await? else {
            return Ok(None);
        };
        let nodes = serde_json::from_slice(&value.value)
            .map_err(|e| anyhow!("the nodes configuration cannot be decoded: {e}"))?;
        Ok(Some((value.version, nodes)))
    }
}

pub(crate) fn is_unreachable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
    ) && restate_metadata_store::proto_conv::certainly_not_applied(status)
        && !status
            .metadata()
            .contains_key(restate_metadata_store::proto_conv::NOT_APPLIED_HEADER)
}

/// Explains a failed call in terms of what the operator can check.
pub(crate) fn call_error(address: &str, status: &tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled if is_unreachable(status) => {
            anyhow!(
                "cannot reach {address}: {}; is a restate node running there? (set the address with --address or RESTATECTL_ADDRESS)",
                describe(status)
            )
        }
        tonic::Code::Unimplemented => anyhow!(
            "{address} does not serve this call ({}); is it a restate-rs node's fabric port (default 5122)?",
            status.message()
        ),
        _ => anyhow!("{address}: {}", status.message()),
    }
}

fn describe(status: &tonic::Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        text = cause.to_string();
        source = cause.source();
    }
    if text.is_empty() {
        "unavailable".to_owned()
    } else {
        text
    }
}
