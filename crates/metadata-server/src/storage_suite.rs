//! openraft's storage conformance suite against the RocksDB log store and state machine.

use openraft::testing::{StoreBuilder, Suite};
use openraft::{StorageError, StorageIOError};
use tempfile::TempDir;

use crate::raft_types::{NodeId, TypeConfig};
use crate::state_machine::{SharedState, StateMachine};
use crate::storage::{LogStore, Storage};

/// A fresh store in its own temporary directory for every suite case.
struct RocksStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RocksStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let io = |e: std::io::Error| StorageError::from(StorageIOError::write(&e));
        let dir = tempfile::tempdir().map_err(io)?;
        let (storage, _) = Storage::open(dir.path(), "suite").map_err(|e| io(std::io::Error::other(e)))?;
        let (log_store, state_machine) = storage
            .blocking(|storage| {
                Ok((
                    storage.log_store()?,
                    StateMachine::open(storage.clone(), SharedState::default())?,
                ))
            })
            .await
            .map_err(io)?;
        Ok((dir, log_store, state_machine))
    }
}

#[test]
fn openraft_storage_suite() {
    // Each case builds a fresh store and runs on its own multi-threaded runtime.
    if let Err(error) = Suite::test_all(RocksStoreBuilder) {
        panic!("the RocksDB storage fails openraft's storage suite: {error}");
    }
}
