//! RocksDB storage of a metadata server: the Raft log, the vote, the committed index, the
//! latest snapshot and the storage marker. Every write that Raft relies on is synced.
//!
//! RocksDB calls block (a synced write waits for fsync), so everything that openraft calls
//! from the async runtime runs on tokio's blocking pool ([`Storage::blocking`]); a slow disk
//! then stalls the Raft core that awaits it, but never a runtime worker thread.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
const KEY_STORAGE_ID: &[u8] = b"storage-id";

/// Ties the store to one node name; a store found under another node's name blocks start-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StorageMarker {
    pub node_name: String,
    /// Creation time. Stores created before the random storage id existed use it as their
    /// storage id, so their Raft membership stays valid.
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
    /// Serialises snapshot replacement, so a slow snapshot build can never overwrite a newer
    /// snapshot installed meanwhile.
    snapshot_lock: Arc<Mutex<()>>,
}

/// What [`Storage::store_snapshot_if_newer`] did.
#[derive(Debug)]
pub enum SnapshotWrite {
    /// The snapshot was newer than the stored one and replaced it.
    Stored,
    /// The stored snapshot was as new or newer and was kept; here it is.
    Kept(StoredSnapshot),
}

/// A random non-zero storage id: two incarnations of a node directory never share one, even
/// when created in the same millisecond or with a clock set back.
fn new_storage_id() -> u64 {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return id;
        }
    }
}

impl Storage {
    /// Opens (or creates) the store; returns it with its storage id.
    pub fn open(path: &Path, node_name: &str) -> Result<(Self, u64), StorageOpenError> {
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
            snapshot_lock: Arc::new(Mutex::new(())),
        };
        let storage_id = match storage
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
            Some(marker) => storage
                .read_meta::<u64>(KEY_STORAGE_ID)
                .map_err(|e| open_error(e.to_string()))?
                .unwrap_or(marker.created_at_millis),
            None => {
                let marker = StorageMarker {
                    node_name: node_name.to_owned(),
                    created_at_millis: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(1),
                };
                let storage_id = new_storage_id();
                // Marker and id in one synced batch: a crash leaves both or neither.
                let values = encode_meta(&storage_id)
                    .and_then(|id| Ok([(KEY_STORAGE_ID, id), (KEY_STORAGE_MARKER, encode_meta(&marker)?)]))
                    .map_err(|e| open_error(e.to_string()))?;
                storage.write_metas(&values).map_err(|e| open_error(e.to_string()))?;
                storage_id
            }
        };
        Ok((storage, storage_id))
    }

    /// Runs blocking RocksDB work (synced writes, snapshot encoding and decoding) on tokio's
    /// blocking pool, so it never occupies an async worker thread. Unsynced writes and reads of
    /// recent entries (memtable and block cache) stay inline: the hop would cost more.
    pub async fn blocking<T, F>(&self, work: F) -> io::Result<T>
    where
        F: FnOnce(&Storage) -> io::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let storage = self.clone();
        tokio::task::spawn_blocking(move || work(&storage))
            .await
            .map_err(|e| io::Error::other(format!("metadata storage task failed: {e}")))?
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
        self.write_metas(&[(key, encode_meta(value)?)])
    }

    /// Writes several metadata keys in one synced batch.
    fn write_metas(&self, values: &[(&[u8], Vec<u8>)]) -> io::Result<()> {
        let cf = self.cf(CF_META)?;
        let mut batch = WriteBatch::default();
        for (key, bytes) in values {
            batch.put_cf(cf, key, bytes);
        }
        self.db.write_opt(batch, &Self::synced()).map_err(io::Error::other)
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

    /// Last log id of the stored snapshot (`None` if there is none), without decoding its data.
    fn stored_snapshot_log_id(&self) -> io::Result<Option<Option<LogId>>> {
        let Some(bytes) = self
            .db
            .get_cf(self.cf(CF_META)?, KEY_SNAPSHOT)
            .map_err(io::Error::other)?
        else {
            return Ok(None);
        };
        // `StoredSnapshot` encodes its meta first: decode just that prefix.
        let (meta, _) =
            postcard::take_from_bytes::<openraft::SnapshotMeta<NodeId, crate::raft_types::MemberNode>>(&bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Some(meta.last_log_id))
    }

    /// Persists `snapshot` (synced) unless the stored snapshot is as new or newer.
    ///
    /// A snapshot build and a snapshot install can race: after an install the log is purged
    /// up to the installed snapshot, so letting an older build overwrite it would leave a gap
    /// between the snapshot and the log, and the server could not restart.
    pub fn store_snapshot_if_newer(&self, snapshot: &StoredSnapshot) -> io::Result<SnapshotWrite> {
        let _guard = self.snapshot_lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(stored) = self.stored_snapshot_log_id()?
            && stored >= snapshot.meta.last_log_id
        {
            let kept = self
                .snapshot()?
                .ok_or_else(|| io::Error::other("the stored snapshot vanished"))?;
            return Ok(SnapshotWrite::Kept(kept));
        }
        self.write_meta(KEY_SNAPSHOT, snapshot)?;
        Ok(SnapshotWrite::Stored)
    }

    pub fn log_store(&self) -> io::Result<LogStore> {
        let committed = self.read_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten();
        Ok(LogStore {
            storage: self.clone(),
            committed_index: Arc::new(AtomicU64::new(committed.map_or(0, |id| id.index))),
            flusher: WalFlusher::start(self.db.clone())?,
        })
    }
}

