//! The replicated key-value state: applied entries in memory, persisted through snapshots.
//!
//! A restart restores the latest snapshot and re-applies the committed log after it, so
//! memory never holds anything the log and snapshot do not.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError,
};
use restate_types::metadata::{NODES_CONFIG_KEY, NodesConfiguration, VersionedValue};
use serde::{Deserialize, Serialize};

use crate::raft_types::{Command, CommandResult, LogId, MemberNode, NodeId, StoredMembership, TypeConfig};
use crate::storage::{Storage, StoredSnapshot};

/// What the state machine holds; also the snapshot format.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KvState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub entries: BTreeMap<String, VersionedValue>,
    /// Write id of each key's current value, for clients resolving an interrupted write.
    pub writers: BTreeMap<String, u64>,
}

impl KvState {
    fn apply(&mut self, command: Command) -> CommandResult {
        match command {
            Command::Put {
                key,
                value,
                precondition,
                write_id,
            } => {
                let current = self.entries.get(&key).map(|v| v.version);
                if let Err(reason) = precondition.check(current) {
                    return CommandResult::PreconditionFailed {
                        actual: current,
                        reason,
                    };
                }
                if let Some(current) = current
                    && value.version <= current
                {
                    return CommandResult::PreconditionFailed {
                        actual: Some(current),
                        reason: format!(
                            "versions only grow: the new version {} is not above the stored version {}",
                            value.version.0, current.0
                        ),
                    };
                }
                match write_id {
                    0 => self.writers.remove(&key),
                    id => self.writers.insert(key.clone(), id),
                };
                self.entries.insert(key, value);
                CommandResult::Applied
            }
            Command::Delete { key, precondition } => {
                let current = self.entries.get(&key).map(|v| v.version);
                if let Err(reason) = precondition.check(current) {
                    return CommandResult::PreconditionFailed {
                        actual: current,
                        reason,
                    };
                }
                self.entries.remove(&key);
                self.writers.remove(&key);
                CommandResult::Applied
            }
        }
    }

    /// The cluster fingerprint, once `nodes_config` is stored.
    pub fn fingerprint(&self) -> Option<u64> {
        let value = self.entries.get(NODES_CONFIG_KEY)?;
        serde_json::from_slice::<NodesConfiguration>(&value.value)
            .ok()
            .map(|nodes| nodes.cluster_fingerprint.0)
    }
}

/// Shared view of the state machine, read by the gRPC service after a read-index barrier.
#[derive(Clone, Default)]
pub struct SharedState {
    state: Arc<RwLock<KvState>>,
    /// Cached fingerprint, so every request can check it without decoding.
    fingerprint: Arc<AtomicU64>,
    /// Index of the latest snapshot, for status reports.
    snapshot_index: Arc<AtomicU64>,
}

impl SharedState {
    pub fn read(&self) -> RwLockReadGuard<'_, KvState> {
        self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, KvState> {
        self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn fingerprint(&self) -> u64 {
        self.fingerprint.load(Ordering::Relaxed)
    }

    pub fn fingerprint_handle(&self) -> Arc<AtomicU64> {
        self.fingerprint.clone()
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_index.load(Ordering::Relaxed)
    }

    fn refresh_fingerprint(&self, state: &KvState) {
        if let Some(fingerprint) = state.fingerprint() {
            self.fingerprint.store(fingerprint, Ordering::Relaxed);
        }
    }
}

/// openraft's view of the state machine.
pub struct StateMachine {
    shared: SharedState,
    storage: Storage,
}

fn snapshot_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(None, &e).into()
}

impl StateMachine {
    /// Restores the latest snapshot, if any.
    pub fn open(storage: Storage, shared: SharedState) -> std::io::Result<Self> {
        if let Some(snapshot) = storage.snapshot()? {
            let state: KvState = postcard::from_bytes(&snapshot.data)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            shared.refresh_fingerprint(&state);
            shared
                .snapshot_index
                .store(snapshot.meta.last_log_id.map_or(0, |id| id.index), Ordering::Relaxed);
            *shared.write() = state;
        }
        Ok(Self { shared, storage })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError<NodeId>> {
        let state = self.shared.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        let mut nodes_config_changed = false;
        {
            let mut state = self.shared.write();
            for entry in entries {
                state.last_applied = Some(entry.log_id);
                let result = match entry.payload {
                    EntryPayload::Blank => CommandResult::NoCommand,
                    EntryPayload::Normal(command) => {
                        nodes_config_changed |= matches!(&command, Command::Put { key, .. } if key == NODES_CONFIG_KEY);
                        state.apply(command)
                    }
                    EntryPayload::Membership(membership) => {
                        state.membership = StoredMembership::new(Some(entry.log_id), membership);
                        CommandResult::NoCommand
                    }
                };
                results.push(result);
            }
            if nodes_config_changed {
                self.shared.refresh_fingerprint(&state);
            }
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
            storage: self.storage.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, MemberNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let state: KvState =
            postcard::from_bytes(&data).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        self.storage
            .set_snapshot(&StoredSnapshot {
                meta: meta.clone(),
                data,
            })
            .map_err(snapshot_err)?;
        self.shared.refresh_fingerprint(&state);
        self.shared
            .snapshot_index
            .store(meta.last_log_id.map_or(0, |id| id.index), Ordering::Relaxed);
        *self.shared.write() = state;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let stored = self
            .storage
            .snapshot()
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(stored.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

/// Builds a snapshot of the current state and persists it (synced) before handing it out.
pub struct SnapshotBuilder {
    shared: SharedState,
    storage: Storage,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (data, last_applied, membership) = {
            let state = self.shared.read();
            let data = postcard::to_allocvec(&*state).map_err(snapshot_err)?;
            (data, state.last_applied, state.membership.clone())
        };
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, data.len()),
            None => format!("empty-{}", data.len()),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        self.storage
            .set_snapshot(&StoredSnapshot {
                meta: meta.clone(),
                data: data.clone(),
            })
            .map_err(snapshot_err)?;
        self.shared
            .snapshot_index
            .store(last_applied.map_or(0, |id| id.index), Ordering::Relaxed);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

#[cfg(test)]
mod tests {
    use restate_types::metadata::{Precondition, Version};

    use super::*;

    fn put(key: &str, version: u32, precondition: Precondition) -> Command {
        Command::Put {
            key: key.into(),
            value: VersionedValue::new(Version(version), b"x".to_vec()),
            precondition,
            write_id: 0,
        }
    }

    #[test]
    fn preconditions_are_checked_on_apply_and_versions_only_grow() {
        let mut state = KvState::default();
        assert!(matches!(
            state.apply(put("k", 1, Precondition::DoesNotExist)),
            CommandResult::Applied
        ));
        assert!(matches!(
            state.apply(put("k", 2, Precondition::DoesNotExist)),
            CommandResult::PreconditionFailed {
                actual: Some(Version(1)),
                ..
            }
        ));
        assert!(matches!(
            state.apply(put("k", 2, Precondition::MatchesVersion(Version(1)))),
            CommandResult::Applied
        ));
        match state.apply(put("k", 2, Precondition::None)) {
            CommandResult::PreconditionFailed { reason, .. } => {
                assert!(reason.contains("versions only grow"), "{reason}")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(state.entries["k"].version, Version(2));
    }
}
