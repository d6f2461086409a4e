//! The `restate` node: loads the configuration, prepares the node directory, binds every
//! listener and starts the configured roles in dependency order.

pub mod cli;
mod context;
mod fabric;
mod gossip;
mod join;
mod logging;
mod metadata;
mod metrics;
mod node;
mod node_ctl;
mod node_dir;
mod provision;
mod roles;

pub use join::JoinError;
pub use node::{Node, NodeError};
pub use node_dir::{ClusterMarker, NodeDir, NodeDirError};
