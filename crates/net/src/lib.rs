//! Listeners and gRPC channels shared by every role.
//!
//! One fabric port serves gRPC and plain HTTP (`/health`, `/metrics`) from a single axum
//! router; every accepted and connected socket gets `TCP_NODELAY`, since small replies
//! otherwise stall ~40 ms behind Nagle's algorithm and delayed ACKs.

mod channel;
mod listener;
mod server;

pub use channel::{ChannelError, channel, channel_without_deadline, normalize_address};
pub use listener::{BindError, bind};
pub use server::{grpc_aware_fallback, serve};
