//! The partition store: the state of every partition this node runs, in one RocksDB database
//! (`<node-dir>/db/`) with one column family per partition.
//!
//! Only a partition's state machine writes here, and it writes through a [`Txn`]: an overlay
//! of the changes of a batch of log records, committed in one RocksDB write together with the
//! applied LSN, so the store never holds the effects of a record without knowing it applied
//! it. Its own write-ahead log is written without fsync: the Bifrost log is what makes state
//! durable, and a processor that lost unflushed writes replays the records after its applied
//! LSN. Readers outside the state machine (the leader starting an attempt, queries) only read.

mod keys;
mod store;

pub use keys::{Key, TableKind, read_u32, read_u64};
pub use store::{Entry, Exported, PartitionStore, PartitionStoreError, PartitionStores, Txn};

/// Directory of the partition store inside the node directory.
pub const PARTITION_STORE_DIR: &str = "db";
