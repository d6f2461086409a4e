//! Framing: [`Encoder`] turns messages into frames, [`Decoder`] reassembles frames from the
//! arbitrary chunks HTTP/2 DATA frames deliver.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::message::check_type;
use crate::{Message, MessageFlags, MessageHeader, MessageType, ServiceProtocolVersion};

/// Default limit for one incoming message payload (upstream `networking.message-size-limit`).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 32 * 1024 * 1024;

/// Why bytes from the peer could not be turned into messages. All of them are protocol
/// violations that fail the attempt.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The header announces a payload above the configured limit; raised from the header alone,
    /// before buffering the payload.
    #[error("message {ty} of {size} bytes exceeds the message size limit of {limit} bytes")]
    MessageTooLarge { ty: MessageType, size: u32, limit: usize },
    /// A type code the protocol does not define, or one in the unsupported custom range.
    #[error(
        "unknown message type 0x{code:04X}{}",
        if *code >= 0xFC00 { " (custom entries are not supported)" } else { "" }
    )]
    UnknownMessageType { code: u16 },
    /// A known type that the negotiated version does not have (e.g. `AwaitingOn` on V6).
    #[error("message {ty} is not part of service protocol {version}")]
    NotInVersion {
        ty: MessageType,
        version: ServiceProtocolVersion,
    },
    /// The payload is not valid protobuf for its type.
    #[error("cannot decode the payload of message {ty}: {source}")]
    Protobuf {
        ty: MessageType,
        #[source]
        source: prost::DecodeError,
    },
    /// The stream ended inside a frame.
    #[error("stream ended in the middle of a frame ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
}

/// Why a message could not be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The message, or one of its fields, does not exist in the negotiated version.
    #[error("{what} is not part of service protocol {version}")]
    NotInVersion {
        what: &'static str,
        version: ServiceProtocolVersion,
    },
    /// The payload does not fit the header's u32 length.
    #[error("message {ty} of {size} bytes does not fit in a frame")]
    TooLarge { ty: MessageType, size: usize },
    /// prost refused to encode (only on a buffer without room, which `BytesMut` never is).
    #[error("cannot encode message {ty}: {source}")]
    Protobuf {
        ty: MessageType,
        #[source]
        source: prost::EncodeError,
    },
}

/// One frame with its payload still encoded.
///
/// The runtime journals entries as (type, bytes) and replays them unchanged, so it needs
/// frames without a decode/encode round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    header: MessageHeader,
    payload: Bytes,
}

/// Bytes reserved ahead of a partly received frame at most.
const RESERVE_AHEAD: usize = 256 * 1024;

impl RawMessage {
    /// Wraps an already encoded payload (e.g. a stored journal entry) for sending.
    pub fn new(ty: MessageType, flags: MessageFlags, payload: Bytes) -> Result<Self, EncodeError> {
        let length = u32::try_from(payload.len()).map_err(|_| EncodeError::TooLarge {
            ty,
            size: payload.len(),
        })?;
        Ok(RawMessage {
            header: MessageHeader::new(ty, flags, length),
            payload,
        })
    }

    /// The frame's header; its length always equals the payload's.
    pub fn header(&self) -> MessageHeader {
        self.header
    }

    /// Shortcut for `header().message_type()`.
    pub fn message_type(&self) -> MessageType {
        self.header.message_type()
    }

    /// The protobuf payload, header excluded.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Splits the frame into header and payload.
    pub fn into_parts(self) -> (MessageHeader, Bytes) {
        (self.header, self.payload)
    }

    /// Decodes the payload according to its type and `version`.
    pub fn decode(&self, version: ServiceProtocolVersion) -> Result<Message, DecodeError> {
        Message::decode(self.header.message_type(), version, self.payload.clone())
    }

    /// Appends header and payload to `buf`.
    pub fn encode_to(&self, buf: &mut BytesMut) {
        buf.reserve(MessageHeader::SIZE + self.payload.len());
        buf.put_slice(&self.header.to_bytes());
        buf.put_slice(&self.payload);
    }

    /// Header and payload as one buffer, ready to send.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode_to(&mut buf);
        buf.freeze()
    }
}

/// Frames outgoing messages for a stream of one negotiated version.
#[derive(Debug, Clone, Copy)]
pub struct Encoder {
    version: ServiceProtocolVersion,
}

impl Encoder {
    /// An encoder for a stream speaking `version`.
    pub fn new(version: ServiceProtocolVersion) -> Self {
        Encoder { version }
    }

    /// The version messages are checked against.
    pub fn version(&self) -> ServiceProtocolVersion {
        self.version
    }

    /// One frame without flags (the runtime never requests acks).
    pub fn encode(&self, message: &Message) -> Result<Bytes, EncodeError> {
        self.encode_with_flags(message, MessageFlags::EMPTY)
    }

