//! Conversions between the metadata protos and the domain types, and between store errors
//! and gRPC statuses (both directions), so every server and client maps them the same way.

use restate_proto::metadata as pb;
use restate_types::metadata::{Precondition, Version, VersionedValue};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::{ReadError, WriteError};

/// Set on errors the server produced before applying anything: the write did not happen.
pub const NOT_APPLIED_HEADER: &str = "x-restate-not-applied";
/// The stored version when a precondition failed.
pub const ACTUAL_VERSION_HEADER: &str = "x-restate-actual-version";
/// Set by a metadata server that has no cluster yet.
pub const AWAITING_PROVISIONING_HEADER: &str = "x-restate-awaiting-provisioning";
/// Set when a write's outcome is unknown.
pub const UNKNOWN_OUTCOME_HEADER: &str = "x-restate-unknown-outcome";

pub fn precondition_to_proto(precondition: Precondition) -> pb::Precondition {
    let kind = match precondition {
        Precondition::None => pb::precondition::Kind::None(true),
        Precondition::DoesNotExist => pb::precondition::Kind::DoesNotExist(true),
        Precondition::MatchesVersion(version) => pb::precondition::Kind::MatchesVersion(version.0),
    };
    pb::Precondition { kind: Some(kind) }
}

pub fn precondition_from_proto(precondition: Option<pb::Precondition>) -> Result<Precondition, Status> {
    match precondition.and_then(|p| p.kind) {
        None | Some(pb::precondition::Kind::None(_)) => Ok(Precondition::None),
        Some(pb::precondition::Kind::DoesNotExist(_)) => Ok(Precondition::DoesNotExist),
        Some(pb::precondition::Kind::MatchesVersion(0)) => Err(Status::invalid_argument(
            "precondition version 0 is invalid; versions start at 1",
        )),
        Some(pb::precondition::Kind::MatchesVersion(v)) => Ok(Precondition::MatchesVersion(Version(v))),
    }
}

pub fn value_to_proto(value: VersionedValue) -> pb::VersionedValue {
    pb::VersionedValue {
        version: value.version.0,
        value: value.value,
    }
}

pub fn value_from_proto(value: Option<pb::VersionedValue>) -> Result<VersionedValue, Status> {
    let value = value.ok_or_else(|| Status::invalid_argument("the request carries no value"))?;
    if value.version == 0 {
        return Err(Status::invalid_argument("version 0 is invalid; versions start at 1"));
    }
    Ok(VersionedValue::new(Version(value.version), value.value))
}

fn with_header(mut status: Status, name: &'static str, value: &str) -> Status {
    if let Ok(value) = MetadataValue::try_from(value) {
        status.metadata_mut().insert(name, value);
    }
    status
}

/// The answer of a metadata server that belongs to no cluster yet.
pub fn awaiting_provisioning(message: impl Into<String>) -> Status {
    with_header(unavailable(message), AWAITING_PROVISIONING_HEADER, "1")
}

/// A server-side "not applied, try elsewhere or later" answer.
pub fn unavailable(message: impl Into<String>) -> Status {
    with_header(Status::unavailable(message), NOT_APPLIED_HEADER, "1")
}

pub fn read_error_to_status(error: ReadError) -> Status {
    match error {
        ReadError::Unavailable(message) => unavailable(message),
        ReadError::Rejected(message) => Status::permission_denied(message),
        error @ ReadError::Codec { .. } => Status::internal(error.to_string()),
    }
}

pub fn write_error_to_status(error: WriteError) -> Status {
    match error {
        WriteError::FailedPrecondition { actual, reason, .. } => {
            let status = Status::failed_precondition(reason);
            match actual {
                Some(version) => with_header(status, ACTUAL_VERSION_HEADER, &version.0.to_string()),
                None => status,
            }
        }
        error @ WriteError::TooLarge { .. } => Status::invalid_argument(error.to_string()),
        WriteError::Unavailable(message) => unavailable(message),
        WriteError::UnknownOutcome(message) => with_header(Status::unknown(message), UNKNOWN_OUTCOME_HEADER, "1"),
        WriteError::Rejected(message) => Status::permission_denied(message),
        error @ WriteError::Codec { .. } => Status::internal(error.to_string()),
    }
}

/// Whether a failed call never reached a process at all (the connection was refused or could
/// not be opened), as opposed to a server that answered "not applied".
pub fn never_reached_a_process(status: &Status) -> bool {
    certainly_not_applied(status) && !status.metadata().contains_key(NOT_APPLIED_HEADER)
}

/// Whether a failed call certainly did not reach the server (so a write was not applied).
pub fn certainly_not_applied(status: &Status) -> bool {
    if status.metadata().contains_key(NOT_APPLIED_HEADER) {
        return true;
    }
    let mut text = status.message().to_ascii_lowercase();
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        text.push_str(&cause.to_string().to_ascii_lowercase());
        source = cause.source();
    }
    // Only failures to open a connection prove the request never left; a connection that
    // broke mid-request ("connection closed", "reset") proves nothing.
    [
        "connect error",
        "trying to connect",
        "connection refused",
        "os error 111",
        "dns error",
    ]
    .iter()
    .any(|phrase| text.contains(phrase))
}

/// Whether a failed write may or may not have been applied because the transport failed
/// (as opposed to a server that answered).
pub fn ambiguous_transport_failure(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    ) && !certainly_not_applied(status)
        && !status.metadata().contains_key(UNKNOWN_OUTCOME_HEADER)
}

/// `context: message`, or just the message without a context.
fn prefixed(context: &str, message: &str) -> String {
    if context.is_empty() {
        message.to_owned()
    } else {
        format!("{context}: {message}")
    }
}

/// Maps a status from a metadata server or proxy back to a write error for `key`.
pub fn status_to_write_error(key: &str, status: &Status, context: &str) -> WriteError {
    match status.code() {
        Code::FailedPrecondition => WriteError::FailedPrecondition {
            key: key.to_owned(),
            actual: status
                .metadata()
                .get(ACTUAL_VERSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .map(Version),
            reason: status.message().to_owned(),
        },
        Code::PermissionDenied | Code::InvalidArgument | Code::Unimplemented => {
            WriteError::Rejected(prefixed(context, status.message()))
        }
        Code::Internal => WriteError::Codec {
            key: key.to_owned(),
            reason: prefixed(context, status.message()),
        },
        _ if certainly_not_applied(status) => WriteError::Unavailable(prefixed(context, status.message())),
        _ => WriteError::UnknownOutcome(prefixed(context, status.message())),
    }
}

/// Whether a status came from the connection (HTTP/2 or transport) rather than the server.
fn is_transport_failure(status: &Status) -> bool {
    let message = status.message();
    message.starts_with("h2 protocol error")
        || message.starts_with("transport error")
        || std::error::Error::source(status).is_some()
}

pub fn status_to_read_error(key: &str, status: &Status, context: &str) -> ReadError {
    match status.code() {
        Code::PermissionDenied | Code::InvalidArgument | Code::Unimplemented => {
            ReadError::Rejected(prefixed(context, status.message()))
        }
        // A connection that broke (the server went away mid-call) also surfaces as Internal
        // from the HTTP/2 layer; that is unavailability, not a value that cannot be decoded.
        Code::Internal if is_transport_failure(status) => ReadError::Unavailable(prefixed(context, status.message())),
        Code::Internal => ReadError::Codec {
            key: key.to_owned(),
            reason: prefixed(context, status.message()),
        },
        _ => ReadError::Unavailable(prefixed(context, status.message())),
    }
}
