//! The invoker: runs one attempt of an invocation against its deployment over the service
//! protocol, and reports what the SDK did.
//!
//! It owns no state. The worker hands it the journal to replay and the eager state; the
//! invoker streams `Start` and the journal, forwards live notifications the worker sends it
//! (bidi mode), and turns every message of the SDK into an [`AttemptEvent`] that the worker
//! proposes to the log. It never decides the invocation's fate: retries, suspension and
//! completion are the worker's, taken from what is durable.

mod attempt;
mod http;

pub use attempt::{
    Attempt, AttemptDeployment, AttemptError, AttemptEvent, AttemptOutcome, ErrorBehavior, JournalFrame, run_attempt,
};
pub use http::InvokerClient;

#[cfg(test)]
mod attempt_tests;

/// Protocol error codes the runtime itself uses for failed attempts.
pub mod codes {
    /// The SDK broke the protocol (unexpected message, bad framing).
    pub const PROTOCOL_VIOLATION: u16 = 571;
    /// The deployment could not be reached or answered badly.
    pub const UNAVAILABLE: u16 = 503;
    /// The attempt timed out.
    pub const TIMEOUT: u16 = 504;
    /// Generic failure.
    pub const INTERNAL: u16 = 500;
}