    /// One frame with the given header flags.
    pub fn encode_with_flags(&self, message: &Message, flags: MessageFlags) -> Result<Bytes, EncodeError> {
        let mut buf = BytesMut::new();
        self.encode_to(message, flags, &mut buf)?;
        Ok(buf.freeze())
    }

    /// Appends one frame to `buf`, so several messages can go out in one write. On error
    /// `buf` is left unchanged.
    pub fn encode_to(&self, message: &Message, flags: MessageFlags, buf: &mut BytesMut) -> Result<(), EncodeError> {
        message.check_version(self.version)?;
        let ty = message.message_type();
        let size = message.encoded_len();
        let length = u32::try_from(size).map_err(|_| EncodeError::TooLarge { ty, size })?;
        let start = buf.len();
        buf.reserve(MessageHeader::SIZE + size);
        buf.put_slice(&MessageHeader::new(ty, flags, length).to_bytes());
        if let Err(err) = message.write_payload(buf) {
            buf.truncate(start);
            return Err(err);
        }
        Ok(())
    }
}

/// Reassembles frames from a byte stream of one negotiated version.
///
/// Feed chunks with [`push`](Self::push) as they arrive and pull complete messages with
/// [`next_message`](Self::next_message) (or [`next_raw`](Self::next_raw)) until it returns
/// `Ok(None)`. A partial frame stays buffered until the rest arrives. Errors are final: the
/// stream cannot be resynchronised, so every later call returns the same error.
#[derive(Debug)]
pub struct Decoder {
    version: ServiceProtocolVersion,
    max_message_size: usize,
    buf: BytesMut,
    /// Header of the frame whose payload is still incomplete.
    pending: Option<MessageHeader>,
    failed: Option<DecodeError>,
}

impl Decoder {
    /// A decoder with the default 32 MiB message size limit.
    pub fn new(version: ServiceProtocolVersion) -> Self {
        Self::with_max_message_size(version, DEFAULT_MAX_MESSAGE_SIZE)
    }

    /// A decoder that rejects payloads longer than `max_message_size` bytes (header excluded).
    pub fn with_max_message_size(version: ServiceProtocolVersion, max_message_size: usize) -> Self {
        Decoder {
            version,
            max_message_size,
            buf: BytesMut::new(),
            pending: None,
            failed: None,
        }
    }

    /// The version payloads are decoded with.
    pub fn version(&self) -> ServiceProtocolVersion {
        self.version
    }

