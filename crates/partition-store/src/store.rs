//! RocksDB access: one database, one column family per partition, batched commits.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, ReadOptions, WriteBatch,
    WriteBufferManager, WriteOptions,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::keys::Key;

#[derive(Debug, thiserror::Error)]
pub enum PartitionStoreError {
    #[error("partition store {path}: {source}")]
    Open { path: String, source: rocksdb::Error },
    #[error("partition store: {0}")]
    Io(#[from] rocksdb::Error),
    #[error("partition store: the column family of partition {0} is missing")]
    MissingPartition(u16),
    #[error("partition store: value under {table:?} does not decode: {reason}")]
    Corrupt { table: String, reason: String },
    #[error("partition store: partition {0} holds nothing to export yet")]
    Empty(u16),
}

/// What [`PartitionStore::export`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    pub entries: u64,
    /// Bytes of the SST file.
    pub size: u64,
}

/// Memory the partition stores share, however many partitions there are: one write-buffer
/// budget and one block cache instead of per-column-family defaults times 24.
const SHARED_WRITE_BUFFER_BYTES: usize = 64 << 20;
const BLOCK_CACHE_BYTES: usize = 32 << 20;
const PER_PARTITION_WRITE_BUFFER_BYTES: usize = 8 << 20;

/// A raw key and value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The first key after every key that starts with `prefix` (`None`: there is none).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Read options for iterating the keys under `prefix`: the iterator stops at the prefix's end
/// instead of wading through whatever follows it (deleted keys of another table included,
/// which RocksDB would step over one by one).
fn prefix_read(prefix: &[u8]) -> ReadOptions {
    let mut options = ReadOptions::default();
    if let Some(end) = prefix_end(prefix) {
        options.set_iterate_upper_bound(end);
    }
    options
}

/// The partition stores of this node.
#[derive(Clone)]
pub struct PartitionStores {
    db: Arc<DB>,
}

fn cf_name(partition: u16) -> String {
    format!("partition-{partition}")
}

impl PartitionStores {
    /// Opens (creating if needed) the database with a column family for each partition.
    pub fn open(path: &Path, partitions: impl IntoIterator<Item = u16>) -> Result<Self, PartitionStoreError> {
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let buffers =
            WriteBufferManager::new_write_buffer_manager_with_cache(SHARED_WRITE_BUFFER_BYTES, false, cache.clone());
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        // The state machine asks for many keys that do not exist (is this completion in the
        // journal yet, is this invocation indexed as running): a filter answers those without
        // reading blocks.
        table.set_bloom_filter(10.0, false);
        let mut cf_options = Options::default();
        cf_options.set_block_based_table_factory(&table);
        cf_options.set_write_buffer_size(PER_PARTITION_WRITE_BUFFER_BYTES);
        cf_options.set_max_write_buffer_number(2);
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_max_background_jobs(2);
        options.set_keep_log_file_num(3);
        options.set_write_buffer_manager(&buffers);
        let descriptors: Vec<_> = partitions
            .into_iter()
            .map(|p| ColumnFamilyDescriptor::new(cf_name(p), cf_options.clone()))
            .collect();
        let db = DB::open_cf_descriptors(&options, path, descriptors).map_err(|source| PartitionStoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self { db: Arc::new(db) })
    }

    /// The store of one partition.
    pub fn partition(&self, partition: u16) -> Result<PartitionStore, PartitionStoreError> {
        if self.db.cf_handle(&cf_name(partition)).is_none() {
            return Err(PartitionStoreError::MissingPartition(partition));
        }
        Ok(PartitionStore {
            db: self.db.clone(),
            cf: cf_name(partition),
            partition,
        })
    }
}

/// The store of one partition; cheap to clone.
#[derive(Clone)]
pub struct PartitionStore {
    db: Arc<DB>,
    cf: String,
    partition: u16,
}

impl PartitionStore {
    pub fn partition_id(&self) -> u16 {
        self.partition
    }

