//! Journal notifications the state machine appends, and failures in protocol form.

use super::*;

/// A notification to append: its type, payload and the completion id it resolves.
pub(super) struct Note {
    pub(super) ty: MessageType,
    pub(super) payload: Vec<u8>,
    pub(super) completion_id: Option<u32>,
    pub(super) signal: Option<proto::signal_notification_message::SignalId>,
}

impl Note {
    /// The callee's id, for the `invocation_id_notification_idx` of a call or send.
    pub(super) fn call_id(completion_id: u32, call: &ResolvedCall) -> Self {
        let message = proto::CallInvocationIdCompletionNotificationMessage {
            completion_id,
            invocation_id: call.callee.to_string(),
        };
        Self::new(
            MessageType::CallInvocationIdCompletionNotification,
            &message,
            completion_id,
        )
    }

    pub(super) fn new(ty: MessageType, message: &impl prost::Message, completion_id: u32) -> Self {
        Self {
            ty,
            payload: message.encode_to_vec(),
            completion_id: Some(completion_id),
            signal: None,
        }
    }

    /// A signal by index (`SignalId::Idx`) or by name.
    pub(super) fn signal(signal: proto::signal_notification_message::SignalId, result: SignalResult) -> Self {
        use proto::signal_notification_message::Result;
        let result = match result {
            SignalResult::Void => Result::Void(proto::Void {}),
            SignalResult::Value(value) => Result::Value(proto::Value {
                content: Bytes::from(value),
            }),
            SignalResult::Failure { code, message } => Result::Failure(proto::Failure {
                code: u32::from(code),
                message,
                metadata: Vec::new(),
            }),
        };
        let message = proto::SignalNotificationMessage {
            signal_id: Some(signal.clone()),
            result: Some(result),
        };
        Self {
            ty: MessageType::SignalNotification,
            payload: message.encode_to_vec(),
            completion_id: None,
            signal: Some(signal),
        }
    }
}

/// An SDK's failure as the invocation's result (codes outside u16 become 500).
pub(crate) fn failure_of(failure: proto::Failure) -> InvocationResult {
    InvocationResult::Failure {
        code: u16::try_from(failure.code).unwrap_or(500),
        message: failure.message,
        metadata: failure.metadata.into_iter().map(|m| (m.key, m.value)).collect(),
    }
}

/// A failed result as the protocol's failure, metadata included.
pub(crate) fn proto_failure(code: u16, message: String, metadata: Vec<(String, String)>) -> proto::Failure {
    proto::Failure {
        code: u32::from(code),
        message,
        metadata: metadata
            .into_iter()
            .map(|(key, value)| proto::FailureMetadata { key, value })
            .collect(),
    }
}