fn encode_meta<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(io::Error::other)
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
    flusher: WalFlusher,
}

/// Makes appended entries durable off the Raft core: `append` writes them unsynced (visible
/// to reads at once, no blocking) and hands the flush callback here; one thread syncs the WAL
/// for every callback waiting (group commit) and then reports them durable. The core goes on
/// meanwhile (e.g. replicates the entries to followers while the local fsync runs), and counts
/// its own copy only once the callback fired.
#[derive(Clone)]
struct WalFlusher {
    pending: std::sync::mpsc::Sender<LogFlushed<TypeConfig>>,
}

impl WalFlusher {
    fn start(db: Arc<DB>) -> io::Result<Self> {
        let (pending, waiting) = std::sync::mpsc::channel::<LogFlushed<TypeConfig>>();
        std::thread::Builder::new()
            .name("raft-wal-sync".into())
            .spawn(move || {
                // Ends when the last log store handle is dropped.
                while let Ok(first) = waiting.recv() {
                    let mut callbacks = vec![first];
                    callbacks.extend(waiting.try_iter());
                    let synced = db.flush_wal(true).map_err(|e| e.to_string());
                    for callback in callbacks {
                        callback.log_io_completed(synced.clone().map_err(io::Error::other));
                    }
                }
            })?;
        Ok(Self { pending })
    }
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

fn bad_key() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "log key is not a big-endian u64")
}

