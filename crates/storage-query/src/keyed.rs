//! Tables keyed by (service, key): `state`, `sys_inbox`, `sys_keyed_service_status` (lock
//! holders) and `sys_promise`. A filter on `service_key` reads only the key's partition, one on
//! `service_name` (and key) only that key range.

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use restate_types::partition_key_of;
use restate_worker::PartitionHandle;
use restate_worker::introspect::KeyScope;
use restate_worker::model::{InboxEntry, InvocationResult};

use crate::pushdown::Pushdown;
use crate::rows::{Rows, schema, timestamp};
use crate::table::{Scan, Source, SysTable, storage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyedTable {
    State,
    Inbox,
    KeyedServiceStatus,
    Promise,
}

/// The partitions and key scope the filters allow.
fn scope<'a>(source: &Source, pushdown: &'a Pushdown) -> (Vec<PartitionHandle>, KeyScope<'a>) {
    let service = pushdown.single("service_name");
    let key = pushdown.single("service_key");
    let partitions = match key {
        Some(key) => source.partitions(Some(&[partition_key_of(key.as_bytes())])),
        None => source.partitions_filtered(pushdown),
    };
    let scope = KeyScope {
        service,
        key: service.and(key),
    };
    (partitions, scope)
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
            Self::State => vec![("key", s()), ("value_utf8", s()), ("value", DataType::LargeBinary)],
            Self::Inbox => vec![
                ("id", s()),
                ("sequence_number", DataType::UInt64),
                ("created_at", timestamp()),
            ],
            Self::KeyedServiceStatus => vec![("invocation_id", s())],
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

    fn read(&self, source: &Source, scan: &Scan) -> Result<RecordBatch> {
        let mut rows = Rows::new(self.schema(), scan.projection());
        let (partitions, scope) = scope(source, &scan.pushdown);
        for partition in partitions {
            match self {
                Self::State => {
                    for row in partition.state(scope).map_err(storage)? {
                        let name = String::from_utf8_lossy(&row.name);
                        let text = std::str::from_utf8(&row.value).ok();
                        keys(&mut rows, &row.service, &row.key)
                            .str(Some(&name))
                            .str(text)
                            .binary(Some(&row.value))
                            .end_row();
                    }
                }
                Self::Inbox => {
                    for row in partition.inbox(scope).map_err(storage)? {
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
                }
                Self::KeyedServiceStatus => {
                    for row in partition.locks(scope).map_err(storage)? {
                        keys(&mut rows, &row.service, &row.key)
                            .str(Some(&row.holder.to_string()))
                            .end_row();
                    }
                }
                Self::Promise => {
                    for row in partition.promises(scope).map_err(storage)? {
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
                }
            }
        }
        rows.finish()
    }
}

fn keys<'r>(rows: &'r mut Rows, service: &str, key: &str) -> &'r mut Rows {
    rows.u64(Some(partition_key_of(key.as_bytes())))
        .str(Some(service))
        .str(Some(key))
}
