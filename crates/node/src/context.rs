//! What the node's services share: configuration, health, the metadata client and, on
//! nodes with the metadata-server role, the local metadata server.

use std::sync::Arc;

use restate_config::Configuration;
use restate_metadata_server::MetadataServer;
use restate_metadata_store::{MetadataClient, ReplicatedStoreClient};
use restate_types::{ClusterView, NodeHealth};

pub(crate) struct NodeContext {
    pub(crate) config: Configuration,
    pub(crate) health: NodeHealth,
    /// Liveness of every node, kept by the failure detector.
    pub(crate) view: ClusterView,
    pub(crate) metadata: MetadataClient,
    /// The replicated store's client, when that is the store (to hand it the fingerprint).
    pub(crate) replicated: Option<Arc<ReplicatedStoreClient>>,
    pub(crate) metadata_server: Option<MetadataServer>,
    pub(crate) log_server: Option<restate_log_server::LogServer>,
    /// Set once the node has joined its cluster.
    pub(crate) bifrost: Arc<std::sync::OnceLock<restate_bifrost::Bifrost>>,
    /// Set once the worker role started (its health, the partitions this node leads).
    pub(crate) worker: Arc<std::sync::OnceLock<restate_worker::WorkerHandle>>,
    /// How the ingress, admin API and query engine reach partitions: this node's replicas
    /// once the worker started, other nodes' over the fabric.
    pub(crate) partitions: restate_partition_api::Partitions,
    /// This node's copy of the schema registry, kept fresh in the background.
    pub(crate) schema: restate_metadata_store::SchemaCache,
    /// Invocation counters, shown on `/metrics`.
    pub(crate) worker_metrics: restate_worker::WorkerMetrics,
    /// What the admin role serves at `/ui/`.
    pub(crate) web_ui: restate_admin::WebUi,
}

impl NodeContext {
    /// Makes every later metadata request carry the cluster fingerprint.
    pub(crate) fn learn_fingerprint(&self, fingerprint: u64) {
        if let Some(replicated) = &self.replicated {
            replicated.set_fingerprint(fingerprint);
        }
    }
}
