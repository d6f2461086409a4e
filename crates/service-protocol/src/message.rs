//! [`Message`]: every protocol message as one enum, decoded and encoded by type code.

use bytes::{Bytes, BytesMut};
use prost::Message as _;

use crate::proto;
use crate::{DecodeError, EncodeError, MessageType, ServiceProtocolVersion};

/// Defines [`Message`] and its per-variant plumbing from one list of (variant, proto type).
///
/// `by_type` variants are named like their [`MessageType`] and decoded from the type code
/// alone; `by_version` variants share a type code and are picked by protocol version.
macro_rules! messages {
    (
        by_type { $( $variant:ident($ty:ty) ),* $(,)? }
        by_version { $( $vvariant:ident($vty:ty) = $vtype:ident ),* $(,)? }
    ) => {
        /// One decoded protocol message, so callers can `match` on what arrived.
        ///
        /// Variants are named after their [`MessageType`], except the two layouts of
        /// `Suspension`, which depend on the negotiated version.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Message {
            $( $variant($ty), )*
            $( $vvariant($vty), )*
        }

        impl Message {
            /// The type code this message is sent with.
            pub fn message_type(&self) -> MessageType {
                match self {
                    $( Message::$variant(_) => MessageType::$variant, )*
                    $( Message::$vvariant(_) => MessageType::$vtype, )*
                }
            }

            /// Length of the protobuf payload (header excluded).
            pub fn encoded_len(&self) -> usize {
                match self {
                    $( Message::$variant(m) => m.encoded_len(), )*
                    $( Message::$vvariant(m) => m.encoded_len(), )*
                }
            }

            fn encode_payload_to(&self, buf: &mut BytesMut) -> Result<(), prost::EncodeError> {
                match self {
                    $( Message::$variant(m) => m.encode(buf), )*
                    $( Message::$vvariant(m) => m.encode(buf), )*
                }
            }

            /// Decodes the types whose layout does not depend on the version; `None` otherwise.
            fn decode_by_type(ty: MessageType, payload: Bytes) -> Option<Result<Self, prost::DecodeError>> {
                match ty {
                    $( MessageType::$variant => Some(<$ty>::decode(payload).map(Message::$variant)), )*
                    _ => None,
                }
            }
        }

        $(
            impl From<$ty> for Message {
                fn from(message: $ty) -> Self {
                    Message::$variant(message)
                }
            }
        )*
        $(
            impl From<$vty> for Message {
                fn from(message: $vty) -> Self {
                    Message::$vvariant(message)
                }
            }
        )*
    };
}

messages! {
    by_type {
        Start(proto::StartMessage),
        Error(proto::ErrorMessage),
        End(proto::EndMessage),
        CommandAck(proto::CommandAckMessage),
        ProposeRunCompletion(proto::ProposeRunCompletionMessage),
        AwaitingOn(proto::AwaitingOnMessage),
        ProposeRunCompletionAck(proto::ProposeRunCompletionAckMessage),
        InputCommand(proto::InputCommandMessage),
        OutputCommand(proto::OutputCommandMessage),
        GetLazyStateCommand(proto::GetLazyStateCommandMessage),
        SetStateCommand(proto::SetStateCommandMessage),
        ClearStateCommand(proto::ClearStateCommandMessage),
        ClearAllStateCommand(proto::ClearAllStateCommandMessage),
        GetLazyStateKeysCommand(proto::GetLazyStateKeysCommandMessage),
        GetEagerStateCommand(proto::GetEagerStateCommandMessage),
        GetEagerStateKeysCommand(proto::GetEagerStateKeysCommandMessage),
        GetPromiseCommand(proto::GetPromiseCommandMessage),
        PeekPromiseCommand(proto::PeekPromiseCommandMessage),
        CompletePromiseCommand(proto::CompletePromiseCommandMessage),
        SleepCommand(proto::SleepCommandMessage),
        CallCommand(proto::CallCommandMessage),
        OneWayCallCommand(proto::OneWayCallCommandMessage),
        SendSignalCommand(proto::SendSignalCommandMessage),
        RunCommand(proto::RunCommandMessage),
        AttachInvocationCommand(proto::AttachInvocationCommandMessage),
        GetInvocationOutputCommand(proto::GetInvocationOutputCommandMessage),
        CompleteAwakeableCommand(proto::CompleteAwakeableCommandMessage),
        GetLazyStateCompletionNotification(proto::GetLazyStateCompletionNotificationMessage),
        GetLazyStateKeysCompletionNotification(proto::GetLazyStateKeysCompletionNotificationMessage),
        GetPromiseCompletionNotification(proto::GetPromiseCompletionNotificationMessage),
        PeekPromiseCompletionNotification(proto::PeekPromiseCompletionNotificationMessage),
        CompletePromiseCompletionNotification(proto::CompletePromiseCompletionNotificationMessage),
        SleepCompletionNotification(proto::SleepCompletionNotificationMessage),
        CallCompletionNotification(proto::CallCompletionNotificationMessage),
        CallInvocationIdCompletionNotification(proto::CallInvocationIdCompletionNotificationMessage),
        RunCompletionNotification(proto::RunCompletionNotificationMessage),
        AttachInvocationCompletionNotification(proto::AttachInvocationCompletionNotificationMessage),
        GetInvocationOutputCompletionNotification(proto::GetInvocationOutputCompletionNotificationMessage),
        SignalNotification(proto::SignalNotificationMessage),
    }
    by_version {
        // V7: a future tree in field 4.
        Suspension(proto::SuspensionMessage) = Suspension,
        // V5 and V6: three flat lists in fields 1-3.
        SuspensionV6(proto::SuspensionMessageV6) = Suspension,
    }
}

