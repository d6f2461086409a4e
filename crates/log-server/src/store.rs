//! The record store of a log-server: RocksDB under `<node-dir>/log-store/`.
//!
//! Records are keyed `d | loglet id | offset` and carry a CRC32 of their payload, so a corrupt
//! file is detected and reported instead of returned as data. Per-loglet state (seal,
//! sequencer, tails, trim point) is kept in memory and persisted with every write. Writes are
//! group-committed: one synced RocksDB write for all the requests waiting at that moment.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rocksdb::{DB, Direction, IteratorMode, Options, ReadOptions, ReadTier, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

const MARKER_KEY: &[u8] = b"storage-marker";
const DATA_PREFIX: u8 = b'd';
const META_PREFIX: u8 = b'm';

/// Ties the store to a node; a store found missing for a node that used to store records
/// means those records are lost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StorageMarker {
    pub node_name: String,
    pub created_at_millis: u64,
}

/// What the store knows of one loglet.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogletState {
    pub sealed: bool,
    /// The sequencer `(node id, generation)` that owns the loglet, once it stored a record.
    pub sequencer: Option<(u32, u32)>,
    pub trim_point: u32,
    /// One past the highest stored offset.
    pub local_tail: u32,
    pub known_global_tail: u32,
}

/// Why a store was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreRefusal {
    Sealed,
    SequencerMismatch { owner: (u32, u32) },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the log store at {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("log store I/O failed: {0}")]
    Io(String),
}

/// Result of a range read.
pub struct RecordRange {
    pub state: LogletState,
    pub records: Vec<(u32, Vec<u8>)>,
    pub corrupt: Vec<u32>,
}

/// One change to the store.
enum Op {
    Put(Vec<u8>, Vec<u8>),
    DeleteRange(Vec<u8>, Vec<u8>),
}

struct WriteJob {
    ops: Vec<Op>,
    done: oneshot::Sender<Result<(), String>>,
}

/// The log-server's RocksDB store.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    path: PathBuf,
    states: Arc<Mutex<HashMap<u64, LogletState>>>,
    /// Unbounded so a job is queued while the state lock is held: jobs reach the disk in
    /// the order their state changes were made (a seal never overtakes an admitted store).
    writer: mpsc::UnboundedSender<WriteJob>,
    /// The id of every loglet sealed here, as it is sealed: a sequencer on this node stops
    /// waiting for records of a segment another node closed.
    sealed: broadcast::Sender<u64>,
    // Declared last: dropped after `writer`, so the writer thread has seen its channel close.
    _writer_thread: Arc<WriterThread>,
}

/// Joins the writer thread when the last handle to the store goes, so the database is closed
/// (and its lock released) by the time the store is dropped.
struct WriterThread(Mutex<Option<std::thread::JoinHandle<()>>>);