    /// Writes what this partition's store holds in memory to disk (a flush of its column
    /// family, fsynced): what the partition applied before the call survives a crash of the
    /// machine from then on, not only a crash of the process (the write-ahead log is written
    /// without an fsync). A flush that fails for want of space is retried by RocksDB itself
    /// once space returns, as its own flushes are.
    pub fn persist(&self) -> Result<(), PartitionStoreError> {
        self.db.flush_cf(self.handle()?)?;
        Ok(())
    }

    fn handle(&self) -> Result<&rocksdb::ColumnFamily, PartitionStoreError> {
        // Column families are never dropped while the database is open.
        self.db
            .cf_handle(&self.cf)
            .ok_or(PartitionStoreError::MissingPartition(self.partition))
    }

    pub fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, PartitionStoreError> {
        Ok(self.db.get_cf(self.handle()?, key)?)
    }

    /// Typed read of one value.
    pub fn get<T: DeserializeOwned>(&self, key: &Key) -> Result<Option<T>, PartitionStoreError> {
        self.get_raw(key.as_bytes())?
            .map(|bytes| decode(key, &bytes))
            .transpose()
    }

    /// Every entry whose key starts with `prefix`, in key order.
    pub fn scan_raw(&self, prefix: &[u8]) -> Result<Vec<Entry>, PartitionStoreError> {
        let handle = self.handle()?;
        let mut entries = Vec::new();
        for item in self.db.iterator_cf_opt(
            handle,
            prefix_read(prefix),
            IteratorMode::From(prefix, Direction::Forward),
        ) {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            entries.push((key.to_vec(), value.to_vec()));
        }
        Ok(entries)
    }

    /// Up to `limit` entries under `prefix` from the key `from` on (inclusive), in key order:
    /// for walking a large table in bounded steps.
    pub fn scan_from(&self, prefix: &[u8], from: &[u8], limit: usize) -> Result<Vec<Entry>, PartitionStoreError> {
        let handle = self.handle()?;
        let start = if from < prefix { prefix } else { from };
        let mut entries = Vec::new();
        for item in self.db.iterator_cf_opt(
            handle,
            prefix_read(prefix),
            IteratorMode::From(start, Direction::Forward),
        ) {
            let (key, value) = item?;
            if !key.starts_with(prefix) || entries.len() >= limit {
                break;
            }
            entries.push((key.to_vec(), value.to_vec()));
        }
        Ok(entries)
    }

    /// Writes everything the partition holds, as of one moment, into a new SST file at `path`
    /// (the contents of a snapshot). An empty partition has nothing to export.
    pub fn export(&self, path: &Path) -> Result<Exported, PartitionStoreError> {
        let handle = self.handle()?;
        let snapshot = self.db.snapshot();
        let mut read = ReadOptions::default();
        read.set_snapshot(&snapshot);
        let options = Options::default();
        let mut writer = rocksdb::SstFileWriter::create(&options);
        writer.open(path)?;
        let mut entries = 0u64;
        for item in self.db.iterator_cf_opt(handle, read, IteratorMode::Start) {
            let (key, value) = item?;
            writer.put(&key, &value)?;
            entries += 1;
        }
        if entries == 0 {
            return Err(PartitionStoreError::Empty(self.partition));
        }
        writer.finish()?;
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Ok(Exported { entries, size })
    }

    /// Replaces everything the partition holds with the contents of an SST file written by
    /// [`Self::export`] (restoring a snapshot). The file is moved into the store.
    pub fn import(&self, path: &Path) -> Result<(), PartitionStoreError> {
        let handle = self.handle()?;
        // What the partition held goes: every key up to and including its last one.
        if let Some(last) = self.db.iterator_cf(handle, IteratorMode::End).next() {
            let (last, _) = last?;
            let mut end = last.to_vec();
            end.push(0);
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(handle, [].as_slice(), end.as_slice());
            self.db.write(batch)?;
        }
        let mut options = rocksdb::IngestExternalFileOptions::default();
        options.set_move_files(true);
        self.db.ingest_external_file_cf_opts(handle, &options, vec![path])?;
        Ok(())
    }

