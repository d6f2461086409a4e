//! `/metrics` in the Prometheus text format, computed from the node's health at scrape time.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use restate_types::{NodeHealth, NodeStatus, RoleStatus};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

/// The node's metrics registry; gauges are refreshed from [`NodeHealth`] on every scrape.
pub(crate) struct NodeMetrics {
    registry: Registry,
    health: NodeHealth,
    uptime: Gauge<u64, AtomicU64>,
    alive: Gauge,
    role_ready: Family<RoleLabels, Gauge>,
}

impl NodeMetrics {
    pub(crate) fn new(health: NodeHealth, worker: &restate_worker::WorkerMetrics) -> Self {
        let mut registry = Registry::with_prefix("restate");
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: restate_types::BINARY_VERSION.to_owned(),
            })
            .set(1);
        registry.register("build_info", "Version of this restate binary", build_info);
        let uptime = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "node_uptime_seconds",
            "Seconds since the node process started",
            uptime.clone(),
        );
        let alive = Gauge::default();
        registry.register("node_alive", "1 once every role of the node is ready", alive.clone());
        registry.register(
            "invocations",
            "Invocations led on this node, by outcome (created, succeeded, failed)",
            worker.invocations.clone(),
        );
        registry.register(
            "invocation_attempts",
            "Invocation attempts run on this node, by outcome (started, failed)",
            worker.attempts.clone(),
        );
        registry.register(
            "partition_failed",
            "1 while a partition of this node cannot apply its log (restatectl status shows why)",
            worker.partitions_failed.clone(),
        );
        let role_ready = Family::<RoleLabels, Gauge>::default();
        registry.register("role_ready", "1 when the role is ready to serve", role_ready.clone());
        Self {
            registry,
            health,
            uptime,
            alive,
            role_ready,
        }
    }

    pub(crate) fn render(&self) -> String {
        let state = self.health.snapshot();
        self.uptime.set(self.health.age_seconds());
        self.alive.set(i64::from(state.status == NodeStatus::Alive));
        for (role, role_state) in &state.roles {
            self.role_ready
                .get_or_create(&RoleLabels { role: role.to_string() })
                .set(i64::from(role_state.status == RoleStatus::Ready));
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text = "# metrics could not be encoded\n".to_owned();
        }
        text
    }
}
