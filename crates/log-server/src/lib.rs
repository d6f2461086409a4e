//! The `log-server` role: durable storage of replicated log records.
//!
//! Stores are accepted only from a loglet's sequencer and only until the loglet is sealed;
//! every answer comes after the records are fsynced. The node's storage state in the nodes
//! configuration says whether its store may take new records: it moves from `provisioning` to
//! `read-write` once the store's marker is written, and a store that vanished while the node
//! was `read-write` or `read-only` marks the node `data-loss` and stops it from starting.

mod service;
mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use restate_config::Configuration;
use restate_metadata_store::{MetadataClient, ReadModifyWrite, WriteError};
use restate_types::PlainNodeId;
use restate_types::metadata::{NODES_CONFIG_KEY, NodesConfiguration, StorageState};
pub use service::LogServerService;
pub use store::{LogStore, LogletState, StorageMarker, StoreError, StoreRefusal};

/// Directory of the store inside the node directory.
pub const STORE_DIR: &str = "log-store";

#[derive(Debug, thiserror::Error)]
pub enum LogServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the log store at {path} is missing, but this node ({node}) was {state} and had stored records: they are lost; \
         the node is now marked data-loss. Restore the directory, or remove the node's log-server role"
    )]
    DataLoss {
        path: PathBuf,
        node: PlainNodeId,
        state: StorageState,
    },
    #[error(
        "this node's log storage is {state}: the log-server role does not start. If the store is intact, set it \
         back with `restatectl nodes set-storage-state --nodes {node} --storage-state read-only --force`"
    )]
    Refused { state: StorageState, node: PlainNodeId },
    #[error("cannot update the storage state in the nodes configuration: {0}")]
    Metadata(#[from] WriteError),
}

/// The log-server role.
#[derive(Clone)]
pub struct LogServer {
    store: LogStore,
    marker: Option<StorageMarker>,
    node_name: String,
    cluster_name: String,
    /// Whether the node's storage state allows new records.
    writable: Arc<AtomicBool>,
    /// Set once [`Self::activate`] checked the store against the storage state.
    activated: Arc<AtomicBool>,
    /// Largest gRPC message (`[networking] message-size-limit`).
    message_size_limit: usize,
}

impl LogServer {
    pub fn open(config: &Configuration) -> Result<Self, LogServerError> {
        let path = config.node_dir().join(STORE_DIR);
        let (store, marker) = LogStore::open(&path)?;
        Ok(Self {
            store,
            marker,
            node_name: config.node_name().to_owned(),
            cluster_name: config.cluster_name.clone(),
            writable: Arc::new(AtomicBool::new(false)),
            activated: Arc::new(AtomicBool::new(false)),
            message_size_limit: usize::try_from(config.networking.message_size_limit.0).unwrap_or(usize::MAX),
        })
    }

    pub fn store(&self) -> &LogStore {
        &self.store
    }

    /// The same service for callers in this process (the node's own sequencers): no gRPC
    /// encoding and no loopback connection for records stored on this node.
    pub fn local_service(&self) -> LogServerService {
        LogServerService::new(
            self.store.clone(),
            self.cluster_name.clone(),
            self.writable.clone(),
            self.activated.clone(),
        )
    }

    /// The gRPC service, for the fabric router (it refuses stores until [`Self::activate`]).
    pub fn service(&self) -> restate_proto::log_server::log_server_svc_server::LogServerSvcServer<LogServerService> {
        restate_proto::log_server::log_server_svc_server::LogServerSvcServer::new(LogServerService::new(
            self.store.clone(),
            self.cluster_name.clone(),
            self.writable.clone(),
            self.activated.clone(),
        ))
        .max_decoding_message_size(self.message_size_limit)
        .max_encoding_message_size(self.message_size_limit)
    }

    /// Checks the store against the node's storage state and moves it to `read-write` when it
    /// is new. Returns the resulting state.
    pub async fn activate(
        &mut self,
        metadata: &MetadataClient,
        node: PlainNodeId,
    ) -> Result<StorageState, LogServerError> {
        let nodes = metadata
            .get_json::<NodesConfiguration>(NODES_CONFIG_KEY)
            .await
            .map_err(WriteError::from)?
            .map(|(_, nodes)| nodes);
        let state = nodes
            .as_ref()
            .and_then(|n| n.nodes.get(&node))
            .map(|n| n.log_server_state)
            .unwrap_or_default();
        let target = match (state, &self.marker) {
            (StorageState::DataLoss | StorageState::Disabled | StorageState::Gone, _) => {
                return Err(LogServerError::Refused { state, node });
            }
            (StorageState::ReadWrite | StorageState::ReadOnly, None) => {
                set_state(metadata, node, StorageState::DataLoss).await?;
                return Err(LogServerError::DataLoss {
                    path: self.store.path().to_owned(),
                    node,
                    state,
                });
            }
            (StorageState::Provisioning, _) => StorageState::ReadWrite,
            (current, Some(_)) => current,
        };
        if self.marker.is_none() {
            let marker = StorageMarker {
                node_name: self.node_name.clone(),
                created_at_millis: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(1),
            };
            self.store.write_marker(&marker).await?;
            self.marker = Some(marker);
        }
        if target != state {
            set_state(metadata, node, target).await?;
        }
        self.writable
            .store(target == StorageState::ReadWrite, Ordering::Relaxed);
        self.activated.store(true, Ordering::Release);
        tracing::info!(state = ?target, path = %self.store.path().display(), "log-server storage is ready");
        Ok(target)
    }

    /// Follows an operator's change of the storage state (e.g. to `read-only`).
    /// `provisioning` is ignored: [`Self::activate`] owns that transition.
    pub fn apply_state(&self, state: StorageState) {
        if self.activated.load(Ordering::Acquire) && state != StorageState::Provisioning {
            let writable = state == StorageState::ReadWrite;
            if self.writable.swap(writable, Ordering::Relaxed) != writable {
                tracing::info!(?state, "log-server storage state changed");
            }
        }
    }
}

/// Sets the node's storage state in the nodes configuration.
pub async fn set_state(metadata: &MetadataClient, node: PlainNodeId, state: StorageState) -> Result<(), WriteError> {
    metadata
        .read_modify_write(NODES_CONFIG_KEY, |current: Option<&NodesConfiguration>| {
            let mut nodes = current
                .cloned()
                .ok_or_else(|| WriteError::Rejected("the cluster is not provisioned".into()))?;
            let entry = nodes
                .nodes
                .get_mut(&node)
                .ok_or_else(|| WriteError::Rejected(format!("{node} is not in the nodes configuration")))?;
            if entry.log_server_state == state {
                return Ok(ReadModifyWrite::Keep);
            }
            entry.log_server_state = state;
            Ok(ReadModifyWrite::Write(nodes))
        })
        .await
        .map(|_| ())
}