impl Drop for WriterThread {
    fn drop(&mut self) {
        let handle = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

fn data_key(loglet_id: u64, offset: u32) -> [u8; 13] {
    let mut key = [0u8; 13];
    key[0] = DATA_PREFIX;
    key[1..9].copy_from_slice(&loglet_id.to_be_bytes());
    key[9..13].copy_from_slice(&offset.to_be_bytes());
    key
}

fn meta_key(loglet_id: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = META_PREFIX;
    key[1..9].copy_from_slice(&loglet_id.to_be_bytes());
    key
}

fn encode_record(payload: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(4 + payload.len());
    value.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    value.extend_from_slice(payload);
    value
}

/// The payload if its checksum matches.
fn decode_record(value: &[u8]) -> Option<&[u8]> {
    let (checksum, payload) = value.split_at_checked(4)?;
    let expected = u32::from_le_bytes(checksum.try_into().ok()?);
    (crc32fast::hash(payload) == expected).then_some(payload)
}

impl LogStore {
    /// Opens (or creates) the store; returns it with its marker, if it has one.
    pub fn open(path: &Path) -> Result<(Self, Option<StorageMarker>), StoreError> {
        let fail = |reason: String| StoreError::Open {
            path: path.to_owned(),
            reason,
        };
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_max_background_jobs(2);
        options.set_keep_log_file_num(3);
        let db = Arc::new(DB::open(&options, path).map_err(|e| fail(e.to_string()))?);
        let marker = match db.get(MARKER_KEY).map_err(|e| fail(e.to_string()))? {
            Some(bytes) => Some(postcard::from_bytes(&bytes).map_err(|e| fail(format!("unreadable marker: {e}")))?),
            None => None,
        };
        let (writer, jobs) = mpsc::unbounded_channel();
        let thread_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("log-store-writer".into())
            .spawn(move || write_loop(thread_db, jobs))
            .map_err(|e| fail(format!("cannot start the writer thread: {e}")))?;
        let store = Self {
            db,
            path: path.to_owned(),
            states: Arc::default(),
            writer,
            sealed: broadcast::channel(256).0,
            _writer_thread: Arc::new(WriterThread(Mutex::new(Some(thread)))),
        };
        Ok((store, marker))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn write_marker(&self, marker: &StorageMarker) -> Result<(), StoreError> {
        let value = postcard::to_allocvec(marker).map_err(|e| StoreError::Io(e.to_string()))?;
        let written = self.enqueue(vec![Op::Put(MARKER_KEY.to_vec(), value)]);
        Self::durable(written).await
    }

    fn states(&self) -> MutexGuard<'_, HashMap<u64, LogletState>> {
        self.states.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The loglet's state, loading it from disk on first use.
    fn state_of<'a>(
        &self,
        states: &'a mut HashMap<u64, LogletState>,
        loglet_id: u64,
    ) -> Result<&'a mut LogletState, StoreError> {
        match states.entry(loglet_id) {
            std::collections::hash_map::Entry::Occupied(entry) => Ok(entry.into_mut()),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let loaded = match self
                    .db
                    .get(meta_key(loglet_id))
                    .map_err(|e| StoreError::Io(e.to_string()))?
                {
                    Some(bytes) => postcard::from_bytes(&bytes).map_err(|e| StoreError::Io(e.to_string()))?,
                    None => LogletState::default(),
                };
                Ok(entry.insert(loaded))
            }
        }
    }

    fn put_state(ops: &mut Vec<Op>, loglet_id: u64, state: &LogletState) -> Result<(), StoreError> {
        let value = postcard::to_allocvec(state).map_err(|e| StoreError::Io(e.to_string()))?;
        ops.push(Op::Put(meta_key(loglet_id).to_vec(), value));
        Ok(())
    }

    /// Queues a write; called with the state lock held, so writes reach the disk in the
    /// order of the state changes they carry.
    fn enqueue(&self, ops: Vec<Op>) -> oneshot::Receiver<Result<(), String>> {
        let (done, result) = oneshot::channel();
        // A closed channel drops `done`, which `durable` reports.
        let _ = self.writer.send(WriteJob { ops, done });
        result
    }

    /// Waits until a queued write is synced.
    async fn durable(written: oneshot::Receiver<Result<(), String>>) -> Result<(), StoreError> {
        written
            .await
            .map_err(|_| StoreError::Io("the log store writer stopped".into()))?
            .map_err(StoreError::Io)
    }

