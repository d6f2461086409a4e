//! The 8-byte frame header: message type, flags and payload length.

use std::fmt;

use crate::ServiceProtocolVersion;

/// Defines [`MessageType`] from one table so codes, names and kinds cannot drift apart.
macro_rules! message_types {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal ),* $(,)?) => {
        /// What a frame carries, from the header's u16 type code.
        ///
        /// Codes outside the table decode to [`MessageType::Unknown`] so a header can always be
        /// parsed; the [`Decoder`](crate::Decoder) then rejects the frame, as the protocol requires.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum MessageType {
            $( $(#[$doc])* $variant, )*
            /// A code this implementation does not know (including the custom range 0xFC00..).
            Unknown(u16),
        }

        impl MessageType {
            /// Every known message type, in code order; handy for exhaustive tests and tables.
            pub const ALL: &'static [MessageType] = &[$( MessageType::$variant, )*];

            /// Maps a wire code to its type; never fails so that headers always parse.
            pub const fn from_code(code: u16) -> Self {
                match code {
                    $( $code => MessageType::$variant, )*
                    other => MessageType::Unknown(other),
                }
            }

            /// The wire code written into the header.
            pub const fn code(self) -> u16 {
                match self {
                    $( MessageType::$variant => $code, )*
                    MessageType::Unknown(code) => code,
                }
            }

            /// The type's name (the variant name), for logs and error messages.
            pub const fn name(self) -> &'static str {
                match self {
                    $( MessageType::$variant => stringify!($variant), )*
                    MessageType::Unknown(_) => "Unknown",
                }
            }
        }
    };
}

message_types! {
    /// Runtime → SDK: opens the attempt.
    Start = 0x0000,
    /// SDK → runtime: blocked with closed input; decoded by version (flat lists before V7).
    Suspension = 0x0001,
    /// SDK → runtime: the attempt failed.
    Error = 0x0002,
    /// SDK → runtime: the attempt finished.
    End = 0x0003,
    /// Runtime → SDK: a command is durable; only when the SDK asked for it.
    CommandAck = 0x0004,
    /// SDK → runtime: result of a `ctx.run` closure.
    ProposeRunCompletion = 0x0005,
    /// SDK → runtime (V7): what the SDK waits on right now.
    AwaitingOn = 0x0006,
    /// Runtime → SDK (V7): the proposed run completion is stored.
    ProposeRunCompletionAck = 0x0007,
    InputCommand = 0x0400,
    OutputCommand = 0x0401,
    GetLazyStateCommand = 0x0402,
    SetStateCommand = 0x0403,
    ClearStateCommand = 0x0404,
    ClearAllStateCommand = 0x0405,
    GetLazyStateKeysCommand = 0x0406,
    GetEagerStateCommand = 0x0407,
    GetEagerStateKeysCommand = 0x0408,
    GetPromiseCommand = 0x0409,
    PeekPromiseCommand = 0x040A,
    CompletePromiseCommand = 0x040B,
    SleepCommand = 0x040C,
    CallCommand = 0x040D,
    OneWayCallCommand = 0x040E,
    SendSignalCommand = 0x0410,
    RunCommand = 0x0411,
    AttachInvocationCommand = 0x0412,
    GetInvocationOutputCommand = 0x0413,
    CompleteAwakeableCommand = 0x0414,
    GetLazyStateCompletionNotification = 0x8002,
    GetLazyStateKeysCompletionNotification = 0x8006,
    GetPromiseCompletionNotification = 0x8009,
    PeekPromiseCompletionNotification = 0x800A,
    CompletePromiseCompletionNotification = 0x800B,
    SleepCompletionNotification = 0x800C,
    CallCompletionNotification = 0x800D,
    CallInvocationIdCompletionNotification = 0x800E,
    RunCompletionNotification = 0x8011,
    AttachInvocationCompletionNotification = 0x8012,
    GetInvocationOutputCompletionNotification = 0x8013,
    SignalNotification = 0xFBFF,
}