    /// The payload size limit in bytes.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Appends a chunk of the incoming stream. Ignored once the decoder has failed.
    pub fn push(&mut self, chunk: impl AsRef<[u8]>) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(chunk.as_ref());
        }
    }

    /// Bytes received but not yet returned as messages (a partial frame, or complete frames
    /// not pulled yet).
    pub fn buffered_len(&self) -> usize {
        self.buf.len() + self.pending.map_or(0, |_| MessageHeader::SIZE)
    }

    /// The next complete frame with its payload undecoded, or `None` until more bytes arrive.
    ///
    /// Size limit, unknown types and types missing from the version are checked as soon as
    /// the header is complete.
    pub fn next_raw(&mut self) -> Result<Option<RawMessage>, DecodeError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        match self.read_frame() {
            Ok(frame) => Ok(frame),
            Err(err) => Err(self.fail(err)),
        }
    }

    /// The next complete, decoded message with its header, or `None` until more bytes arrive.
    pub fn next_message(&mut self) -> Result<Option<(MessageHeader, Message)>, DecodeError> {
        let Some(raw) = self.next_raw()? else {
            return Ok(None);
        };
        match raw.decode(self.version) {
            Ok(message) => Ok(Some((raw.header(), message))),
            Err(err) => Err(self.fail(err)),
        }
    }

    /// Call when the peer closed the stream, after [`next_message`](Self::next_message)
    /// returned `Ok(None)`: whatever is still buffered then is a cut-off frame. Also returns an
    /// earlier error, if any.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        match self.buffered_len() {
            0 => Ok(()),
            buffered => Err(DecodeError::Truncated { buffered }),
        }
    }

    fn fail(&mut self, err: DecodeError) -> DecodeError {
        self.buf.clear();
        self.pending = None;
        self.failed = Some(err.clone());
        err
    }

    fn peek_header(buf: &[u8]) -> MessageHeader {
        let mut bytes = [0u8; MessageHeader::SIZE];
        bytes.copy_from_slice(&buf[..MessageHeader::SIZE]);
        MessageHeader::from_bytes(bytes)
    }

    fn read_frame(&mut self) -> Result<Option<RawMessage>, DecodeError> {
        let header = match self.pending {
            Some(header) => header,
            None => {
                if self.buf.len() < MessageHeader::SIZE {
                    return Ok(None);
                }
                let header = Self::peek_header(&self.buf);
                self.check_header(header)?;
                self.buf.advance(MessageHeader::SIZE);
                self.pending = Some(header);
                header
            }
        };
        let length = header.length() as usize;
        if self.buf.len() < length {
            // Make room for what is likely to arrive soon, not for all the header announces:
            // a peer that announces 32 MiB and sends nothing must not cost 32 MiB.
            self.buf.reserve((length - self.buf.len()).min(RESERVE_AHEAD));
            return Ok(None);
        }
        self.pending = None;
        let payload = self.buf.split_to(length).freeze();
        Ok(Some(RawMessage { header, payload }))
    }

    fn check_header(&self, header: MessageHeader) -> Result<(), DecodeError> {
        let ty = header.message_type();
        check_type(ty, self.version)?;
        if header.length() as usize > self.max_message_size {
            return Err(DecodeError::MessageTooLarge {
                ty,
                size: header.length(),
                limit: self.max_message_size,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;
    use ServiceProtocolVersion::{V6, V7};

    fn frame(code: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&code.to_be_bytes());
        bytes.extend_from_slice(&flags.to_be_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn a_large_announced_frame_reserves_only_what_may_arrive_soon() {
        let mut decoder = Decoder::with_max_message_size(V6, 32 << 20);
        // The header of an OutputCommand announcing 32 MiB, and nothing more.
        let mut header = Vec::new();
        header.extend_from_slice(&0x0401u16.to_be_bytes());
        header.extend_from_slice(&0u16.to_be_bytes());
        header.extend_from_slice(&(32u32 << 20).to_be_bytes());
        decoder.push(&header);
        assert_eq!(decoder.next_message().unwrap(), None);
        assert!(
            decoder.buf.capacity() <= 2 * RESERVE_AHEAD,
            "{}",
            decoder.buf.capacity()
        );
    }

    #[test]
    fn oversized_frame_is_rejected_from_its_header() {
        let mut decoder = Decoder::with_max_message_size(V6, 16);
        // Only the header of an OutputCommand announcing 17 bytes.
        decoder.push(&frame(0x0401, 0, &[0; 17])[..MessageHeader::SIZE]);
        let err = decoder.next_message().unwrap_err();
        assert_eq!(
            err,
            DecodeError::MessageTooLarge {
                ty: MessageType::OutputCommand,
                size: 17,
                limit: 16
            }
        );
        assert_eq!(
            err.to_string(),
            "message OutputCommand (0x0401) of 17 bytes exceeds the message size limit of 16 bytes"
        );
    }

    #[test]
    fn frame_at_the_limit_is_accepted() {
        // An OutputCommand whose Value is 12 bytes: 2 + 2 + 12 = 16 payload bytes.
        let message = Message::from(proto::OutputCommandMessage {
            result: Some(proto::output_command_message::Result::Value(proto::Value {
                content: Bytes::from_static(b"0123456789ab"),
            })),
            name: String::new(),
        });
        let bytes = Encoder::new(V6).encode(&message).unwrap();
        assert_eq!(bytes.len(), MessageHeader::SIZE + 16);
        let mut decoder = Decoder::with_max_message_size(V6, 16);
        decoder.push(&bytes);
        assert_eq!(decoder.next_message().unwrap().map(|(_, m)| m), Some(message));
        assert_eq!(Decoder::new(V6).max_message_size(), 32 * 1024 * 1024);
    }

    #[test]
    fn unknown_type_codes_are_named_in_the_error() {
        for (code, text) in [
            (0x040F, "unknown message type 0x040F"),
            (0x0008, "unknown message type 0x0008"),
            (0x8000, "unknown message type 0x8000"),
            (0xFC01, "unknown message type 0xFC01 (custom entries are not supported)"),
        ] {
            let mut decoder = Decoder::new(V7);
            decoder.push(&frame(code, 0, &[])[..MessageHeader::SIZE]);
            let err = decoder.next_raw().unwrap_err();
            assert_eq!(err, DecodeError::UnknownMessageType { code });
            assert_eq!(err.to_string(), text);
            assert_eq!(
                Message::decode(MessageType::from_code(code), V7, Bytes::new()),
                Err(DecodeError::UnknownMessageType { code })
            );
        }
    }

    #[test]
    fn v7_only_messages_are_rejected_on_older_streams() {
        let awaiting = frame(0x0006, 0, &[0x0a, 0x00]);
        let mut decoder = Decoder::new(V6);
        decoder.push(&awaiting);
        let err = decoder.next_message().unwrap_err();
        assert_eq!(
            err,
            DecodeError::NotInVersion {
                ty: MessageType::AwaitingOn,
                version: V6
            }
        );
        assert_eq!(
            err.to_string(),
            "message AwaitingOn (0x0006) is not part of service protocol V6"
        );

        let mut decoder = Decoder::new(V7);
        decoder.push(&awaiting);
        assert!(matches!(decoder.next_message(), Ok(Some((_, Message::AwaitingOn(_))))));
    }

    #[test]
    fn malformed_payload_is_a_protobuf_error() {
        // Field 1 (id, bytes) claims 5 bytes but only 1 follows.
        let mut decoder = Decoder::new(V6);
        decoder.push(frame(0x0000, 0, &[0x0a, 0x05, 0x01]));
        let err = decoder.next_message().unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Protobuf {
                    ty: MessageType::Start,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("cannot decode the payload of message Start (0x0000)")
        );
    }

    #[test]
    fn errors_are_final() {
        let mut decoder = Decoder::new(V6);
        decoder.push(frame(0xFC00, 0, &[]));
        let first = decoder.next_message().unwrap_err();
        decoder.push(frame(0x0003, 0, &[]));
        assert_eq!(decoder.next_message().unwrap_err(), first);
        assert_eq!(decoder.next_raw().unwrap_err(), first);
        assert_eq!(decoder.finish().unwrap_err(), first);
    }

    #[test]
    fn truncated_stream_is_detected_at_finish() {
        let end = frame(0x0003, 0, &[]);
        let sleep = frame(0x040C, 0, &[0x08, 0x01, 0x58, 0x01]);

        let mut decoder = Decoder::new(V6);
        decoder.push(&end[..5]);
        assert_eq!(decoder.next_message().unwrap(), None);
        assert_eq!(decoder.finish(), Err(DecodeError::Truncated { buffered: 5 }));

        let mut decoder = Decoder::new(V6);
        decoder.push(&sleep[..10]);
        assert_eq!(decoder.next_message().unwrap(), None);
        assert_eq!(decoder.buffered_len(), 10);
        let err = decoder.finish().unwrap_err();
        assert_eq!(err, DecodeError::Truncated { buffered: 10 });
        assert_eq!(
            err.to_string(),
            "stream ended in the middle of a frame (10 bytes buffered)"
        );
        decoder.push(&sleep[10..]);
        assert!(decoder.next_message().unwrap().is_some());
        assert_eq!(decoder.buffered_len(), 0);
        decoder.finish().unwrap();
    }

    #[test]
    fn several_frames_in_one_chunk() {
        let mut bytes = frame(0x0401, 0, &[0x72, 0x00]);
        bytes.extend(frame(0x0003, 0, &[]));
        let mut decoder = Decoder::new(V6);
        decoder.push(&bytes);
        let (_, first) = decoder.next_message().unwrap().unwrap();
        assert_eq!(first.message_type(), MessageType::OutputCommand);
        let (header, second) = decoder.next_message().unwrap().unwrap();
        assert_eq!((header.length(), second), (0, Message::End(proto::EndMessage {})));
        assert_eq!(decoder.next_message().unwrap(), None);
        decoder.finish().unwrap();
    }

    #[test]
    fn raw_messages_carry_stored_entries_unchanged() {
        let payload = Bytes::from_static(&[0x08, 0x01, 0x22, 0x00]);
        let raw = RawMessage::new(
            MessageType::SleepCompletionNotification,
            MessageFlags::EMPTY,
            payload.clone(),
        )
        .unwrap();
        assert_eq!(raw.header().length(), 4);
        assert_eq!(raw.encode().as_ref(), frame(0x800C, 0, &payload).as_slice());
        assert_eq!(
            raw.decode(V6).unwrap(),
            Message::from(proto::SleepCompletionNotificationMessage {
                completion_id: 1,
                void: Some(proto::Void {}),
            })
        );
        let (header, bytes) = raw.into_parts();
        assert_eq!(
            (header.message_type(), bytes),
            (MessageType::SleepCompletionNotification, payload)
        );
    }

    #[test]
    fn encode_to_appends_frames() {
        let encoder = Encoder::new(V7);
        assert_eq!(encoder.version(), V7);
        let mut buf = BytesMut::new();
        encoder
            .encode_to(&Message::End(proto::EndMessage {}), MessageFlags::EMPTY, &mut buf)
            .unwrap();
        let ack = Message::from(proto::ProposeRunCompletionAckMessage { completion_id: 1 });
        encoder.encode_to(&ack, MessageFlags::EMPTY, &mut buf).unwrap();
        assert_eq!(
            buf.as_ref(),
            [0, 3, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 2, 8, 1].as_slice()
        );
        // A refused message leaves the buffer alone.
        assert!(Encoder::new(V6).encode_to(&ack, MessageFlags::EMPTY, &mut buf).is_err());
        assert_eq!(buf.len(), 18);
    }
}