    /// Stores records from `first_offset` on, durably, unless the loglet is sealed or owned
    /// by another sequencer (a repair ignores both). Returns the local tail afterwards.
    pub async fn store(
        &self,
        loglet_id: u64,
        sequencer: (u32, u32),
        first_offset: u32,
        payloads: &[Vec<u8>],
        known_global_tail: u32,
        repair: bool,
    ) -> Result<Result<u32, StoreRefusal>, StoreError> {
        let (batch, tail) = {
            let mut states = self.states();
            let state = self.state_of(&mut states, loglet_id)?;
            if !repair {
                if state.sealed {
                    return Ok(Err(StoreRefusal::Sealed));
                }
                match state.sequencer {
                    Some(owner) if owner != sequencer => {
                        return Ok(Err(StoreRefusal::SequencerMismatch { owner }));
                    }
                    _ => state.sequencer = Some(sequencer),
                }
            }
            let mut ops = Vec::with_capacity(payloads.len() + 1);
            for (i, payload) in payloads.iter().enumerate() {
                let offset = first_offset + i as u32;
                if offset >= state.trim_point {
                    ops.push(Op::Put(data_key(loglet_id, offset).to_vec(), encode_record(payload)));
                }
            }
            state.local_tail = state.local_tail.max(first_offset + payloads.len() as u32);
            state.known_global_tail = state.known_global_tail.max(known_global_tail);
            Self::put_state(&mut ops, loglet_id, state)?;
            (self.enqueue(ops), state.local_tail)
        };
        Self::durable(batch).await?;
        Ok(Ok(tail))
    }

    /// Seals the loglet (durably): it accepts no more records except repairs. Returns once
    /// every store admitted before the seal is durable too, so the tail it reports is on disk.
    pub async fn seal(&self, loglet_id: u64) -> Result<LogletState, StoreError> {
        let (batch, state) = {
            let mut states = self.states();
            let state = self.state_of(&mut states, loglet_id)?;
            state.sealed = true;
            let mut ops = Vec::new();
            Self::put_state(&mut ops, loglet_id, state)?;
            (self.enqueue(ops), state.clone())
        };
        Self::durable(batch).await?;
        // Nobody listening is fine.
        let _ = self.sealed.send(loglet_id);
        Ok(state)
    }

    /// The ids of loglets sealed from now on.
    pub fn seals(&self) -> broadcast::Receiver<u64> {
        self.sealed.subscribe()
    }

    pub fn state(&self, loglet_id: u64) -> Result<LogletState, StoreError> {
        let mut states = self.states();
        Ok(self.state_of(&mut states, loglet_id)?.clone())
    }

    /// Records stored in `[from, to)`, at most `max`. May read the disk: call it off the async
    /// workers.
    pub fn read(&self, loglet_id: u64, from: u32, to: u32, max: usize) -> Result<RecordRange, StoreError> {
        self.read_with(loglet_id, from, to, max, ReadOptions::default())?
            .ok_or_else(|| StoreError::Io("a read that may touch the disk came back incomplete".into()))
    }

    /// [`LogStore::read`] for async callers. A reader that follows the tail finds what was just
    /// written in the memtable: that is read in place, instead of handing the read to another
    /// thread and waiting to be woken again. A read that would touch the disk goes to the
    /// blocking pool, off the async workers.
    pub async fn read_records(
        &self,
        loglet_id: u64,
        from: u32,
        to: u32,
        max: usize,
    ) -> Result<RecordRange, StoreError> {
        if let Some(range) = self.read_in_memory(loglet_id, from, to, max)? {
            return Ok(range);
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read(loglet_id, from, to, max))
            .await
            .map_err(|e| StoreError::Io(format!("the read stopped: {e}")))?
    }

    /// Like [`LogStore::read`], but only from memory (memtables and the block cache): `None` when
    /// a record would have to come from disk.
    fn read_in_memory(
        &self,
        loglet_id: u64,
        from: u32,
        to: u32,
        max: usize,
    ) -> Result<Option<RecordRange>, StoreError> {
        let mut options = ReadOptions::default();
        options.set_read_tier(ReadTier::BlockCache);
        self.read_with(loglet_id, from, to, max, options)
    }