/// The range a type code falls in; the runtime journals commands and notifications but not
/// control messages, and rejects custom entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// 0x0000..=0x03FF
    Control,
    /// 0x0400..=0x7FFF
    Command,
    /// 0x8000..=0xFBFF
    Notification,
    /// 0xFC00..=0xFFFF: custom entries, not supported.
    Custom,
}

impl MessageKind {
    /// Classifies a raw code by range, known or not.
    pub const fn of_code(code: u16) -> Self {
        match code {
            0x0000..=0x03FF => MessageKind::Control,
            0x0400..=0x7FFF => MessageKind::Command,
            0x8000..=0xFBFF => MessageKind::Notification,
            _ => MessageKind::Custom,
        }
    }
}

impl MessageType {
    /// The range this type's code falls in.
    pub const fn kind(self) -> MessageKind {
        MessageKind::of_code(self.code())
    }

    /// Commands are journaled and count towards the command index.
    pub const fn is_command(self) -> bool {
        matches!(self.kind(), MessageKind::Command)
    }

    /// Notifications are journaled and delivered to the SDK.
    pub const fn is_notification(self) -> bool {
        matches!(self.kind(), MessageKind::Notification)
    }

    /// The first protocol version that has this message; `None` for unknown codes.
    ///
    /// Lets the codec refuse V7-only messages on a V5/V6 stream instead of confusing the peer.
    pub const fn min_version(self) -> Option<ServiceProtocolVersion> {
        match self {
            MessageType::Unknown(_) => None,
            MessageType::AwaitingOn | MessageType::ProposeRunCompletionAck => Some(ServiceProtocolVersion::V7),
            _ => Some(ServiceProtocolVersion::V5),
        }
    }

    /// Whether `version` knows this message type.
    pub fn is_supported_by(self, version: ServiceProtocolVersion) -> bool {
        self.min_version().is_some_and(|min| version >= min)
    }
}

impl From<u16> for MessageType {
    fn from(code: u16) -> Self {
        MessageType::from_code(code)
    }
}

impl From<MessageType> for u16 {
    fn from(ty: MessageType) -> Self {
        ty.code()
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:04X})", self.name(), self.code())
    }
}

/// The header's 16 flag bits. Only [`MessageFlags::REQUESTED_ACK`] has a meaning in V5+;
/// the other (reserved) bits are kept as received so a frame re-encodes byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MessageFlags(u16);

impl MessageFlags {
    /// No flag set.
    pub const EMPTY: MessageFlags = MessageFlags(0);
    /// Bit 47 of the header: the sender wants an ack once the message is durable. V7 SDKs set
    /// it on `ProposeRunCompletion`; it would also be honoured on commands.
    pub const REQUESTED_ACK: MessageFlags = MessageFlags(0x8000);

    /// Wraps raw bits as found in a header.
    pub const fn from_bits(bits: u16) -> Self {
        MessageFlags(bits)
    }

    /// The raw bits, as written into a header.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Whether the sender asked for an ack.
    pub const fn requested_ack(self) -> bool {
        self.0 & Self::REQUESTED_ACK.0 != 0
    }

    /// Returns these flags with the ack request set or cleared.
    pub const fn with_requested_ack(self, requested: bool) -> Self {
        if requested {
            MessageFlags(self.0 | Self::REQUESTED_ACK.0)
        } else {
            MessageFlags(self.0 & !Self::REQUESTED_ACK.0)
        }
    }
}

/// One frame header: type (u16) ‖ flags (u16) ‖ payload length (u32), big-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageHeader {
    ty: MessageType,
    flags: MessageFlags,
    length: u32,
}

impl MessageHeader {
    /// Size of an encoded header in bytes.
    pub const SIZE: usize = 8;

    /// A header for a payload of `length` bytes.
    pub const fn new(ty: MessageType, flags: MessageFlags, length: u32) -> Self {
        MessageHeader { ty, flags, length }
    }

