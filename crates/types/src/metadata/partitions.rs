use serde::{Deserialize, Serialize};

use crate::ReplicationProperty;

/// The partitions of the cluster; key `partition_table`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionTable {
    pub partitions: Vec<Partition>,
    pub replication: ReplicationProperty,
}

/// One partition: an inclusive range of the u64 partition-key space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub id: u16,
    pub key_range_start: u64,
    pub key_range_end: u64,
}

impl PartitionTable {
    /// `count` partitions of equal size covering the whole key space.
    pub fn with_equal_ranges(count: u16, replication: ReplicationProperty) -> Self {
        let count = count.max(1);
        let width = u64::MAX / u64::from(count);
        let partitions = (0..count)
            .map(|id| {
                let start = u64::from(id) * width;
                let end = if id + 1 == count { u64::MAX } else { start + width - 1 };
                Partition {
                    id,
                    key_range_start: start,
                    key_range_end: end,
                }
            })
            .collect();
        Self {
            partitions,
            replication,
        }
    }

    pub fn num_partitions(&self) -> usize {
        self.partitions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_ranges_cover_the_key_space_without_gaps() {
        for count in [1u16, 2, 3, 24, 1000] {
            let table = PartitionTable::with_equal_ranges(count, ReplicationProperty::default());
            assert_eq!(table.num_partitions(), count as usize);
            assert_eq!(table.partitions[0].key_range_start, 0);
            assert_eq!(table.partitions.last().unwrap().key_range_end, u64::MAX);
            for pair in table.partitions.windows(2) {
                assert_eq!(pair[0].key_range_end + 1, pair[1].key_range_start);
            }
        }
    }
}