impl Message {
    /// Decodes a payload received with type `ty` on a stream speaking `version`.
    ///
    /// Fails for unknown codes (including the custom range), for types the version does not
    /// have, and for malformed protobuf. `Suspension` decodes to [`Message::Suspension`] on V7
    /// and to [`Message::SuspensionV6`] below.
    pub fn decode(ty: MessageType, version: ServiceProtocolVersion, payload: Bytes) -> Result<Self, DecodeError> {
        check_type(ty, version)?;
        let decoded = if ty == MessageType::Suspension {
            if version >= ServiceProtocolVersion::V7 {
                proto::SuspensionMessage::decode(payload).map(Message::Suspension)
            } else {
                proto::SuspensionMessageV6::decode(payload).map(Message::SuspensionV6)
            }
        } else {
            match Self::decode_by_type(ty, payload) {
                Some(decoded) => decoded,
                // Every known type is in the table; keep unknown ones an error, not a panic.
                None => return Err(DecodeError::UnknownMessageType { code: ty.code() }),
            }
        };
        decoded.map_err(|source| DecodeError::Protobuf { ty, source })
    }

    /// Encodes the protobuf payload alone (no header).
    pub fn encode_payload(&self) -> Result<Bytes, EncodeError> {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode_payload_to(&mut buf)
            .map_err(|source| EncodeError::Protobuf {
                ty: self.message_type(),
                source,
            })?;
        Ok(buf.freeze())
    }

    /// Appends the payload to `buf`; used by the encoder after writing the header.
    pub(crate) fn write_payload(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        self.encode_payload_to(buf).map_err(|source| EncodeError::Protobuf {
            ty: self.message_type(),
            source,
        })
    }

    /// Checks that this message may be sent on a `version` stream.
    ///
    /// Rejects V7-only types and layouts below V7 (and the legacy suspension layout on V7), so
    /// a bug in the caller shows up as an error instead of fields the SDK silently ignores.
    pub fn check_version(&self, version: ServiceProtocolVersion) -> Result<(), EncodeError> {
        let ty = self.message_type();
        if !ty.is_supported_by(version) {
            return Err(EncodeError::NotInVersion {
                what: ty.name(),
                version,
            });
        }
        let v7 = version >= ServiceProtocolVersion::V7;
        let not_in_version = |what: &'static str| Err(EncodeError::NotInVersion { what, version });
        match self {
            Message::Suspension(_) if !v7 => not_in_version("Suspension with a future tree"),
            Message::SuspensionV6(_) if v7 => not_in_version("Suspension with flat waiting lists"),
            Message::Start(start) if !v7 => {
                if start.scope.is_some() {
                    not_in_version("StartMessage.scope")
                } else if start.limit_key.is_some() {
                    not_in_version("StartMessage.limit_key")
                } else if start.idempotency_key.is_some() {
                    not_in_version("StartMessage.idempotency_key")
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }
}

/// Rejects codes the protocol does not define and types `version` does not have.
pub(crate) fn check_type(ty: MessageType, version: ServiceProtocolVersion) -> Result<(), DecodeError> {
    match ty {
        MessageType::Unknown(code) => Err(DecodeError::UnknownMessageType { code }),
        ty if !ty.is_supported_by(version) => Err(DecodeError::NotInVersion { ty, version }),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
