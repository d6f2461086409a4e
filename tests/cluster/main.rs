//! Multi-process tests: real `restate` and `restatectl` binaries on 127.0.0.1.

mod awakeables;
mod bad_config;
mod bifrost;
mod cancellation;
mod chaos;
mod cli;
mod conformance;
mod deployments;
mod durability;
mod external;
mod failover;
mod gateway;
mod idempotency;
mod invocations;
mod log_cost;
mod metadata;
mod migration;
mod operations;
mod operator;
mod poison;
mod query;
mod scale;
mod sdk_conformance;
mod sdk_rust;
mod single_node;
mod workflows;
