//! Tables keyed by (service, key): `state`, `sys_inbox`, `sys_keyed_service_status` (lock
//! holders) and `sys_promise`. A filter on `service_key` reads only the key's partition, one on
//! `service_name` (and key) only that key range.

use crate::table::Reader;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use restate_partition_api::introspect::{KeyScope, Page};
use restate_partition_api::model::{InboxEntry, InvocationResult};
use restate_types::partition_key_of;

use crate::pushdown::Pushdown;
use crate::rows::{Rows, schema, timestamp};
use crate::table::{CHUNK_ROWS, Cursor, Scan, Source, SysTable, storage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyedTable {
    State,
    Inbox,
    KeyedServiceStatus,
    Promise,
    /// `sys_locks`: the same lock holders under the reference's lock names (`service/key`).
    Locks,
}

/// The key scope the filters allow.
fn scope(pushdown: &Pushdown) -> KeyScope<'_> {
    let service = pushdown.single("service_name");
    KeyScope {
        service,
        key: service.and(pushdown.single("service_key")),
    }
}

impl SysTable for KeyedTable {
    fn schema(&self) -> SchemaRef {
        let s = || DataType::Utf8;
        let keys = [
            ("partition_key", DataType::UInt64),
            ("service_name", s()),
            ("service_key", s()),
        ];
        let rest: Vec<(&str, DataType)> = match self {
            Self::State => vec![
                ("key", s()),
                ("value_utf8", s()),
                ("value", DataType::LargeBinary),
                ("value_length", DataType::UInt64),
            ],
            Self::Inbox => vec![
                ("id", s()),
                ("sequence_number", DataType::UInt64),
                ("created_at", timestamp()),
            ],
            Self::KeyedServiceStatus => vec![("invocation_id", s())],
            // Scopes do not exist here (null); when a lock was taken is not stored (null).
            Self::Locks => vec![
                ("lock_name", s()),
                ("scope", s()),
                ("acquired_by", s()),
                ("acquired_at", timestamp()),
            ],
            Self::Promise => vec![
                ("key", s()),
                ("completed", DataType::Boolean),
                ("completion_success_value", DataType::LargeBinary),
                ("completion_success_value_utf8", s()),
                ("completion_failure", s()),
            ],
        };
        let mut columns = keys.to_vec();
        columns.extend(rest);
        schema(&columns)
    }

    fn partitions(&self, source: &Source, scan: &Scan) -> Vec<Reader> {
        match scan.pushdown.single("service_key") {
            Some(key) => source.partitions(Some(&[partition_key_of(key.as_bytes())])),
            None => source.partitions_filtered(&scan.pushdown),
        }
    }

    fn read_chunk(&self, _source: &Source, scan: &Scan, cursor: &mut Cursor) -> Result<Option<RecordBatch>> {
        let Some(partition) = cursor.partitions.front().cloned() else {
            return Ok(None);
        };
        let mut rows = Rows::new(self.schema(), scan.projection());
        let scope = scope(&scan.pushdown);
        let page = Page {
            after: cursor.after.as_deref(),
            limit: CHUNK_ROWS,
        };
        let more = match self {
            Self::State => {
                let paged = partition.state(scope, page).map_err(storage)?;
                for (_, row) in paged.rows {
                    let name = String::from_utf8_lossy(&row.name);
                    let text = std::str::from_utf8(&row.value).ok();
                    keys(&mut rows, &row.service, &row.key)
                        .str(Some(&name))
                        .str(text)
                        .binary(Some(&row.value))
                        .u64(Some(row.value.len() as u64))
                        .end_row();
                }
                paged.more
            }
            Self::Inbox => {
                let paged = partition.inbox(scope, page).map_err(storage)?;
                for (_, row) in paged.rows {
                    // State edits wait in the inbox too; they are not invocations.
                    let InboxEntry::Invocation(id) = row.entry else {
                        continue;
                    };
                    let created = partition.invocation_status(&id).map_err(storage)?.map(|s| s.created_at);
                    keys(&mut rows, &row.service, &row.key)
                        .str(Some(&id.to_string()))
                        .u64(Some(row.sequence_number))
                        .timestamp(created)
                        .end_row();
                }
                paged.more
            }
            Self::KeyedServiceStatus => {
                let paged = partition.locks(scope, page).map_err(storage)?;
                for (_, row) in paged.rows {
                    keys(&mut rows, &row.service, &row.key)
                        .str(Some(&row.holder.to_string()))
                        .end_row();
                }
                paged.more
            }
            Self::Locks => {
                let paged = partition.locks(scope, page).map_err(storage)?;
                for (_, row) in paged.rows {
                    keys(&mut rows, &row.service, &row.key)
                        .str_with(|| Some(format!("{}/{}", row.service, row.key)))
                        .str(None)
                        .str(Some(&row.holder.to_string()))
                        .timestamp(None)
                        .end_row();
                }
                paged.more
            }
            Self::Promise => {
                let paged = partition.promises(scope, page).map_err(storage)?;
                for (_, row) in paged.rows {
                    let (value, failure) = match &row.promise.result {
                        Some(InvocationResult::Success(value)) => (Some(value.as_slice()), None),
                        Some(InvocationResult::Failure { code, message, .. }) => {
                            (None, Some(format!("[{code}] {message}")))
                        }
                        None => (None, None),
                    };
                    keys(&mut rows, &row.service, &row.key)
                        .str(Some(&row.name))
                        .bool(Some(row.promise.result.is_some()))
                        .binary(value)
                        .str(value.and_then(|v| std::str::from_utf8(v).ok()))
                        .str(failure.as_deref())
                        .end_row();
                }
                paged.more
            }
        };
        cursor.advance(more);
        rows.finish().map(Some)
    }
}

fn keys<'r>(rows: &'r mut Rows, service: &str, key: &str) -> &'r mut Rows {
    rows.u64(Some(partition_key_of(key.as_bytes())))
        .str(Some(service))
        .str(Some(key))
}
