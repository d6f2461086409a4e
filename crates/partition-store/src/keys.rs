//! Key layout: every key starts with a two-byte table kind, then the table's fields, with
//! variable-length fields length-prefixed so that prefixes never collide.

use restate_types::InvocationId;

/// The tables of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// Applied LSN, leader epoch, sequence counters.
    Fsm,
    /// Invocation status per invocation id.
    InvocationStatus,
    /// Journal entries per (invocation id, entry index).
    Journal,
    /// Which completion ids / signal ids have a notification in the journal.
    JournalNotification,
    /// Virtual object state per (service, key, state key).
    State,
    /// The exclusive lock of a virtual object key: the invocation holding it.
    ServiceLock,
    /// Invocations waiting for the lock, per (service, key, sequence number).
    Inbox,
    /// Durable timers per (wake-up time, sequence number).
    Timer,
    /// Messages for other partitions, per sequence number.
    Outbox,
    /// Highest sequence number applied per producing partition.
    Dedup,
    /// Durable promises of workflows, per (service, key, name).
    Promise,
    /// The invocations that run (phase `Invoked`), by id: what a new leader resumes, without
    /// reading every retained invocation.
    Invoked,
    /// The timers of each invocation, per (invocation id, wake-up time, sequence number): what
    /// to delete when it ends.
    InvocationTimer,
}

impl TableKind {
    pub const fn prefix(self) -> &'static [u8; 2] {
        match self {
            TableKind::Fsm => b"fs",
            TableKind::InvocationStatus => b"iS",
            TableKind::Journal => b"j2",
            TableKind::JournalNotification => b"jn",
            TableKind::State => b"st",
            TableKind::ServiceLock => b"ss",
            TableKind::Inbox => b"ib",
            TableKind::Timer => b"ti",
            TableKind::Outbox => b"ob",
            TableKind::Dedup => b"de",
            TableKind::Promise => b"pr",
            TableKind::Invoked => b"iv",
            TableKind::InvocationTimer => b"it",
        }
    }
}

/// A key under construction; `Key::new(kind).id(..).str(..)` etc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key(Vec<u8>);

impl Key {
    pub fn new(kind: TableKind) -> Self {
        let mut bytes = Vec::with_capacity(48);
        bytes.extend_from_slice(kind.prefix());
        Self(bytes)
    }

    pub fn invocation(mut self, id: &InvocationId) -> Self {
        self.0.extend_from_slice(&id.to_raw());
        self
    }

    /// A length-prefixed string or byte field.
    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    pub fn str(self, text: &str) -> Self {
        self.bytes(text.as_bytes())
    }

    /// A trailing raw field (the last one of a key: state keys).
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    pub fn u8(mut self, value: u8) -> Self {
        self.0.push(value);
        self
    }

    pub fn u16(mut self, value: u16) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn u32(mut self, value: u32) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn u64(mut self, value: u64) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// Reads big-endian integers back out of a key at `offset`.
pub fn read_u64(key: &[u8], offset: usize) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(offset..offset + 8)?.try_into().ok()?))
}

pub fn read_u32(key: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_be_bytes(key.get(offset..offset + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefixes_keep_fields_apart() {
        let a = Key::new(TableKind::State).str("ab").str("c");
        let b = Key::new(TableKind::State).str("a").str("bc");
        assert_ne!(a, b);
        assert!(
            !b.as_bytes()
                .starts_with(Key::new(TableKind::State).str("ab").as_bytes())
        );
    }

    #[test]
    fn integers_sort_by_value() {
        let small = Key::new(TableKind::Timer).u64(9).u64(1);
        let large = Key::new(TableKind::Timer).u64(10).u64(0);
        assert!(small.as_bytes() < large.as_bytes());
        assert_eq!(read_u64(large.as_bytes(), 2), Some(10));
    }
}
