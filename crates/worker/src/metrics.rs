//! Invocation counters for `/metrics`, counted by partition leaders.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub partition: u16,
}

/// Counters the node registers in its metrics registry; cheap to clone.
#[derive(Clone, Default)]
pub struct WorkerMetrics {
    /// Invocations by outcome: `created`, `succeeded`, `failed`.
    pub invocations: Family<OutcomeLabels, Counter>,
    /// Attempts by outcome: `started`, `failed`.
    pub attempts: Family<OutcomeLabels, Counter>,
    /// 1 while a partition cannot apply its log (see its failure in `restatectl status`).
    pub partitions_failed: Family<PartitionLabels, Gauge>,
}

impl WorkerMetrics {
    pub(crate) fn invocation(&self, outcome: &str) {
        self.invocations
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub(crate) fn partition_failed(&self, partition: u16, failed: bool) {
        self.partitions_failed
            .get_or_create(&PartitionLabels { partition })
            .set(i64::from(failed));
    }

    pub(crate) fn attempt(&self, outcome: &str) {
        self.attempts
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}
