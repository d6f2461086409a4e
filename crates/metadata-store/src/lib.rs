//! The metadata store client API every role uses, whatever store is behind it.
//!
//! A store keeps `key → (version, bytes)` with conditional writes
//! (`None | DoesNotExist | MatchesVersion`) and linearizable reads. [`MetadataClient`] adds
//! the value size limit, typed JSON objects and a read-modify-write loop on top of any
//! [`MetadataStore`] implementation.

mod client;
mod errors;
mod memory;
pub mod proto_conv;
mod replicated;
mod schema_cache;

use async_trait::async_trait;
pub use client::{MetadataClient, ReadModifyWrite};
pub use errors::{ProvisionError, ReadError, WriteError};
pub use memory::InMemoryStore;
pub use replicated::{KNOWN_LEADER_HEADER, LeaderHint, REPLICATED_MAX_VALUE_SIZE, ReplicatedStoreClient};
pub use restate_types::metadata::{Precondition, Version, VersionedValue};
pub use schema_cache::SchemaCache;

/// Phrase in every error that means "no cluster exists yet"; callers match on it to tell
/// waiting for provisioning apart from an outage.
pub const AWAITING_PROVISIONING: &str = "awaiting provisioning";

/// A metadata store back-end: the raw, untyped operations.
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// The value and version of `key`, read linearizably.
    async fn get(&self, key: &str) -> Result<Option<VersionedValue>, ReadError>;

    /// Only the version of `key`.
    async fn get_version(&self, key: &str) -> Result<Option<Version>, ReadError>;

    /// Writes `value` if `precondition` holds at the moment of the write.
    ///
    /// [`WriteError::Unavailable`] means nothing was written. A request that may have reached
    /// the store without an answer is resolved by the back-end where it can (e.g. by reading
    /// back a token stored with the write); [`WriteError::UnknownOutcome`] means it could not.
    async fn put(&self, key: &str, value: VersionedValue, precondition: Precondition) -> Result<(), WriteError>;

    /// Deletes `key` if `precondition` holds.
    async fn delete(&self, key: &str, precondition: Precondition) -> Result<(), WriteError>;

    /// Every key in the store (used to migrate a store's whole content).
    async fn keys(&self) -> Result<Vec<String>, ReadError>;

    /// Whether the back-end already retries requests while the store is unavailable (then the
    /// caller must not add its own retries on top, which would hide fast failures).
    fn retries_when_unavailable(&self) -> bool {
        false
    }

    /// Largest value the back-end itself accepts, if it is below the message size limit.
    fn max_value_size(&self) -> Option<usize> {
        None
    }

    /// Short name of the back-end for messages (`replicated`, `etcd`, …).
    fn kind(&self) -> &'static str;
}