    fn read_with(
        &self,
        loglet_id: u64,
        from: u32,
        to: u32,
        max: usize,
        mut options: ReadOptions,
    ) -> Result<Option<RecordRange>, StoreError> {
        let state = self.state(loglet_id)?;
        let mut records = Vec::new();
        let mut corrupt = Vec::new();
        let start = data_key(loglet_id, from.max(state.trim_point));
        options.set_iterate_upper_bound(data_key(loglet_id, to).to_vec());
        for item in self
            .db
            .iterator_opt(IteratorMode::From(&start, Direction::Forward), options)
        {
            let (key, value) = match item {
                Ok(entry) => entry,
                Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => return Ok(None),
                Err(e) => return Err(StoreError::Io(e.to_string())),
            };
            if key.len() != 13 || key[0] != DATA_PREFIX || key[1..9] != loglet_id.to_be_bytes() {
                break;
            }
            let offset = u32::from_be_bytes([key[9], key[10], key[11], key[12]]);
            if offset >= to || records.len() + corrupt.len() >= max {
                break;
            }
            match decode_record(&value) {
                Some(payload) => records.push((offset, payload.to_vec())),
                None => {
                    tracing::error!(loglet_id, offset, path = %self.path.display(), "a stored record fails its checksum");
                    corrupt.push(offset);
                }
            }
        }
        Ok(Some(RecordRange {
            state,
            records,
            corrupt,
        }))
    }

    /// Moves the trim point forward (never back) and deletes the records below it.
    pub async fn trim(&self, loglet_id: u64, trim_point: u32) -> Result<LogletState, StoreError> {
        let (batch, state) = {
            let mut states = self.states();
            let state = self.state_of(&mut states, loglet_id)?;
            let mut ops = Vec::new();
            if trim_point > state.trim_point {
                state.trim_point = trim_point;
                ops.push(Op::DeleteRange(
                    data_key(loglet_id, 0).to_vec(),
                    data_key(loglet_id, trim_point).to_vec(),
                ));
            }
            Self::put_state(&mut ops, loglet_id, state)?;
            (self.enqueue(ops), state.clone())
        };
        Self::durable(batch).await?;
        Ok(state)
    }
}

