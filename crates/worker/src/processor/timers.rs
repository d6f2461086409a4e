//! The leader's queue of a partition's durable timers, by due time. It holds at most a fixed
//! number in memory: the earliest ones. Later timers stay in the store (keys sort by due time)
//! and are read, a bounded batch at a time, when the ones in memory have fired, so a partition
//! with millions of far-off timers costs the leader no more memory than one with a few.

use std::collections::BTreeSet;

use restate_partition_store::{PartitionStore, PartitionStoreError, TableKind, read_u64};

use crate::state_machine::timer_key;

/// A timer's key: (due time in ms, sequence number).
pub(crate) type TimerKey = (u64, u64);

pub(crate) struct TimerQueue {
    memory: BTreeSet<TimerKey>,
    /// `Some(k)`: the store may hold timers from `k` on that are not in memory (every one
    /// before `k` is). `None`: every timer is in memory.
    unloaded_from: Option<TimerKey>,
    capacity: usize,
}

impl TimerQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            memory: BTreeSet::new(),
            unloaded_from: None,
            capacity: capacity.max(1),
        }
    }

    /// Forgets every timer (leadership ended).
    pub(crate) fn clear(&mut self) {
        self.memory.clear();
        self.unloaded_from = None;
    }

    /// Starts over from the store: the earliest timers come into memory.
    pub(crate) fn load(&mut self, store: &PartitionStore) -> Result<(), PartitionStoreError> {
        self.memory.clear();
        self.unloaded_from = Some((0, 0));
        self.refill(store)
    }

    /// Reads the next batch from the store once the timers in memory have all fired.
    pub(crate) fn refill(&mut self, store: &PartitionStore) -> Result<(), PartitionStoreError> {
        let Some((wake_up, seq)) = self.unloaded_from else {
            return Ok(());
        };
        if !self.memory.is_empty() {
            return Ok(());
        }
        let prefix = TableKind::Timer.prefix();
        let entries = store.scan_from(prefix, timer_key(wake_up, seq).as_bytes(), self.capacity)?;
        let complete = entries.len() < self.capacity;
        for (key, _) in &entries {
            if let (Some(wake_up), Some(seq)) = (read_u64(key, 2), read_u64(key, 10)) {
                self.memory.insert((wake_up, seq));
            }
        }
        self.unloaded_from = match (complete, self.memory.last()) {
            (false, Some(&(wake_up, seq))) => Some(match seq.checked_add(1) {
                Some(next) => (wake_up, next),
                None => (wake_up.saturating_add(1), 0),
            }),
            _ => None,
        };
        Ok(())
    }

    /// A timer was stored: kept in memory if it is among the earliest, else left to be read
    /// when its turn comes.
    pub(crate) fn insert(&mut self, timer: TimerKey) {
        if self.unloaded_from.is_some_and(|from| timer >= from) {
            return;
        }
        self.memory.insert(timer);
        if self.memory.len() > self.capacity
            && let Some(latest) = self.memory.pop_last()
        {
            self.unloaded_from = Some(latest);
        }
    }

    pub(crate) fn remove(&mut self, timer: TimerKey) {
        self.memory.remove(&timer);
    }

    /// Whether timers wait in the store while none is in memory (a read of them failed).
    pub(crate) fn needs_refill(&self) -> bool {
        self.memory.is_empty() && self.unloaded_from.is_some()
    }

    /// The next timer to fire.
    pub(crate) fn first(&self) -> Option<TimerKey> {
        self.memory.first().copied()
    }

    #[cfg(test)]
    fn in_memory(&self) -> usize {
        self.memory.len()
    }
}

#[cfg(test)]
mod tests {
    use restate_partition_store::PartitionStores;

    use super::*;
    use crate::model::Timer;

    #[test]
    fn holds_only_the_earliest_timers_and_reads_the_rest_as_they_come_due() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartitionStores::open(dir.path(), [0]).unwrap().partition(0).unwrap();
        let id = restate_types::InvocationId::generate(1);
        let mut txn = store.txn();
        for seq in 1..=25u64 {
            txn.put(timer_key(1_000 + seq * 10, seq), &Timer::Invoke(id));
        }
        txn.commit().unwrap();

        let mut queue = TimerQueue::new(10);
        queue.load(&store).unwrap();
        assert_eq!(queue.in_memory(), 10);
        // Later than what is loaded: read from the store when its turn comes.
        queue.insert((5_000, 26));
        assert_eq!(queue.in_memory(), 10);
        // Earlier than the latest in memory: kept, and the latest makes room.
        queue.insert((1_005, 27));
        assert_eq!(queue.in_memory(), 10);

        let mut fired = Vec::new();
        // Simulate the store losing fired timers as the state machine deletes them.
        while let Some(timer) = queue.first() {
            fired.push(timer);
            queue.remove(timer);
            let mut txn = store.txn();
            txn.delete(timer_key(timer.0, timer.1));
            txn.commit().unwrap();
            queue.refill(&store).unwrap();
            assert!(queue.in_memory() <= 10);
        }
        let mut expected: Vec<TimerKey> = (1..=25u64).map(|seq| (1_000 + seq * 10, seq)).collect();
        expected.push((1_005, 27));
        expected.sort();
        // (5_000, 26) was never stored in this test: only what the store holds fires.
        assert_eq!(fired, expected);
    }
}
