//! Read-only views of a partition's tables, for SQL introspection (`crates/storage-query`).
//! They read the partition store directly (RocksDB reads never wait for the processor) and
//! decode the worker's own key and value layouts, so the query engine never needs to know them.

use bytes::Bytes;
use restate_partition_store::{Key, PartitionStoreError, TableKind};
use restate_types::InvocationId;

use crate::handle::PartitionHandle;
use crate::model::{InboxEntry, InvocationStatus, LockHolder, PromiseState};
use crate::state_machine::{decode_entry, entry_appended_at, journal_prefix, status_key};

/// One entry of an object's or workflow's state.
#[derive(Debug, Clone)]
pub struct StateRow {
    pub service: String,
    pub key: String,
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// One entry of a virtual object key's inbox.
#[derive(Debug, Clone)]
pub struct InboxRow {
    pub service: String,
    pub key: String,
    pub sequence_number: u64,
    pub entry: InboxEntry,
}

/// The invocation holding an object key's exclusive lock.
#[derive(Debug, Clone)]
pub struct LockRow {
    pub service: String,
    pub key: String,
    pub holder: InvocationId,
}

/// A workflow's durable promise.
#[derive(Debug, Clone)]
pub struct PromiseRow {
    pub service: String,
    pub key: String,
    pub name: String,
    pub promise: PromiseState,
}

/// One journal entry: its index, protocol message type and payload.
#[derive(Debug, Clone)]
pub struct JournalRow {
    pub index: u32,
    pub message_type: u16,
    pub payload: Bytes,
    /// When it was appended (ms since the epoch).
    pub appended_at: Option<u64>,
}

/// Which (service, key) rows a scan reads: all, one service, or one key of one service.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyScope<'a> {
    pub service: Option<&'a str>,
    /// Only with `service`.
    pub key: Option<&'a str>,
}

impl KeyScope<'_> {
    fn prefix(&self, table: TableKind) -> Key {
        let mut prefix = Key::new(table);
        if let Some(service) = self.service {
            prefix = prefix.str(service);
            if let Some(key) = self.key {
                prefix = prefix.str(key);
            }
        }
        prefix
    }
}

/// Reads a length-prefixed field of a key at `offset`; returns it and the offset after it.
fn read_field(key: &[u8], offset: usize) -> Option<(&[u8], usize)> {
    let len = restate_partition_store::read_u32(key, offset)? as usize;
    let start = offset + 4;
    Some((key.get(start..start + len)?, start + len))
}

/// (service, key, offset of the rest) of a key laid out as table, service, key, ...
fn service_and_key(raw: &[u8]) -> Option<(String, String, usize)> {
    let (service, next) = read_field(raw, 2)?;
    let (key, next) = read_field(raw, next)?;
    Some((
        String::from_utf8_lossy(service).into_owned(),
        String::from_utf8_lossy(key).into_owned(),
        next,
    ))
}

fn corrupt(table: &str, reason: impl ToString) -> PartitionStoreError {
    PartitionStoreError::Corrupt {
        table: table.into(),
        reason: reason.to_string(),
    }
}

impl PartitionHandle {
    /// The status of one invocation of this partition, if it has one.
    pub fn invocation_status(&self, id: &InvocationId) -> Result<Option<InvocationStatus>, PartitionStoreError> {
        self.store.get::<InvocationStatus>(&status_key(id))
    }

    /// Every invocation status of this partition (rows that do not decode are skipped).
    pub fn invocation_statuses(&self) -> Result<Vec<(InvocationId, InvocationStatus)>, PartitionStoreError> {
        let rows = self.store.scan_raw(TableKind::InvocationStatus.prefix())?;
        Ok(rows
            .into_iter()
            .filter_map(|(key, value)| {
                let id = InvocationId::from_raw(&key[2..])?;
                let status = postcard::from_bytes::<InvocationStatus>(&value).ok()?;
                Some((id, status))
            })
            .collect())
    }

    /// The journal of one invocation, in order.
    pub fn journal(&self, id: &InvocationId) -> Result<Vec<JournalRow>, PartitionStoreError> {
        let prefix = journal_prefix(id);
        let offset = prefix.as_bytes().len();
        let mut rows = Vec::new();
        for (key, value) in self.store.scan_raw(prefix.as_bytes())? {
            let index = restate_partition_store::read_u32(&key, offset).ok_or_else(|| corrupt("j2", "short key"))?;
            let (message_type, payload) = decode_entry(&value).ok_or_else(|| corrupt("j2", "short entry"))?;
            rows.push(JournalRow {
                index,
                message_type,
                payload,
                appended_at: entry_appended_at(&value),
            });
        }
        Ok(rows)
    }

    /// State entries of objects and workflows in `scope`.
    pub fn state(&self, scope: KeyScope<'_>) -> Result<Vec<StateRow>, PartitionStoreError> {
        let mut rows = Vec::new();
        for (raw, value) in self.store.scan_raw(scope.prefix(TableKind::State).as_bytes())? {
            let (service, key, next) = service_and_key(&raw).ok_or_else(|| corrupt("st", "bad key"))?;
            rows.push(StateRow {
                service,
                key,
                name: raw[next..].to_vec(),
                value,
            });
        }
        Ok(rows)
    }

    /// Inbox entries of object keys in `scope`, in order per key.
    pub fn inbox(&self, scope: KeyScope<'_>) -> Result<Vec<InboxRow>, PartitionStoreError> {
        let mut rows = Vec::new();
        for (raw, value) in self.store.scan_raw(scope.prefix(TableKind::Inbox).as_bytes())? {
            let (service, key, next) = service_and_key(&raw).ok_or_else(|| corrupt("ib", "bad key"))?;
            let sequence_number = restate_partition_store::read_u64(&raw, next).unwrap_or_default();
            let entry = postcard::from_bytes::<InboxEntry>(&value).map_err(|e| corrupt("ib", e))?;
            rows.push(InboxRow {
                service,
                key,
                sequence_number,
                entry,
            });
        }
        Ok(rows)
    }

    /// Locked object keys in `scope` and who holds each.
    pub fn locks(&self, scope: KeyScope<'_>) -> Result<Vec<LockRow>, PartitionStoreError> {
        let mut rows = Vec::new();
        for (raw, value) in self.store.scan_raw(scope.prefix(TableKind::ServiceLock).as_bytes())? {
            let (service, key, _) = service_and_key(&raw).ok_or_else(|| corrupt("ss", "bad key"))?;
            let holder = postcard::from_bytes::<LockHolder>(&value).map_err(|e| corrupt("ss", e))?;
            rows.push(LockRow {
                service,
                key,
                holder: holder.id,
            });
        }
        Ok(rows)
    }

    /// Durable promises of workflows in `scope`.
    pub fn promises(&self, scope: KeyScope<'_>) -> Result<Vec<PromiseRow>, PartitionStoreError> {
        let mut rows = Vec::new();
        for (raw, value) in self.store.scan_raw(scope.prefix(TableKind::Promise).as_bytes())? {
            let (service, key, next) = service_and_key(&raw).ok_or_else(|| corrupt("pr", "bad key"))?;
            let (name, _) = read_field(&raw, next).ok_or_else(|| corrupt("pr", "bad key"))?;
            let promise = postcard::from_bytes::<PromiseState>(&value).map_err(|e| corrupt("pr", e))?;
            rows.push(PromiseRow {
                service,
                key,
                name: String::from_utf8_lossy(name).into_owned(),
                promise,
            });
        }
        Ok(rows)
    }
}