    /// Everything in the partition, for comparing two replicas byte for byte.
    pub fn dump(&self) -> Result<Vec<Entry>, PartitionStoreError> {
        self.scan_raw(&[])
    }

    /// A transaction over this store; nothing is written before [`Txn::commit`].
    pub fn txn(&self) -> Txn<'_> {
        Txn {
            store: self,
            overlay: BTreeMap::new(),
        }
    }
}

fn decode<T: DeserializeOwned>(key: &Key, bytes: &[u8]) -> Result<T, PartitionStoreError> {
    postcard::from_bytes(bytes).map_err(|e| PartitionStoreError::Corrupt {
        table: String::from_utf8_lossy(&key.as_bytes()[..2.min(key.as_bytes().len())]).into_owned(),
        reason: e.to_string(),
    })
}

/// Changes of a batch of records: reads see them at once, the store only on commit.
pub struct Txn<'a> {
    store: &'a PartitionStore,
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Txn<'_> {
    pub fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, PartitionStoreError> {
        match self.overlay.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.store.get_raw(key),
        }
    }

    pub fn get<T: DeserializeOwned>(&self, key: &Key) -> Result<Option<T>, PartitionStoreError> {
        self.get_raw(key.as_bytes())?
            .map(|bytes| decode(key, &bytes))
            .transpose()
    }

    pub fn contains(&self, key: &Key) -> Result<bool, PartitionStoreError> {
        Ok(self.get_raw(key.as_bytes())?.is_some())
    }

    pub fn put_raw(&mut self, key: Key, value: Vec<u8>) {
        self.overlay.insert(key.into_bytes(), Some(value));
    }

    pub fn put<T: Serialize>(&mut self, key: Key, value: &T) {
        // Our own types always serialize: postcard only fails on unsupported serde shapes.
        let bytes = postcard::to_stdvec(value).unwrap_or_default();
        self.put_raw(key, bytes);
    }

    pub fn delete(&mut self, key: Key) {
        self.overlay.insert(key.into_bytes(), None);
    }

    /// Entries under `prefix` as the transaction sees them, in key order.
    pub fn scan_raw(&self, prefix: &[u8]) -> Result<Vec<Entry>, PartitionStoreError> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = self.store.scan_raw(prefix)?.into_iter().collect();
        let range = self
            .overlay
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix));
        for (key, value) in range {
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().collect())
    }

    /// The first entry under `prefix` at or after the key `from`, as the transaction sees it.
    /// Reads the store only up to the first key this transaction did not delete, so taking
    /// the head of a long queue costs one entry, not the queue.
    pub fn first_from(&self, prefix: &[u8], from: &[u8]) -> Result<Option<Entry>, PartitionStoreError> {
        let start = if from < prefix { prefix } else { from };
        let handle = self.store.handle()?;
        let mut stored = None;
        for item in self.store.db.iterator_cf_opt(
            handle,
            prefix_read(prefix),
            IteratorMode::From(start, Direction::Forward),
        ) {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            match self.overlay.get(&*key) {
                Some(None) => continue,
                Some(Some(changed)) => stored = Some((key.to_vec(), changed.clone())),
                None => stored = Some((key.to_vec(), value.to_vec())),
            }
            break;
        }
        let written = self
            .overlay
            .range::<[u8], _>((Bound::Included(start), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .find_map(|(key, value)| value.as_ref().map(|value| (key.clone(), value.clone())));
        Ok(match (stored, written) {
            (Some(stored), Some(written)) => Some(if written.0 < stored.0 { written } else { stored }),
            (stored, written) => stored.or(written),
        })
    }

    /// Deletes every entry under `prefix`.
    pub fn delete_prefix(&mut self, prefix: &[u8]) -> Result<(), PartitionStoreError> {
        for (key, _) in self.scan_raw(prefix)? {
            self.overlay.insert(key, None);
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.overlay.is_empty()
    }

    /// Writes all changes in one batch. Not fsynced: the log is the durability.
    pub fn commit(self) -> Result<(), PartitionStoreError> {
        if self.overlay.is_empty() {
            return Ok(());
        }
        let handle = self.store.handle()?;
        let mut batch = WriteBatch::default();
        for (key, value) in &self.overlay {
            match value {
                Some(value) => batch.put_cf(handle, key, value),
                None => batch.delete_cf(handle, key),
            }
        }
        let mut options = WriteOptions::default();
        options.set_sync(false);
        self.store.db.write_opt(batch, &options)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::TableKind;

    #[test]
    fn a_prefix_ends_after_its_last_key() {
        assert_eq!(prefix_end(b"iv"), Some(b"iw".to_vec()));
        assert_eq!(prefix_end(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }

    #[test]
    fn first_from_skips_what_the_transaction_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartitionStores::open(dir.path(), [0]).unwrap().partition(0).unwrap();
        let key = |n: u64| Key::new(TableKind::Inbox).str("q").u64(n);
        let mut txn = store.txn();
        for n in 1..=5 {
            txn.put(key(n), &n);
        }
        txn.commit().unwrap();
        let mut txn = store.txn();
        txn.delete(key(1));
        txn.delete(key(2));
        let prefix = Key::new(TableKind::Inbox).str("q");
        let first = txn.first_from(prefix.as_bytes(), prefix.as_bytes()).unwrap().unwrap();
        assert_eq!(first.0, key(3).into_bytes());
        let after_four = txn.first_from(prefix.as_bytes(), key(5).as_bytes()).unwrap().unwrap();
        assert_eq!(after_four.0, key(5).into_bytes());
        assert!(txn.first_from(prefix.as_bytes(), key(6).as_bytes()).unwrap().is_none());
    }

    #[test]
    fn a_transaction_reads_its_own_writes_and_commits_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let stores = PartitionStores::open(dir.path(), [0, 1]).unwrap();
        let store = stores.partition(0).unwrap();
        let mut txn = store.txn();
        txn.put(Key::new(TableKind::State).str("a"), &1u64);
        txn.put(Key::new(TableKind::State).str("b"), &2u64);
        assert_eq!(txn.get::<u64>(&Key::new(TableKind::State).str("a")).unwrap(), Some(1));
        assert_eq!(store.get::<u64>(&Key::new(TableKind::State).str("a")).unwrap(), None);
        txn.commit().unwrap();
        let mut txn = store.txn();
        txn.delete(Key::new(TableKind::State).str("a"));
        txn.put(Key::new(TableKind::State).str("c"), &3u64);
        let seen: Vec<_> = txn.scan_raw(TableKind::State.prefix()).unwrap();
        assert_eq!(seen.len(), 2);
        txn.commit().unwrap();
        assert_eq!(store.scan_raw(TableKind::State.prefix()).unwrap().len(), 2);
        // Partitions do not see each other.
        assert!(stores.partition(1).unwrap().dump().unwrap().is_empty());
        assert!(stores.partition(2).is_err());
    }

    #[test]
    fn an_export_imported_elsewhere_replaces_what_was_there() {
        let dir = tempfile::tempdir().unwrap();
        let stores = PartitionStores::open(&dir.path().join("a"), [0]).unwrap();
        let source = stores.partition(0).unwrap();
        let sst = dir.path().join("snapshot.sst");
        assert!(matches!(source.export(&sst), Err(PartitionStoreError::Empty(0))));
        let mut txn = source.txn();
        for i in 0..100u64 {
            txn.put(Key::new(TableKind::State).str(&format!("key-{i:03}")), &i);
        }
        txn.commit().unwrap();
        let exported = source.export(&sst).unwrap();
        assert_eq!(exported.entries, 100);
        assert!(exported.size > 0);

        let other = PartitionStores::open(&dir.path().join("b"), [0]).unwrap();
        let target = other.partition(0).unwrap();
        let mut stale = target.txn();
        stale.put(Key::new(TableKind::State).str("stale"), &1u64);
        stale.put(Key::new(TableKind::Invoked).str("stale"), &1u64);
        stale.commit().unwrap();
        target.import(&sst).unwrap();
        assert_eq!(target.dump().unwrap(), source.dump().unwrap());
    }
}
