//! The partition API: how the roles that take requests (the ingress, the admin API, the query
//! engine) reach the partitions that hold invocations, without linking the worker.
//!
//! A [`Partitions`] routes by partition key: to this node's replica in-process when the worker
//! role runs here, else over the fabric port to a node that runs one (its leader first). The
//! worker implements [`PartitionApi`] and [`PartitionReader`] for its partitions and hands them
//! to [`Partitions::serve_locally`]; [`PartitionServer`] answers other nodes' requests from them.
//! A request waits where it is served: the node that runs the replica keeps the waiter, and the
//! answer returns over the same fabric call to the node that asked.

pub mod answers;
pub mod ids;
pub mod introspect;
pub mod model;
mod partition;
mod remote;
mod retention;
mod router;

pub use answers::{AttemptInfo, Managed, Management, Output, PartitionSnapshot, Restarted, SubmitError, Terminated};
pub use ids::invocation_id_of;
pub use partition::{PartitionApi, PartitionReader, ReadError};
pub use remote::PartitionServer;
pub use retention::RetentionDefaults;
pub use router::{LocalPartition, Partitions, ReadablePartition};
