//! The openraft type configuration of the metadata store.

use std::fmt;
use std::io::Cursor;

use restate_types::metadata::{Precondition, Version, VersionedValue};
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// Types of the metadata Raft group.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = MemberNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// Raft member ids are the nodes' plain ids.
pub type NodeId = u64;

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, MemberNode>;

/// A member as the Raft group knows it: where to reach it, and which storage it has.
///
/// The storage id changes when a node's data directory is wiped, so a wiped node can never
/// vote as its former self.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    pub address: String,
    pub storage_id: u64,
}

impl fmt::Display for MemberNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (storage {})", self.address, self.storage_id)
    }
}

/// A replicated write; the precondition is checked when each replica applies it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    Put {
        key: String,
        value: VersionedValue,
        precondition: Precondition,
        /// The client's id for this write (0 = none), remembered with the value.
        write_id: u64,
    },
    Delete {
        key: String,
        precondition: Precondition,
    },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Put {
                key,
                value,
                precondition,
                ..
            } => {
                write!(f, "put {key} {} if {precondition}", value.version)
            }
            Command::Delete { key, precondition } => write!(f, "delete {key} if {precondition}"),
        }
    }
}

/// What applying an entry did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CommandResult {
    Applied,
    PreconditionFailed {
        actual: Option<Version>,
        reason: String,
    },
    /// Blank and membership entries carry no command.
    NoCommand,
}
