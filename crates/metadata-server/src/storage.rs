//! RocksDB storage of a metadata server: the Raft log, the vote, the committed index, the
//! latest snapshot and the storage marker. Every write that Raft relies on is synced.

use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::raft_types::{LogId, NodeId, TypeConfig};

const CF_LOG: &str = "raft-log";
const CF_META: &str = "raft-meta";

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last-purged";
const KEY_SNAPSHOT: &[u8] = b"snapshot";
const KEY_STORAGE_MARKER: &[u8] = b"storage-marker";
const KEY_NODE_ID: &[u8] = b"node-id";
const KEY_RETIRED: &[u8] = b"retired";

/// Identifies the store and ties it to one node name; a store found under another node's
/// name blocks start-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StorageMarker {
    pub node_name: String,
    pub created_at_millis: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageOpenError {
    #[error("cannot open the metadata store at {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error(
        "the metadata store at {path} belongs to node `{found}`, not to `{configured}`; \
         use the node-name it was created with, or another base-dir"
    )]
    OtherNode {
        path: PathBuf,
        found: String,
        configured: String,
    },
}

/// The RocksDB database of one metadata server.
#[derive(Clone)]
pub struct Storage {
    db: Arc<DB>,
    pub path: PathBuf,
}

impl Storage {
    pub fn open(path: &Path, node_name: &str) -> Result<(Self, StorageMarker), StorageOpenError> {
        let open_error = |reason: String| StorageOpenError::Open {
            path: path.to_owned(),
            reason,
        };
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_max_background_jobs(2);
        options.set_keep_log_file_num(3);
        let families = [CF_LOG, CF_META].map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&options, path, families).map_err(|e| open_error(e.to_string()))?;
        let storage = Self {
            db: Arc::new(db),
            path: path.to_owned(),
        };
        let marker = match storage
            .read_meta::<StorageMarker>(KEY_STORAGE_MARKER)
            .map_err(|e| open_error(e.to_string()))?
        {
            Some(marker) if marker.node_name != node_name => {
                return Err(StorageOpenError::OtherNode {
                    path: path.to_owned(),
                    found: marker.node_name,
                    configured: node_name.to_owned(),
                });
            }
            Some(marker) => marker,
            None => {
                let marker = StorageMarker {
                    node_name: node_name.to_owned(),
                    created_at_millis: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(1),
                };
                storage
                    .write_meta(KEY_STORAGE_MARKER, &marker)
                    .map_err(|e| open_error(e.to_string()))?;
                marker
            }
        };
        Ok((storage, marker))
    }

    fn cf(&self, name: &str) -> io::Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| io::Error::other(format!("column family {name} is missing")))
    }

    fn synced() -> WriteOptions {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        options
    }

    pub fn read_meta<T: DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        let Some(bytes) = self.db.get_cf(self.cf(CF_META)?, key).map_err(io::Error::other)? else {
            return Ok(None);
        };
        postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    pub fn write_meta<T: Serialize>(&self, key: &[u8], value: &T) -> io::Result<()> {
        let bytes = postcard::to_allocvec(value).map_err(io::Error::other)?;
        self.db
            .put_cf_opt(self.cf(CF_META)?, key, bytes, &Self::synced())
            .map_err(io::Error::other)
    }

    pub fn node_id(&self) -> io::Result<Option<NodeId>> {
        self.read_meta(KEY_NODE_ID)
    }

    pub fn set_node_id(&self, node_id: NodeId) -> io::Result<()> {
        self.write_meta(KEY_NODE_ID, &node_id)
    }

    /// Whether this server was removed from the metadata cluster (and must stay on standby).
    pub fn retired(&self) -> io::Result<bool> {
        Ok(self.read_meta(KEY_RETIRED)?.unwrap_or(false))
    }

    pub fn set_retired(&self, retired: bool) -> io::Result<()> {
        self.write_meta(KEY_RETIRED, &retired)
    }

    /// The latest snapshot (metadata and data) this server built or received.
    pub fn snapshot(&self) -> io::Result<Option<StoredSnapshot>> {
        self.read_meta(KEY_SNAPSHOT)
    }

    pub fn set_snapshot(&self, snapshot: &StoredSnapshot) -> io::Result<()> {
        self.write_meta(KEY_SNAPSHOT, snapshot)
    }

    pub fn log_store(&self) -> io::Result<LogStore> {
        let committed = self.read_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten();
        Ok(LogStore {
            storage: self.clone(),
            committed_index: Arc::new(AtomicU64::new(committed.map_or(0, |id| id.index))),
        })
    }
}

