use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{GenerationalNodeId, PlainNodeId, ReplicationProperty};

/// Position of a record in a log. The first record of a log is at [`Lsn::FIRST`].
pub type Lsn = u64;

/// LSN of a log's first record.
pub const FIRST_LSN: Lsn = 1;

/// The logs of the cluster and their default provider; key `bifrost_config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsConfiguration {
    pub default_provider: LogProviderConfig,
    /// Segment chains by log id (created by Bifrost on a log's first append).
    #[serde(default)]
    pub logs: BTreeMap<u32, Chain>,
}

/// Which provider new log segments use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LogProviderConfig {
    Local,
    Replicated {
        replication: ReplicationProperty,
        /// Log-servers per segment; 0 picks automatically.
        #[serde(default)]
        target_nodeset_size: u16,
    },
}

impl LogProviderConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            LogProviderConfig::Local => "local",
            LogProviderConfig::Replicated { .. } => "replicated",
        }
    }

    pub fn replication(&self) -> Option<&ReplicationProperty> {
        match self {
            LogProviderConfig::Replicated { replication, .. } => Some(replication),
            _ => None,
        }
    }
}

/// One log: a chain of segments, each covering a range of LSNs. The last segment takes
/// appends; the earlier ones are sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub segments: Vec<Segment>,
    /// Records below this LSN are trimmed; readers see a trim gap instead.
    #[serde(default = "first_lsn")]
    pub trim_point: Lsn,
}

fn first_lsn() -> Lsn {
    FIRST_LSN
}

/// A range of a log stored by one loglet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Position in the chain (0, 1, 2, …).
    pub index: u32,
    /// LSN of the segment's first record; the segment ends where the next one begins.
    pub base_lsn: Lsn,
    pub loglet: LogletParams,
    pub created_at_millis: u64,
}

/// Where a segment's records live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LogletParams {
    /// In the local loglet store of one node (single-node deployments).
    Local { loglet_id: u64, node: PlainNodeId },
    /// On log-servers, written through one sequencer.
    Replicated(ReplicatedParams),
}

/// A replicated loglet: one sequencer (valid only for that node generation) assigns offsets
/// and stores each record on `replication` log-servers of the nodeset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicatedParams {
    pub loglet_id: u64,
    pub sequencer: GenerationalNodeId,
    pub replication: ReplicationProperty,
    pub nodeset: Vec<PlainNodeId>,
}

impl LogletParams {
    pub fn loglet_id(&self) -> u64 {
        match self {
            LogletParams::Local { loglet_id, .. } => *loglet_id,
            LogletParams::Replicated(params) => params.loglet_id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            LogletParams::Local { .. } => "local",
            LogletParams::Replicated(_) => "replicated",
        }
    }
}

/// `(log id << 32) | segment index`: unique per segment of every log.
pub fn loglet_id(log_id: u32, segment_index: u32) -> u64 {
    (u64::from(log_id) << 32) | u64::from(segment_index)
}

/// `12_3` for loglet 3 of log 12, as operators read it.
pub fn display_loglet_id(loglet_id: u64) -> String {
    format!("{}_{}", loglet_id >> 32, loglet_id & 0xffff_ffff)
}

impl Chain {
    pub fn tail(&self) -> Option<&Segment> {
        self.segments.last()
    }

    /// The segment holding `lsn`, and where it ends (exclusive; `None` for the open tail).
    pub fn find(&self, lsn: Lsn) -> Option<(&Segment, Option<Lsn>)> {
        let position = self.segments.iter().rposition(|s| s.base_lsn <= lsn)?;
        let end = self.segments.get(position + 1).map(|next| next.base_lsn);
        Some((&self.segments[position], end))
    }
}

impl fmt::Display for ReplicatedParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodeset: Vec<String> = self.nodeset.iter().map(|n| n.to_string()).collect();
        write!(
            f,
            "loglet {} sequencer {} replication {} nodeset [{}]",
            display_loglet_id(self.loglet_id),
            self.sequencer,
            self.replication,
            nodeset.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(index: u32, base_lsn: Lsn) -> Segment {
        Segment {
            index,
            base_lsn,
            loglet: LogletParams::Local {
                loglet_id: loglet_id(7, index),
                node: PlainNodeId(1),
            },
            created_at_millis: 0,
        }
    }

    #[test]
    fn lsns_map_to_segments() {
        let chain = Chain {
            segments: vec![segment(0, 1), segment(1, 11), segment(2, 11), segment(3, 40)],
            trim_point: 1,
        };
        assert_eq!(chain.find(1).map(|(s, end)| (s.index, end)), Some((0, Some(11))));
        assert_eq!(chain.find(10).map(|(s, end)| (s.index, end)), Some((0, Some(11))));
        // An empty segment (1) is skipped: 11 belongs to segment 2.
        assert_eq!(chain.find(11).map(|(s, end)| (s.index, end)), Some((2, Some(40))));
        assert_eq!(chain.find(1000).map(|(s, end)| (s.index, end)), Some((3, None)));
        assert_eq!(display_loglet_id(loglet_id(12, 3)), "12_3");
    }
}
