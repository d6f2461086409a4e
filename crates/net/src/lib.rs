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

/// How often [`until`] looks again.
const UNTIL_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// Resolves once `check` holds, looking every 50 ms: for a call in flight that must end when
/// the failure detector stops hearing its peer (the detector's view has no notifications; a
/// paused peer keeps the connection open and answers nothing).
pub async fn until(check: impl Fn() -> bool) {
    while !check() {
        tokio::time::sleep(UNTIL_CHECK).await;
    }
}
