//! Read-only views of a partition's tables, for SQL introspection (`crates/storage-query`).
//! They read the partition store directly (RocksDB reads never wait for the processor) and
//! decode the worker's own key and value layouts, so the query engine never needs to know them.

use restate_partition_store::{Key, PartitionStoreError, TableKind};
use restate_types::InvocationId;

use std::collections::HashMap;

use restate_partition_api::introspect::{InboxRow, JournalRow, KeyScope, LockRow, Page, Paged, PromiseRow, StateRow};
use restate_partition_api::{AttemptInfo, PartitionReader, PartitionSnapshot, ReadError};

use crate::handle::PartitionHandle;
use crate::model::{InboxEntry, InvocationStatus, LockHolder, PromiseState};
use crate::state_machine::{decode_entry, entry_appended_at, journal_prefix, status_key};

/// The store key prefix of the rows a scope selects in `table`.
fn scope_prefix(scope: &KeyScope<'_>, table: TableKind) -> Key {
    let mut prefix = Key::new(table);
    if let Some(service) = scope.service {
        prefix = prefix.str(service);
        if let Some(key) = scope.key {
            prefix = prefix.str(key);
        }
    }
    prefix
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
    /// Up to `page.limit` raw rows under `prefix`.
    fn page(&self, prefix: &Key, page: Page<'_>) -> Result<Paged<Vec<u8>>, PartitionStoreError> {
        let from = match page.after {
            Some(after) => {
                let mut next = after.to_vec();
                next.push(0);
                next
            }
            None => prefix.as_bytes().to_vec(),
        };
        let limit = page.limit.max(1);
        let entries = self.store.scan_from(prefix.as_bytes(), &from, limit)?;
        let more = match entries.len() == limit {
            true => entries.last().map(|(key, _)| key.clone()),
            false => None,
        };
        Ok(Paged { rows: entries, more })
    }
}

/// A store error as the query engine reports it.
fn read_error(error: PartitionStoreError) -> ReadError {
    ReadError(error.to_string())
}

impl PartitionReader for PartitionHandle {
    fn snapshot(&self) -> PartitionSnapshot {
        self.state.snapshot()
    }

    fn attempts(&self) -> HashMap<InvocationId, AttemptInfo> {
        self.state.attempts()
    }

    fn invocation_status(&self, id: &InvocationId) -> Result<Option<InvocationStatus>, ReadError> {
        let read = || -> Result<Option<InvocationStatus>, PartitionStoreError> {
            self.store.get::<InvocationStatus>(&status_key(id))
        };
        read().map_err(read_error)
    }

    fn invocation_statuses(&self, page: Page<'_>) -> Result<Paged<(InvocationId, InvocationStatus)>, ReadError> {
        let read = || -> Result<Paged<(InvocationId, InvocationStatus)>, PartitionStoreError> {
            let Paged { rows: entries, more } = self.page(&Key::new(TableKind::InvocationStatus), page)?;
            let rows = entries
                .into_iter()
                .filter_map(|(key, value)| {
                    let id = InvocationId::from_raw(&key[2..])?;
                    let status = postcard::from_bytes::<InvocationStatus>(&value).ok()?;
                    Some((key, (id, status)))
                })
                .collect();
            Ok(Paged { rows, more })
        };
        read().map_err(read_error)
    }

    fn journal(&self, id: &InvocationId) -> Result<Vec<JournalRow>, ReadError> {
        let read = || -> Result<Vec<JournalRow>, PartitionStoreError> {
            let prefix = journal_prefix(id);
            let offset = prefix.as_bytes().len();
            let mut rows = Vec::new();
            for (key, value) in self.store.scan_raw(prefix.as_bytes())? {
                let index =
                    restate_partition_store::read_u32(&key, offset).ok_or_else(|| corrupt("j2", "short key"))?;
                let (message_type, payload) = decode_entry(&value).ok_or_else(|| corrupt("j2", "short entry"))?;
                rows.push(JournalRow {
                    index,
                    message_type,
                    payload,
                    appended_at: entry_appended_at(&value),
                });
            }
            Ok(rows)
        };
        read().map_err(read_error)
    }

    fn state(&self, scope: KeyScope<'_>, page: Page<'_>) -> Result<Paged<StateRow>, ReadError> {
        let read = || -> Result<Paged<StateRow>, PartitionStoreError> {
            let Paged { rows: entries, more } = self.page(&scope_prefix(&scope, TableKind::State), page)?;
            let mut rows = Vec::new();
            for (raw, value) in entries {
                let (service, key, next) = service_and_key(&raw).ok_or_else(|| corrupt("st", "bad key"))?;
                let name = raw[next..].to_vec();
                rows.push((
                    raw,
                    StateRow {
                        service,
                        key,
                        name,
                        value,
                    },
                ));
            }
            Ok(Paged { rows, more })
        };
        read().map_err(read_error)
    }

    fn inbox(&self, scope: KeyScope<'_>, page: Page<'_>) -> Result<Paged<InboxRow>, ReadError> {
        let read = || -> Result<Paged<InboxRow>, PartitionStoreError> {
            let Paged { rows: entries, more } = self.page(&scope_prefix(&scope, TableKind::Inbox), page)?;
            let mut rows = Vec::new();
            for (raw, value) in entries {
                let (service, key, next) = service_and_key(&raw).ok_or_else(|| corrupt("ib", "bad key"))?;
                let sequence_number = restate_partition_store::read_u64(&raw, next).unwrap_or_default();
                let entry = postcard::from_bytes::<InboxEntry>(&value).map_err(|e| corrupt("ib", e))?;
                rows.push((
                    raw,
                    InboxRow {
                        service,
                        key,
                        sequence_number,
                        entry,
                    },
                ));
            }
            Ok(Paged { rows, more })
        };
        read().map_err(read_error)
    }

    fn locks(&self, scope: KeyScope<'_>, page: Page<'_>) -> Result<Paged<LockRow>, ReadError> {
        let read = || -> Result<Paged<LockRow>, PartitionStoreError> {
            let Paged { rows: entries, more } = self.page(&scope_prefix(&scope, TableKind::ServiceLock), page)?;
            let mut rows = Vec::new();
            for (raw, value) in entries {
                let (service, key, _) = service_and_key(&raw).ok_or_else(|| corrupt("ss", "bad key"))?;
                let holder = postcard::from_bytes::<LockHolder>(&value).map_err(|e| corrupt("ss", e))?;
                rows.push((
                    raw,
                    LockRow {
                        service,
                        key,
                        holder: holder.id,
                    },
                ));
            }
            Ok(Paged { rows, more })
        };
        read().map_err(read_error)
    }

    fn promises(&self, scope: KeyScope<'_>, page: Page<'_>) -> Result<Paged<PromiseRow>, ReadError> {
        let read = || -> Result<Paged<PromiseRow>, PartitionStoreError> {
            let Paged { rows: entries, more } = self.page(&scope_prefix(&scope, TableKind::Promise), page)?;
            let mut rows = Vec::new();
            for (raw, value) in entries {
                let (service, key, next) = service_and_key(&raw).ok_or_else(|| corrupt("pr", "bad key"))?;
                let (name, _) = read_field(&raw, next).ok_or_else(|| corrupt("pr", "bad key"))?;
                let name = String::from_utf8_lossy(name).into_owned();
                let promise = postcard::from_bytes::<PromiseState>(&value).map_err(|e| corrupt("pr", e))?;
                rows.push((
                    raw,
                    PromiseRow {
                        service,
                        key,
                        name,
                        promise,
                    },
                ));
            }
            Ok(Paged { rows, more })
        };
        read().map_err(read_error)
    }
}