/// A snapshot as persisted: openraft's metadata plus the encoded state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSnapshot {
    pub meta: openraft::SnapshotMeta<NodeId, crate::raft_types::MemberNode>,
    pub data: Vec<u8>,
}

/// The Raft log in RocksDB (`raft-log`: big-endian index → postcard entry).
#[derive(Clone)]
pub struct LogStore {
    storage: Storage,
    committed_index: Arc<AtomicU64>,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

impl LogStore {
    /// Highest index known to be committed (for status reports).
    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed_index.clone()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let cf = self.storage.cf(CF_LOG).map_err(read_err)?;
        let mut entries = Vec::new();
        for item in self
            .storage
            .db
            .iterator_cf(cf, IteratorMode::From(&start.to_be_bytes(), Direction::Forward))
        {
            let (key, value) = item.map_err(read_err)?;
            let index = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| read_err(bad_key()))?);
            if !range.contains(&index) {
                break;
            }
            entries.push(postcard::from_bytes(&value).map_err(read_err)?);
        }
        Ok(entries)
    }
}

fn bad_key() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "log key is not a big-endian u64")
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id = self
            .storage
            .read_meta::<Option<LogId>>(KEY_LAST_PURGED)
            .map_err(read_err)?
            .flatten();
        let cf = self.storage.cf(CF_LOG).map_err(read_err)?;
        let last = match self.storage.db.iterator_cf(cf, IteratorMode::End).next() {
            Some(item) => {
                let (_, value) = item.map_err(read_err)?;
                let entry: Entry<TypeConfig> = postcard::from_bytes(&value).map_err(read_err)?;
                Some(entry.log_id)
            }
            None => None,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.storage
            .write_meta(KEY_VOTE, vote)
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.storage
            .read_meta(KEY_VOTE)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError<NodeId>> {
        // Losing this on a crash only means re-applying from the snapshot; no sync needed.
        let bytes = postcard::to_allocvec(&committed).map_err(write_err)?;
        let cf = self.storage.cf(CF_META).map_err(write_err)?;
        self.storage.db.put_cf(cf, KEY_COMMITTED, bytes).map_err(write_err)?;
        if let Some(id) = committed {
            self.committed_index.fetch_max(id.index, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        Ok(self
            .storage
            .read_meta::<Option<LogId>>(KEY_COMMITTED)
            .map_err(read_err)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self.storage.cf(CF_LOG).map_err(write_err)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = postcard::to_allocvec(&entry).map_err(write_err)?;
            batch.put_cf(cf, entry.log_id.index.to_be_bytes(), bytes);
        }
        // One synced write per batch: many client writes share one fsync.
        let result = self
            .storage
            .db
            .write_opt(batch, &Storage::synced())
            .map_err(io::Error::other);
        let failed = result
            .as_ref()
            .err()
            .map(|e| write_err(io::Error::other(e.to_string())));
        callback.log_io_completed(result);
        match failed {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        let cf = self.storage.cf(CF_LOG).map_err(write_err)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, log_id.index.to_be_bytes(), u64::MAX.to_be_bytes());
        batch.delete_cf(cf, u64::MAX.to_be_bytes());
        self.storage.db.write_opt(batch, &Storage::synced()).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        self.storage
            .write_meta(KEY_LAST_PURGED, &Some(log_id))
            .map_err(write_err)?;
        let cf = self.storage.cf(CF_LOG).map_err(write_err)?;
        self.storage
            .db
            .delete_range_cf(cf, 0u64.to_be_bytes(), (log_id.index + 1).to_be_bytes())
            .map_err(write_err)
    }
}
