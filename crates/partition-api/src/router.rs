//! The client the ingress, admin API and query engine hold: it finds the partition that owns a
//! partition key and the replica to ask, on this node or another.

use std::ops::RangeInclusive;
use std::sync::{Arc, RwLock};

use restate_metadata_store::MetadataClient;
use restate_types::metadata::{PARTITION_TABLE_KEY, PartitionTable};

use crate::answers::SubmitError;
use crate::partition::{PartitionApi, PartitionReader};
use crate::remote::{Fabric, RemotePartition, RemoteReader};

/// One partition replica of this node, as the worker hands it over.
#[derive(Clone)]
pub struct LocalPartition {
    pub partition_id: u16,
    /// The partition keys it owns.
    pub keys: RangeInclusive<u64>,
    pub api: Arc<dyn PartitionApi>,
    pub reader: Arc<dyn PartitionReader>,
}

/// A partition of the cluster and the replica its tables are read from.
#[derive(Clone)]
pub struct ReadablePartition {
    pub partition_id: u16,
    pub keys: RangeInclusive<u64>,
    /// This node's replica, or one on another node over the fabric.
    pub reader: Arc<dyn PartitionReader>,
}

/// Routes requests by partition key: to this node's replica when the worker role runs here,
/// else over the fabric to a node that runs one. Cheap to clone.
#[derive(Clone)]
pub struct Partitions {
    inner: Arc<Inner>,
}

struct Inner {
    /// This node's replicas: set when its worker starts, replaced when the placement moves
    /// replicas to or from this node.
    local: RwLock<Arc<Vec<LocalPartition>>>,
    /// `None`: only this node's replicas (a single process, or tests).
    remote: Option<Remote>,
}

/// Which partition owns which keys: (keys, partition id).
type KeyRanges = Arc<Vec<(RangeInclusive<u64>, u16)>>;

struct Remote {
    metadata: MetadataClient,
    fabric: Fabric,
    /// Partition id per key range, read from metadata on first use (the table does not change
    /// once provisioned).
    table: RwLock<Option<KeyRanges>>,
}

impl Partitions {
    /// Routes to this node's replicas only: without them, requests are refused.
    pub fn local_only() -> Self {
        Self {
            inner: Arc::new(Inner {
                local: RwLock::default(),
                remote: None,
            }),
        }
    }

    /// Routes to this node's replicas, and to other nodes' (found in `view`, reached on their
    /// fabric address; `own_address` is this node's, never asked) for partitions this node
    /// does not run. A node silent for `failover_silence` is not asked, and a request in
    /// flight to a node that falls silent is given up.
    pub fn new(
        metadata: MetadataClient,
        view: restate_types::ClusterView,
        own_address: &str,
        message_limit: usize,
        failover_silence: std::time::Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                local: RwLock::default(),
                remote: Some(Remote {
                    metadata,
                    fabric: Fabric::new(view, own_address, message_limit, failover_silence),
                    table: RwLock::new(None),
                }),
            }),
        }
    }

    /// Called by the worker when it starts and whenever replicas move to or from this node:
    /// from now on requests for these partitions are served in-process.
    pub fn serve_locally(&self, partitions: Vec<LocalPartition>) {
        *self
            .inner
            .local
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(partitions);
    }

    /// This node's replicas (empty until its worker started, or without the worker role).
    pub fn local(&self) -> Arc<Vec<LocalPartition>> {
        self.inner
            .local
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// This node's replica of a partition, by id.
    pub fn local_by_id(&self, partition_id: u16) -> Option<LocalPartition> {
        self.local().iter().find(|p| p.partition_id == partition_id).cloned()
    }

    /// The partition that owns `partition_key`, as the replica to ask: this node's if it runs
    /// one, else a client for another node's.
    pub async fn for_key(&self, partition_key: u64) -> Result<Arc<dyn PartitionApi>, SubmitError> {
        if let Some(local) = self.local().iter().find(|p| p.keys.contains(&partition_key)) {
            return Ok(local.api.clone());
        }
        let Some(remote) = &self.inner.remote else {
            return Err(SubmitError::Unreachable(
                "the worker of this node is not running yet".into(),
            ));
        };
        let table = remote.table().await?;
        let Some((_, partition_id)) = table.iter().find(|(keys, _)| keys.contains(&partition_key)) else {
            return Err(SubmitError::Unreachable(format!(
                "no partition of the partition table owns partition key {partition_key}"
            )));
        };
        Ok(Arc::new(RemotePartition::new(*partition_id, remote.fabric.clone())))
    }
}

impl Partitions {
    /// Every partition of the cluster with a replica to read it from: this node's where it
    /// runs one, another node's (the leader first) for the rest. Without the fabric (tests),
    /// only this node's.
    pub async fn readers(&self) -> Result<Vec<ReadablePartition>, SubmitError> {
        let mut readers: Vec<ReadablePartition> = self
            .local()
            .iter()
            .map(|local| ReadablePartition {
                partition_id: local.partition_id,
                keys: local.keys.clone(),
                reader: local.reader.clone(),
            })
            .collect();
        let Some(remote) = &self.inner.remote else {
            return Ok(readers);
        };
        let table = remote.table().await?;
        for (keys, partition_id) in table.iter() {
            if readers.iter().all(|r| r.partition_id != *partition_id) {
                readers.push(ReadablePartition {
                    partition_id: *partition_id,
                    keys: keys.clone(),
                    reader: Arc::new(RemoteReader::new(*partition_id, remote.fabric.clone())),
                });
            }
        }
        readers.sort_by_key(|r| r.partition_id);
        Ok(readers)
    }
}

impl Remote {
    async fn table(&self) -> Result<KeyRanges, SubmitError> {
        if let Some(table) = self.table.read().ok().and_then(|t| t.clone()) {
            return Ok(table);
        }
        let table = match self.metadata.get_json::<PartitionTable>(PARTITION_TABLE_KEY).await {
            Ok(Some((_, table))) => table,
            Ok(None) => {
                return Err(SubmitError::Unreachable(
                    "the cluster has no partition table yet (is it provisioned?)".into(),
                ));
            }
            Err(error) => {
                return Err(SubmitError::Unreachable(format!(
                    "cannot read the partition table: {error}"
                )));
            }
        };
        let ranges: Arc<Vec<_>> = Arc::new(
            table
                .partitions
                .iter()
                .map(|p| (p.key_range_start..=p.key_range_end, p.id))
                .collect(),
        );
        if let Ok(mut cached) = self.table.write() {
            *cached = Some(ranges.clone());
        }
        Ok(ranges)
    }
}
