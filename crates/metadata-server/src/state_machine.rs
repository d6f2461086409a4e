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
use crate::storage::{SnapshotWrite, Storage, StoredSnapshot};

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
    /// Restores the latest snapshot, if any. Blocks (reads and decodes the snapshot): call it
    /// off the async runtime.
    pub fn open(storage: Storage, shared: SharedState) -> std::io::Result<Self> {
        if let Some(snapshot) = storage.snapshot()? {
            let state: KvState = postcard::from_bytes(&snapshot.data)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            shared.refresh_fingerprint(&state);
            shared.note_snapshot(snapshot.meta.last_log_id);
            *shared.write() = state;
        }
        Ok(Self { shared, storage })
    }
}

impl SharedState {
    /// Records the index of a newly stored snapshot; a racing older one never lowers it.
    fn note_snapshot(&self, last_log_id: Option<LogId>) {
        self.snapshot_index
            .fetch_max(last_log_id.map_or(0, |id| id.index), Ordering::Relaxed);
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
        // In memory only: no I/O here.
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
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        let signature = meta.signature();
        // Decoding and the synced write block: both run on the blocking pool.
        let (state, write) = self
            .storage
            .blocking(move |storage| {
                let state: KvState = postcard::from_bytes(&stored.data)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                let write = storage.store_snapshot_if_newer(&stored)?;
                Ok((state, write))
            })
            .await
            .map_err(|e| StorageError::from(StorageIOError::write_snapshot(Some(signature), &e)))?;
        match write {
            SnapshotWrite::Stored => self.shared.note_snapshot(meta.last_log_id),
            SnapshotWrite::Kept(kept) => tracing::warn!(
                installed = %meta.snapshot_id,
                kept = %kept.meta.snapshot_id,
                "installing a snapshot that is not newer than the stored one; the stored one is kept"
            ),
        }
        self.shared.refresh_fingerprint(&state);
        *self.shared.write() = state;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let stored = self
            .storage
            .blocking(|storage| storage.snapshot())
            .await
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

impl SnapshotBuilder {
    /// Encodes the applied state and stores it unless a newer snapshot is stored meanwhile
    /// (then that one is returned). Blocking: runs on the blocking pool.
    fn build(shared: &SharedState, storage: &Storage) -> std::io::Result<StoredSnapshot> {
        let (data, last_applied, membership) = {
            let state = shared.read();
            let data = postcard::to_allocvec(&*state).map_err(std::io::Error::other)?;
            (data, state.last_applied, state.membership.clone())
        };
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, data.len()),
            None => format!("empty-{}", data.len()),
        };
        let snapshot = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: last_applied,
                last_membership: membership,
                snapshot_id,
            },
            data,
        };
        match storage.store_snapshot_if_newer(&snapshot)? {
            SnapshotWrite::Stored => {
                shared.note_snapshot(last_applied);
                Ok(snapshot)
            }
            SnapshotWrite::Kept(newer) => {
                tracing::debug!(
                    built = %snapshot.meta.snapshot_id,
                    kept = %newer.meta.snapshot_id,
                    "a newer snapshot was stored while this one was built; keeping the newer one"
                );
                Ok(newer)
            }
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let shared = self.shared.clone();
        let stored = self
            .storage
            .blocking(move |storage| SnapshotBuilder::build(&shared, storage))
            .await
            .map_err(snapshot_err)?;
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Membership};
    use restate_types::metadata::{Precondition, Version};

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn entry(term: u64, index: u64, command: Command) -> Entry<TypeConfig> {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Normal(command),
        }
    }

    /// A snapshot build that read the state at index 3 finishes after a snapshot at index 10
    /// was installed (and the log purged up to it). The old builder overwrote the installed
    /// snapshot with its older one, leaving a gap between the snapshot (3) and the log (11…).
    #[tokio::test]
    async fn a_snapshot_build_racing_an_install_never_replaces_the_newer_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, _) = Storage::open(dir.path(), "n1").unwrap();
        let mut state_machine = StateMachine::open(storage.clone(), SharedState::default()).unwrap();
        state_machine
            .apply((1..=3).map(|i| entry(1, i, put(&format!("k{i}"), 1, Precondition::None))))
            .await
            .unwrap();
        // The builder's view: the state as it was when the build started (index 3).
        let stale_view = SharedState::default();
        *stale_view.write() = state_machine.shared.read().clone();
        let mut builder = SnapshotBuilder {
            shared: stale_view,
            storage: storage.clone(),
        };

        // Meanwhile the leader sends a snapshot at index 10, which is installed.
        let mut leader_state = KvState {
            last_applied: Some(log_id(2, 10)),
            membership: StoredMembership::new(Some(log_id(1, 1)), Membership::new(vec![[1].into()], ())),
            ..KvState::default()
        };
        leader_state.apply(put("installed", 1, Precondition::None));
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(2, 10)),
            last_membership: leader_state.membership.clone(),
            snapshot_id: "leader-10".into(),
        };
        let data = postcard::to_allocvec(&leader_state).unwrap();
        state_machine
            .install_snapshot(&meta, Box::new(Cursor::new(data)))
            .await
            .unwrap();

        // Now the build finishes: it must not overwrite the installed snapshot.
        let built = builder.build_snapshot().await.unwrap();
        assert_eq!(
            built.meta.last_log_id,
            Some(log_id(2, 10)),
            "the newer snapshot is handed out"
        );
        let stored = storage.snapshot().unwrap().unwrap();
        assert_eq!(stored.meta.snapshot_id, "leader-10");
        assert_eq!(state_machine.shared.snapshot_index(), 10);

        // A restart restores the installed snapshot.
        let restarted = SharedState::default();
        StateMachine::open(storage.clone(), restarted.clone()).unwrap();
        assert_eq!(restarted.read().last_applied, Some(log_id(2, 10)));
        assert!(restarted.read().entries.contains_key("installed"));

        // An equal snapshot does not replace the stored one either; a newer one does.
        let mut builder = state_machine.get_snapshot_builder().await;
        let again = builder.build_snapshot().await.unwrap();
        assert_eq!(again.meta.snapshot_id, "leader-10");
        state_machine
            .apply([entry(2, 11, put("later", 1, Precondition::None))])
            .await
            .unwrap();
        let newer = builder.build_snapshot().await.unwrap();
        assert_eq!(newer.meta.last_log_id, Some(log_id(2, 11)));
        assert_eq!(
            storage.snapshot().unwrap().unwrap().meta.last_log_id,
            Some(log_id(2, 11))
        );
        assert_eq!(state_machine.shared.snapshot_index(), 11);
    }

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