/// Group commit: every job waiting is written in one synced batch.
fn write_loop(db: Arc<DB>, mut jobs: mpsc::UnboundedReceiver<WriteJob>) {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = WriteBatch::default();
        let mut waiting = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            for op in job.ops {
                match op {
                    Op::Put(key, value) => batch.put(key, value),
                    Op::DeleteRange(from, to) => batch.delete_range(from, to),
                }
            }
            waiting.push(job.done);
            if waiting.len() < 256 {
                next = jobs.try_recv().ok();
            }
        }
        let result = db.write_opt(batch, &options).map_err(|e| e.to_string());
        for done in waiting {
            let _ = done.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("record {i}").into_bytes()).collect()
    }

    #[tokio::test]
    async fn seals_and_sequencers_are_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let (store, marker) = LogStore::open(dir.path()).unwrap();
        assert!(marker.is_none());
        assert_eq!(store.store(7, (1, 1), 0, &payloads(3), 0, false).await.unwrap(), Ok(3));
        assert_eq!(
            store.store(7, (2, 1), 3, &payloads(1), 0, false).await.unwrap(),
            Err(StoreRefusal::SequencerMismatch { owner: (1, 1) })
        );
        let sealed = store.seal(7).await.unwrap();
        assert!(sealed.sealed);
        assert_eq!(sealed.local_tail, 3);
        assert_eq!(
            store.store(7, (1, 1), 3, &payloads(1), 0, false).await.unwrap(),
            Err(StoreRefusal::Sealed)
        );
        // A repair may still fill a sealed loglet.
        assert_eq!(store.store(7, (9, 9), 3, &payloads(1), 0, true).await.unwrap(), Ok(4));
        let range = store.read(7, 0, 10, 100).unwrap();
        assert_eq!(range.records.len(), 4);
    }

    #[tokio::test]
    async fn fresh_records_read_from_memory_and_flushed_ones_only_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        // Enough records that the table file has many blocks, none of them cached after a reopen.
        let big: Vec<Vec<u8>> = (0..4000)
            .map(|i| format!("record {i} {}", "x".repeat(1000)).into_bytes())
            .collect();
        {
            let (store, _) = LogStore::open(dir.path()).unwrap();
            store.store(4, (1, 1), 0, &big, 0, false).await.unwrap().unwrap();
            // Just written: in the memtable, read in place, bounded by `to` and `max`.
            let range = store.read_in_memory(4, 1, 4, 100).unwrap().expect("in the memtable");
            let offsets: Vec<u32> = range.records.iter().map(|(offset, _)| *offset).collect();
            assert_eq!(offsets, vec![1, 2, 3]);
            assert_eq!(range.records[0].1, big[1]);
            assert_eq!(store.read_in_memory(4, 0, 5, 2).unwrap().unwrap().records.len(), 2);
            store.db.flush().unwrap();
        }
        // Reopened: the records are only in a table file, whose blocks no cache holds yet.
        let (store, _) = LogStore::open(dir.path()).unwrap();
        assert!(store.read_in_memory(4, 0, 5, 100).unwrap().is_none());
        let range = store.read(4, 0, 5, 100).unwrap();
        assert_eq!(range.records.len(), 5);
        assert_eq!(range.records[4].1, big[4]);
        // Once read from disk, the blocks are cached and the same read stays in memory.
        let cached = store
            .read_in_memory(4, 0, 5, 100)
            .unwrap()
            .expect("now in the block cache");
        assert_eq!(cached.records, range.records);
    }

    #[tokio::test]
    async fn state_and_records_survive_a_reopen_and_trims_delete() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) = LogStore::open(dir.path()).unwrap();
            store
                .store(3, (1, 1), 0, &payloads(10), 4, false)
                .await
                .unwrap()
                .unwrap();
            store.trim(3, 6).await.unwrap();
            store.trim(3, 2).await.unwrap();
            store
                .write_marker(&StorageMarker {
                    node_name: "n1".into(),
                    created_at_millis: 1,
                })
                .await
                .unwrap();
        }
        let (store, marker) = LogStore::open(dir.path()).unwrap();
        assert_eq!(marker.map(|m| m.node_name), Some("n1".to_owned()));
        let state = store.state(3).unwrap();
        assert_eq!(
            (state.local_tail, state.known_global_tail, state.trim_point),
            (10, 4, 6)
        );
        let range = store.read(3, 0, 10, 100).unwrap();
        let offsets: Vec<u32> = range.records.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, vec![6, 7, 8, 9]);
    }

    /// A seal racing stores on other threads: every record below the tail the seal reports
    /// is on disk when the seal returns (a seal may not overtake an admitted store).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_seal_reports_only_durable_records() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = LogStore::open(dir.path()).unwrap();
        for loglet in 0..200u64 {
            let writers: Vec<_> = (0..4u32)
                .map(|w| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        for i in 0..8u32 {
                            let offset = w * 8 + i;
                            let _ = store.store(loglet, (1, 1), offset, &payloads(1), 0, false).await;
                        }
                    })
                })
                .collect();
            tokio::task::yield_now().await;
            let sealed = store.seal(loglet).await.unwrap();
            let present = store.read(loglet, 0, sealed.local_tail, 1000).unwrap();
            let admitted: Vec<u32> = present.records.iter().map(|(o, _)| *o).collect();
            // The highest offset below the reported tail was stored before the seal.
            assert!(
                sealed.local_tail == 0 || admitted.contains(&(sealed.local_tail - 1)),
                "loglet {loglet}: the seal reported tail {} but offset {} is not on disk",
                sealed.local_tail,
                sealed.local_tail - 1
            );
            for writer in writers {
                writer.await.unwrap();
            }
        }
    }

    #[tokio::test]
    async fn corrupt_records_are_reported_not_returned() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = LogStore::open(dir.path()).unwrap();
        store
            .store(5, (1, 1), 0, &payloads(3), 0, false)
            .await
            .unwrap()
            .unwrap();
        let mut damaged = encode_record(b"record 1");
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        store.db.put(data_key(5, 1), damaged).unwrap();
        let range = store.read(5, 0, 3, 100).unwrap();
        assert_eq!(range.corrupt, vec![1]);
        let offsets: Vec<u32> = range.records.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, vec![0, 2]);
    }
}