impl Storage {
    fn read_log_entries(&self, range: (Bound<u64>, Bound<u64>)) -> io::Result<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let cf = self.cf(CF_LOG)?;
        let mut entries = Vec::new();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&start.to_be_bytes(), Direction::Forward))
        {
            let (key, value) = item.map_err(io::Error::other)?;
            let index = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| bad_key())?);
            if !range.contains(&index) {
                break;
            }
            entries.push(postcard::from_bytes(&value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?);
        }
        Ok(entries)
    }

    fn log_state(&self) -> io::Result<LogState<TypeConfig>> {
        let last_purged_log_id = self.read_meta::<Option<LogId>>(KEY_LAST_PURGED)?.flatten();
        let cf = self.cf(CF_LOG)?;
        let last = match self.db.iterator_cf(cf, IteratorMode::End).next() {
            Some(item) => {
                let (_, value) = item.map_err(io::Error::other)?;
                let entry: Entry<TypeConfig> =
                    postcard::from_bytes(&value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                Some(entry.log_id)
            }
            None => None,
        };
        Ok(LogState {
            last_purged_log_id,
            // Purged entries are gone, so the last log id is never below the last purged one.
            last_log_id: last.max(last_purged_log_id),
        })
    }

    /// Writes entries without syncing: durable once the WAL is synced ([`WalFlusher`]).
    fn append_entries(&self, entries: &[Entry<TypeConfig>]) -> io::Result<()> {
        let cf = self.cf(CF_LOG)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = postcard::to_allocvec(entry).map_err(io::Error::other)?;
            batch.put_cf(cf, entry.log_id.index.to_be_bytes(), bytes);
        }
        self.db.write(batch).map_err(io::Error::other)
    }

    fn truncate_log(&self, from: u64) -> io::Result<()> {
        let cf = self.cf(CF_LOG)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, from.to_be_bytes(), u64::MAX.to_be_bytes());
        batch.delete_cf(cf, u64::MAX.to_be_bytes());
        self.db.write_opt(batch, &Storage::synced()).map_err(io::Error::other)
    }

    fn purge_log(&self, upto: LogId) -> io::Result<()> {
        // The purge mark and the deletion in one batch: a crash never leaves entries at or
        // below the mark.
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META)?, KEY_LAST_PURGED, encode_meta(&Some(upto))?);
        let cf = self.cf(CF_LOG)?;
        batch.delete_range_cf(cf, 0u64.to_be_bytes(), upto.index.saturating_add(1).to_be_bytes());
        if upto.index == u64::MAX {
            batch.delete_cf(cf, u64::MAX.to_be_bytes());
        }
        self.db.write_opt(batch, &Storage::synced()).map_err(io::Error::other)
    }

    fn save_committed(&self, committed: Option<LogId>) -> io::Result<()> {
        // Losing this on a crash only means re-applying from the snapshot; no sync needed.
        let bytes = encode_meta(&committed)?;
        self.db
            .put_cf(self.cf(CF_META)?, KEY_COMMITTED, bytes)
            .map_err(io::Error::other)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        // Recent entries come from the memtable and block cache: a hop to the blocking pool
        // would cost more than the read, on every replication round.
        let range = (range.start_bound().cloned(), range.end_bound().cloned());
        self.storage.read_log_entries(range).map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        self.storage.log_state().map_err(read_err)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let vote = *vote;
        self.storage
            .blocking(move |storage| storage.write_meta(KEY_VOTE, &vote))
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.storage
            .read_meta(KEY_VOTE)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError<NodeId>> {
        // Not synced (a memtable write): cheaper inline than a hop to the blocking pool.
        self.storage.save_committed(committed).map_err(write_err)?;
        if let Some(id) = committed {
            self.committed_index.fetch_max(id.index, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        self.storage
            .read_meta::<Option<LogId>>(KEY_COMMITTED)
            .map(Option::flatten)
            .map_err(read_err)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        // An unsynced write is a memtable insert plus a WAL buffer append: no blocking here.
        if let Err(error) = self.storage.append_entries(&entries) {
            let reported = write_err(io::Error::new(error.kind(), error.to_string()));
            callback.log_io_completed(Err(error));
            return Err(reported);
        }
        self.flusher
            .pending
            .send(callback)
            .map_err(|_| write_err(io::Error::other("the raft WAL sync thread stopped")))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        self.storage
            .blocking(move |storage| storage.truncate_log(log_id.index))
            .await
            .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        self.storage
            .blocking(move |storage| storage.purge_log(log_id))
            .await
            .map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_ids_are_random_and_survive_restarts() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (storage_a, id_a) = Storage::open(a.path(), "n1").unwrap();
        let (_storage_b, id_b) = Storage::open(b.path(), "n1").unwrap();
        assert_ne!(id_a, 0);
        assert_ne!(id_a, id_b, "two stores created at once get different ids");
        drop(storage_a);
        let (_, reopened) = Storage::open(a.path(), "n1").unwrap();
        assert_eq!(reopened, id_a);
    }

    #[test]
    fn a_store_from_before_random_ids_keeps_its_creation_time_as_id() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = Storage::open(dir.path(), "n1").unwrap();
        let marker: StorageMarker = storage.read_meta(KEY_STORAGE_MARKER).unwrap().unwrap();
        storage
            .db
            .delete_cf(storage.cf(CF_META).unwrap(), KEY_STORAGE_ID)
            .unwrap();
        drop(storage);
        let (_, id) = Storage::open(dir.path(), "n1").unwrap();
        assert_eq!(id, marker.created_at_millis);
    }

    #[test]
    fn a_purge_leaves_no_entry_at_or_below_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = Storage::open(dir.path(), "n1").unwrap();
        let id = |index| LogId::new(openraft::CommittedLeaderId::new(1, 1), index);
        let entries: Vec<Entry<TypeConfig>> = (1..=5)
            .map(|i| Entry {
                log_id: id(i),
                payload: openraft::EntryPayload::Blank,
            })
            .collect();
        storage.append_entries(&entries).unwrap();
        storage.purge_log(id(3)).unwrap();
        let state = storage.log_state().unwrap();
        assert_eq!(state.last_purged_log_id, Some(id(3)));
        assert_eq!(state.last_log_id, Some(id(5)));
        let left = storage.read_log_entries((Bound::Unbounded, Bound::Unbounded)).unwrap();
        assert_eq!(left.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), vec![4, 5]);
        storage.purge_log(id(9)).unwrap();
        let state = storage.log_state().unwrap();
        assert_eq!(state.last_log_id, Some(id(9)), "an empty log ends at the purge mark");
    }
}