    /// The message type from bits 63..48.
    pub const fn message_type(&self) -> MessageType {
        self.ty
    }

    /// The flag bits 47..32.
    pub const fn flags(&self) -> MessageFlags {
        self.flags
    }

    /// Shortcut for `flags().requested_ack()`.
    pub const fn requested_ack(&self) -> bool {
        self.flags.requested_ack()
    }

    /// Payload length in bytes, header excluded.
    pub const fn length(&self) -> u32 {
        self.length
    }

    /// The header as the big-endian u64 the protocol defines.
    pub const fn to_u64(&self) -> u64 {
        ((self.ty.code() as u64) << 48) | ((self.flags.bits() as u64) << 32) | self.length as u64
    }

    /// Splits a header u64 into its parts; never fails (unknown types are kept as codes).
    pub const fn from_u64(raw: u64) -> Self {
        MessageHeader {
            ty: MessageType::from_code((raw >> 48) as u16),
            flags: MessageFlags::from_bits((raw >> 32) as u16),
            length: raw as u32,
        }
    }

    /// The 8 header bytes as they go on the wire.
    pub const fn to_bytes(&self) -> [u8; Self::SIZE] {
        self.to_u64().to_be_bytes()
    }

    /// Parses 8 header bytes from the wire.
    pub const fn from_bytes(bytes: [u8; Self::SIZE]) -> Self {
        Self::from_u64(u64::from_be_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &ty in MessageType::ALL {
            assert!(seen.insert(ty.code()), "duplicate code for {ty}");
            assert_eq!(MessageType::from_code(ty.code()), ty);
            assert_ne!(ty.kind(), MessageKind::Custom, "{ty}");
        }
        assert_eq!(MessageType::from_code(0x040F), MessageType::Unknown(0x040F));
        assert_eq!(MessageType::Unknown(0xFC01).code(), 0xFC01);
        assert_eq!(MessageType::Unknown(0xFC01).kind(), MessageKind::Custom);
    }

    #[test]
    fn kinds_follow_code_ranges() {
        assert_eq!(MessageType::ProposeRunCompletionAck.kind(), MessageKind::Control);
        assert!(MessageType::CompleteAwakeableCommand.is_command());
        assert!(MessageType::SignalNotification.is_notification());
        assert!(!MessageType::Start.is_command());
        assert!(!MessageType::AwaitingOn.is_supported_by(ServiceProtocolVersion::V6));
        assert!(MessageType::AwaitingOn.is_supported_by(ServiceProtocolVersion::V7));
        assert!(!MessageType::Unknown(0x0008).is_supported_by(ServiceProtocolVersion::V7));
    }

    #[test]
    fn header_layout_is_type_flags_length_big_endian() {
        let header = MessageHeader::new(MessageType::ProposeRunCompletion, MessageFlags::REQUESTED_ACK, 0x11);
        assert_eq!(header.to_bytes(), [0x00, 0x05, 0x80, 0x00, 0x00, 0x00, 0x00, 0x11]);
        assert_eq!(header.to_u64(), 0x0005_8000_0000_0011);
        assert_eq!(MessageHeader::from_bytes(header.to_bytes()), header);
        assert!(header.requested_ack());

        let signal = MessageHeader::from_bytes([0xFB, 0xFF, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04]);
        assert_eq!(signal.message_type(), MessageType::SignalNotification);
        assert_eq!(signal.length(), 0x0102_0304);
        assert!(!signal.requested_ack());
    }

    #[test]
    fn reserved_flag_bits_are_preserved() {
        let header = MessageHeader::from_bytes([0x04, 0x0C, 0x80, 0x01, 0, 0, 0, 0]);
        assert!(header.requested_ack());
        assert_eq!(header.flags().bits(), 0x8001);
        assert_eq!(header.to_bytes(), [0x04, 0x0C, 0x80, 0x01, 0, 0, 0, 0]);
        assert_eq!(header.flags().with_requested_ack(false).bits(), 0x0001);
    }
}
