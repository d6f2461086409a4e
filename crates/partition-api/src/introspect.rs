//! Read-only views of a partition's tables, for SQL introspection: the rows the query engine
//! turns into `sys_*` tables, a page at a time, without knowing how the worker lays them out.

use bytes::Bytes;
use restate_types::InvocationId;
use serde::{Deserialize, Serialize};

use crate::model::{InboxEntry, PromiseState};

/// One entry of an object's or workflow's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateRow {
    pub service: String,
    pub key: String,
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// One entry of a virtual object key's inbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxRow {
    pub service: String,
    pub key: String,
    pub sequence_number: u64,
    pub entry: InboxEntry,
}

/// The invocation holding an object key's exclusive lock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockRow {
    pub service: String,
    pub key: String,
    pub holder: InvocationId,
}

/// A workflow's durable promise.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PromiseRow {
    pub service: String,
    pub key: String,
    pub name: String,
    pub promise: PromiseState,
}

/// One journal entry: its index, protocol message type and payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalRow {
    pub index: u32,
    pub message_type: u16,
    #[serde(with = "bytes_as_vec")]
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

/// Where a listing continues (after this raw store key; from the start without one) and how
/// many rows it reads at most: the query engine walks a table in bounded steps.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    pub after: Option<&'a [u8]>,
    pub limit: usize,
}

/// One step of a listing: rows with their raw store keys, and whether more may follow (the
/// key of the last row, to pass as [`Page::after`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct Paged<T> {
    pub rows: Vec<(Vec<u8>, T)>,
    pub more: Option<Vec<u8>>,
}

/// `Bytes` as a plain byte vector on the wire (its own serde support is an optional feature).
mod bytes_as_vec {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
        bytes.as_ref().serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        Vec::<u8>::deserialize(deserializer).map(Bytes::from)
    }
}
