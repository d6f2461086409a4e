//! Message layer of the Restate service protocol (runtime ↔ SDK), versions V5 to V7.
//!
//! Holds what both ends of an invocation stream must agree on byte for byte: the protobuf
//! messages ([`proto`]), the 8-byte frame header ([`MessageHeader`]), the type codes
//! ([`MessageType`]), framing ([`Encoder`], [`Decoder`]) and version negotiation
//! ([`ServiceProtocolVersion`]). Deliberately free of HTTP, journal and invoker logic so the
//! codec can be tested on its own against recorded SDK transcripts.

mod codec;
mod header;
mod message;
mod version;

#[cfg(test)]
mod transcript_tests;

pub use codec::{DEFAULT_MAX_MESSAGE_SIZE, DecodeError, Decoder, EncodeError, Encoder, RawMessage};
pub use header::{MessageFlags, MessageHeader, MessageKind, MessageType};
pub use message::Message;
pub use version::{ContentTypeError, NegotiationError, ServiceProtocolVersion};

/// Generated from `proto/restate/service_protocol/protocol.proto` (package
/// `restate.service_protocol`); `bytes` fields are [`bytes::Bytes`] so payloads are not copied.
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/restate.service_protocol.rs"));
}
