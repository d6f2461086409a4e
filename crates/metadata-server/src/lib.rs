//! The `metadata-server` role: the built-in replicated metadata store.
//!
//! Each member runs an openraft node whose log, vote and snapshots live in RocksDB under
//! `<node-dir>/replicated-metadata-server/`. See `OVERVIEW.md` for the model and invariants.

mod grpc;
mod lease;
mod network;
mod raft_types;
mod server;
mod state_machine;
mod storage;
#[cfg(test)]
mod storage_suite;
mod timing;

pub use server::{MetadataServer, MetadataServerError, ServerStatus};
