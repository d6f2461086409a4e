//! Which worker nodes run a replica of each partition (key `partition_placement`), planned by
//! the cluster controller and followed by the workers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::PlainNodeId;

/// The replica set of every partition, each in leadership preference. A partition missing here (or a cluster without a
/// placement yet) runs on every worker node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPlacement {
    pub replicas: BTreeMap<u16, Vec<PlainNodeId>>,
}

impl PartitionPlacement {
    /// The nodes that run `partition`, if it is placed.
    pub fn replicas_of(&self, partition: u16) -> Option<&[PlainNodeId]> {
        self.replicas.get(&partition).map(Vec::as_slice)
    }

    /// Whether `node` runs a replica of `partition` (every node does while it is not placed).
    pub fn runs(&self, partition: u16, node: PlainNodeId) -> bool {
        self.replicas_of(partition).is_none_or(|set| set.contains(&node))
    }

    /// How many replicas each node runs.
    pub fn load(&self) -> BTreeMap<PlainNodeId, usize> {
        let mut load = BTreeMap::new();
        for node in self.replicas.values().flatten() {
            *load.entry(*node).or_default() += 1;
        }
        load
    }

    /// `copies` replicas of each of `partitions` on `workers` (fewer when there are fewer
    /// workers), balanced so no node runs more than one replica above another, moving as few
    /// replicas of `current` as that allows: replicas stay where they are unless their node
    /// left or runs too many, so a node that joins gets its share and the others keep theirs.
    pub fn plan(current: &Self, partitions: &[u16], workers: &[PlainNodeId], copies: usize) -> Self {
        let mut workers = workers.to_vec();
        workers.sort_unstable();
        workers.dedup();
        if workers.is_empty() {
            return Self::default();
        }
        let copies = copies.clamp(1, workers.len());
        let mut load: BTreeMap<PlainNodeId, usize> = workers.iter().map(|w| (*w, 0)).collect();
        let mut replicas: BTreeMap<u16, Vec<PlainNodeId>> = BTreeMap::new();
        for partition in partitions {
            let mut set: Vec<PlainNodeId> = Vec::with_capacity(copies);
            for node in current.replicas_of(*partition).unwrap_or_default() {
                if set.len() < copies && load.contains_key(node) && !set.contains(node) {
                    set.push(*node);
                    *load.entry(*node).or_default() += 1;
                }
            }
            replicas.insert(*partition, set);
        }
        // Fill each set with the least loaded nodes; ties go to the partition's rotation of
        // the workers, so a fresh plan spreads evenly.
        for partition in partitions {
            let set = replicas.entry(*partition).or_default();
            let rotation = usize::from(*partition) % workers.len();
            while set.len() < copies {
                let pick = (0..workers.len())
                    .map(|i| workers[(i + rotation) % workers.len()])
                    .filter(|node| !set.contains(node))
                    .min_by_key(|node| load[node]);
                let Some(node) = pick else { break };
                set.push(node);
                *load.entry(node).or_default() += 1;
            }
        }
        // Move replicas from the most to the least loaded node until they differ by one.
        while let Some((&busiest, &most)) = load.iter().max_by_key(|(node, n)| (**n, std::cmp::Reverse(**node))) {
            let Some((&idlest, &least)) = load.iter().min_by_key(|(node, n)| (**n, **node)) else {
                break;
            };
            if most <= least + 1 {
                break;
            }
            let movable = partitions
                .iter()
                .rev()
                .find(|p| replicas[p].contains(&busiest) && !replicas[p].contains(&idlest));
            let Some(partition) = movable else { break };
            if let Some(set) = replicas.get_mut(partition)
                && let Some(slot) = set.iter_mut().find(|n| **n == busiest)
            {
                *slot = idlest;
            }
            *load.entry(busiest).or_default() -= 1;
            *load.entry(idlest).or_default() += 1;
        }
        // Each set in leadership preference: sorted, rotated by the partition id, so the
        // preferred leaders spread as evenly as the sets do.
        for (partition, set) in replicas.iter_mut() {
            set.sort_unstable();
            if !set.is_empty() {
                let shift = usize::from(*partition) % set.len();
                set.rotate_left(shift);
            }
        }
        Self { replicas }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[u32]) -> Vec<PlainNodeId> {
        ids.iter().map(|id| PlainNodeId(*id)).collect()
    }

    fn spread(placement: &PartitionPlacement) -> (usize, usize) {
        let load = placement.load();
        (
            load.values().copied().min().unwrap_or(0),
            load.values().copied().max().unwrap_or(0),
        )
    }

    #[test]
    fn a_fresh_plan_is_balanced_with_distinct_replicas() {
        let partitions: Vec<u16> = (0..24).collect();
        let plan = PartitionPlacement::plan(&PartitionPlacement::default(), &partitions, &nodes(&[1, 2, 3]), 2);
        assert_eq!(plan.replicas.len(), 24);
        for set in plan.replicas.values() {
            assert_eq!(set.len(), 2);
            assert_ne!(set[0], set[1]);
        }
        assert_eq!(spread(&plan), (16, 16));
        // Leaders (first replicas) spread too.
        let mut firsts: BTreeMap<PlainNodeId, usize> = BTreeMap::new();
        for set in plan.replicas.values() {
            *firsts.entry(set[0]).or_default() += 1;
        }
        assert!(firsts.values().all(|n| (6..=10).contains(n)), "{firsts:?}");
        // Planning again changes nothing.
        assert_eq!(
            PartitionPlacement::plan(&plan, &partitions, &nodes(&[1, 2, 3]), 2),
            plan
        );
    }

    #[test]
    fn a_joining_node_gets_its_share_and_the_rest_stays() {
        let partitions: Vec<u16> = (0..24).collect();
        let three = PartitionPlacement::plan(&PartitionPlacement::default(), &partitions, &nodes(&[1, 2, 3]), 2);
        let four = PartitionPlacement::plan(&three, &partitions, &nodes(&[1, 2, 3, 4]), 2);
        assert_eq!(spread(&four), (12, 12));
        let moved: usize = partitions
            .iter()
            .map(|p| {
                let before = three.replicas_of(*p).unwrap();
                four.replicas_of(*p)
                    .unwrap()
                    .iter()
                    .filter(|n| !before.contains(n))
                    .count()
            })
            .sum();
        assert_eq!(moved, 12, "only node 4's share moves");
    }

    #[test]
    fn a_leaving_node_is_replaced_and_fewer_workers_than_copies_run_everything() {
        let partitions: Vec<u16> = (0..6).collect();
        let three = PartitionPlacement::plan(&PartitionPlacement::default(), &partitions, &nodes(&[1, 2, 3]), 2);
        let two = PartitionPlacement::plan(&three, &partitions, &nodes(&[1, 3]), 2);
        for set in two.replicas.values() {
            let mut members = set.clone();
            members.sort();
            assert_eq!(members, nodes(&[1, 3]));
        }
        let one = PartitionPlacement::plan(&two, &partitions, &nodes(&[3]), 2);
        assert!(one.replicas.values().all(|set| set == &nodes(&[3])));
        assert!(one.runs(0, PlainNodeId(3)) && !one.runs(0, PlainNodeId(1)));
        assert!(
            PartitionPlacement::default().runs(0, PlainNodeId(1)),
            "unplaced runs everywhere"
        );
        assert_eq!(
            PartitionPlacement::plan(&one, &partitions, &[], 2),
            PartitionPlacement::default()
        );
    }
}
