//! `sys_journal.entry_json` and `entry_lite_json`: a journal entry as JSON in the reference's
//! shape, which the web UI renders (`{"Command":{"SetState":{"key":…}}}`,
//! `{"Notification":{…}}`). The full form carries payloads as arrays of bytes; the lite form
//! leaves them out and names only the kind of a result (`"Success"`, `"Void"`, `"Failure"`).

use bytes::Bytes;
use prost::Message as _;
use restate_service_protocol::{MessageType, proto};
use serde_json::{Value, json};

/// Any completion notification: they share field numbers (id 1, void 4, value 5, failure 6,
/// invocation id 16, state keys 17).
#[derive(Clone, PartialEq, prost::Message)]
struct CompletionProbe {
    #[prost(uint32, tag = "1")]
    completion_id: u32,
    #[prost(message, optional, tag = "4")]
    void: Option<proto::Void>,
    #[prost(message, optional, tag = "5")]
    value: Option<proto::Value>,
    #[prost(message, optional, tag = "6")]
    failure: Option<proto::Failure>,
    #[prost(string, tag = "16")]
    invocation_id: String,
    #[prost(message, optional, tag = "17")]
    state_keys: Option<proto::StateKeys>,
}

/// What a journal entry's JSON holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// Payloads included (`entry_json`).
    Full,
    /// No payloads (`entry_lite_json`).
    Lite,
}

/// A result: `{"Success":[bytes]}` / `{"Failure":{…}}` / `"Void"` in full, the variant name in lite.
fn result(form: Form, void: bool, value: Option<&[u8]>, failure: Option<&proto::Failure>) -> Value {
    match (form, void, value, failure) {
        (_, _, _, Some(failure)) if form == Form::Full => json!({"Failure": failure_json(failure)}),
        (_, _, _, Some(_)) => json!("Failure"),
        (Form::Full, _, Some(value), None) => json!({"Success": value}),
        (Form::Lite, _, Some(_), None) => json!("Success"),
        (_, true, None, None) => json!("Void"),
        _ => Value::Null,
    }
}

fn failure_json(failure: &proto::Failure) -> Value {
    let metadata: Vec<Value> = failure
        .metadata
        .iter()
        .map(|m| json!({"key": m.key, "value": m.value}))
        .collect();
    json!({"code": failure.code, "message": failure.message, "metadata": metadata})
}

fn headers(headers: &[proto::Header]) -> Vec<Value> {
    headers
        .iter()
        .map(|h| json!({"name": h.key, "value": h.value}))
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The callee as the reference names it: by service kind, which a call does not carry, so a
/// keyed call is shown as a virtual object's.
fn invocation_target(service: &str, key: &str, handler: &str) -> Value {
    match key {
        "" => json!({"Service": {"name": service, "handler": handler}}),
        key => json!({"VirtualObject": {"name": service, "key": key, "handler": handler}}),
    }
}

/// The JSON of one entry; `callee` is the id a call's invocation-id notification carried.
pub(crate) fn entry_json(ty: MessageType, payload: &Bytes, form: Form, callee: Option<&str>) -> Value {
    let full = form == Form::Full;
    let short = short_name(ty);
    let body = || -> Option<Value> {
        Some(match ty {
            MessageType::InputCommand => {
                let m = proto::InputCommandMessage::decode(payload.clone()).ok()?;
                let mut input = json!({"headers": headers(&m.headers), "name": m.name});
                if full {
                    input["payload"] = json!(m.value.map(|v| v.content.to_vec()).unwrap_or_default());
                }
                input
            }
            MessageType::OutputCommand => {
                let m = proto::OutputCommandMessage::decode(payload.clone()).ok()?;
                use proto::output_command_message::Result as R;
                let (value, failure) = match &m.result {
                    Some(R::Value(v)) => (Some(v.content.as_ref()), None),
                    Some(R::Failure(f)) => (None, Some(f)),
                    None => (None, None),
                };
                json!({"result": result(form, false, value, failure), "name": m.name})
            }
            MessageType::GetLazyStateCommand => {
                let m = proto::GetLazyStateCommandMessage::decode(payload.clone()).ok()?;
                json!({"key": text(&m.key), "completion_id": m.result_completion_id, "name": m.name})
            }
            MessageType::GetLazyStateKeysCommand => {
                let m = proto::GetLazyStateKeysCommandMessage::decode(payload.clone()).ok()?;
                json!({"completion_id": m.result_completion_id, "name": m.name})
            }
            MessageType::GetEagerStateCommand => {
                let m = proto::GetEagerStateCommandMessage::decode(payload.clone()).ok()?;
                use proto::get_eager_state_command_message::Result as R;
                let (void, value) = match &m.result {
                    Some(R::Void(_)) => (true, None),
                    Some(R::Value(v)) => (false, Some(v.content.as_ref())),
                    None => (false, None),
                };
                json!({"key": text(&m.key), "result": result(form, void, value, None), "name": m.name})
            }
            MessageType::GetEagerStateKeysCommand => {
                let m = proto::GetEagerStateKeysCommandMessage::decode(payload.clone()).ok()?;
                let keys: Vec<String> = m
                    .value
                    .map(|k| k.keys.iter().map(|k| text(k)).collect())
                    .unwrap_or_default();
                match form {
                    Form::Full => json!({"result": {"StateKeys": keys}, "name": m.name}),
                    Form::Lite => json!({"result": "StateKeys", "name": m.name}),
                }
            }
            MessageType::SetStateCommand => {
                let m = proto::SetStateCommandMessage::decode(payload.clone()).ok()?;
                let mut set = json!({"key": text(&m.key), "name": m.name});
                if full {
                    set["value"] = json!(m.value.map(|v| v.content.to_vec()).unwrap_or_default());
                }
                set
            }
            MessageType::ClearStateCommand => {
                let m = proto::ClearStateCommandMessage::decode(payload.clone()).ok()?;
                json!({"key": text(&m.key), "name": m.name})
            }
            MessageType::ClearAllStateCommand => {
                let m = proto::ClearAllStateCommandMessage::decode(payload.clone()).ok()?;
                json!({"name": m.name})
            }
            MessageType::SleepCommand => {
                let m = proto::SleepCommandMessage::decode(payload.clone()).ok()?;
                json!({"wake_up_time": m.wake_up_time, "completion_id": m.result_completion_id, "name": m.name})
            }
            MessageType::CallCommand => {
                let m = proto::CallCommandMessage::decode(payload.clone()).ok()?;
                let target = invocation_target(&m.service_name, &m.key, &m.handler_name);
                let mut call = json!({
                    "invocation_id": callee, "invocation_target": target, "headers": headers(&m.headers),
                    "invocation_id_completion_id": m.invocation_id_notification_idx,
                    "result_completion_id": m.result_completion_id, "name": m.name,
                });
                if full {
                    call["request"] = json!({
                        "parameter": m.parameter.to_vec(), "headers": headers(&m.headers),
                        "invocation_id": callee, "invocation_target": call["invocation_target"].clone(),
                    });
                }
                call
            }
            MessageType::OneWayCallCommand => {
                let m = proto::OneWayCallCommandMessage::decode(payload.clone()).ok()?;
                let target = invocation_target(&m.service_name, &m.key, &m.handler_name);
                let mut call = json!({
                    "invocation_id": callee, "invocation_target": target, "headers": headers(&m.headers),
                    "invocation_id_completion_id": m.invocation_id_notification_idx,
                    "invoke_time": m.invoke_time, "name": m.name,
                });
                if full {
                    call["request"] = json!({
                        "parameter": m.parameter.to_vec(), "headers": headers(&m.headers),
                        "invocation_id": callee, "invocation_target": call["invocation_target"].clone(),
                    });
                }
                call
            }
            MessageType::RunCommand => {
                let m = proto::RunCommandMessage::decode(payload.clone()).ok()?;
                json!({"completion_id": m.result_completion_id, "name": m.name})
            }
            MessageType::GetPromiseCommand => {
                let m = proto::GetPromiseCommandMessage::decode(payload.clone()).ok()?;
                json!({"key": m.key, "completion_id": m.result_completion_id, "name": m.name})
            }
            MessageType::PeekPromiseCommand => {
                let m = proto::PeekPromiseCommandMessage::decode(payload.clone()).ok()?;
                json!({"key": m.key, "completion_id": m.result_completion_id, "name": m.name})
            }
            MessageType::CompletePromiseCommand => {
                let m = proto::CompletePromiseCommandMessage::decode(payload.clone()).ok()?;
                use proto::complete_promise_command_message::Completion as C;
                let (value, failure) = match &m.completion {
                    Some(C::CompletionValue(v)) => (Some(v.content.as_ref()), None),
                    Some(C::CompletionFailure(f)) => (None, Some(f)),
                    None => (None, None),
                };
                json!({
                    "key": m.key, "value": result(form, false, value, failure),
                    "completion_id": m.result_completion_id, "name": m.name,
                })
            }
            MessageType::CompleteAwakeableCommand => {
                let m = proto::CompleteAwakeableCommandMessage::decode(payload.clone()).ok()?;
                use proto::complete_awakeable_command_message::Result as R;
                let (value, failure) = match &m.result {
                    Some(R::Value(v)) => (Some(v.content.as_ref()), None),
                    Some(R::Failure(f)) => (None, Some(f)),
                    None => (None, None),
                };
                json!({"id": m.awakeable_id, "result": result(form, false, value, failure), "name": m.name})
            }
            MessageType::SendSignalCommand => {
                let m = proto::SendSignalCommandMessage::decode(payload.clone()).ok()?;
                use proto::send_signal_command_message::{Result as R, SignalId};
                let id = match &m.signal_id {
                    Some(SignalId::Idx(i)) => json!({"Index": i}),
                    Some(SignalId::Name(n)) => json!({"Name": n}),
                    None => Value::Null,
                };
                let (void, value, failure) = match &m.result {
                    Some(R::Void(_)) => (true, None, None),
                    Some(R::Value(v)) => (false, Some(v.content.as_ref()), None),
                    Some(R::Failure(f)) => (false, None, Some(f)),
                    None => (false, None, None),
                };
                json!({
                    "signal_id": id, "target_invocation_id": m.target_invocation_id,
                    "result": result(form, void, value, failure), "name": m.entry_name,
                })
            }
            MessageType::AttachInvocationCommand => {
                let m = proto::AttachInvocationCommandMessage::decode(payload.clone()).ok()?;
                use proto::attach_invocation_command_message::Target as T;
                let target = match &m.target {
                    Some(T::InvocationId(id)) => json!({"InvocationId": id}),
                    _ => Value::Null,
                };
                json!({"target": target, "completion_id": m.result_completion_id, "name": m.name})
            }
            MessageType::GetInvocationOutputCommand => {
                let m = proto::GetInvocationOutputCommandMessage::decode(payload.clone()).ok()?;
                use proto::get_invocation_output_command_message::Target as T;
                let target = match &m.target {
                    Some(T::InvocationId(id)) => json!({"InvocationId": id}),
                    _ => Value::Null,
                };
                json!({"target": target, "completion_id": m.result_completion_id, "name": m.name})
            }
            MessageType::SignalNotification => {
                let m = proto::SignalNotificationMessage::decode(payload.clone()).ok()?;
                use proto::signal_notification_message::{Result as R, SignalId};
                let (void, value, failure) = match &m.result {
                    Some(R::Void(_)) => (true, None, None),
                    Some(R::Value(v)) => (false, Some(v.content.as_ref()), None),
                    Some(R::Failure(f)) => (false, None, Some(f)),
                    None => (false, None, None),
                };
                let outcome = result(form, void, value, failure);
                return Some(match (form, &m.signal_id) {
                    (Form::Full, Some(SignalId::Idx(i))) => json!({"Signal": {"id": {"Index": i}, "result": outcome}}),
                    (Form::Full, Some(SignalId::Name(n))) => json!({"Signal": {"id": {"Name": n}, "result": outcome}}),
                    (Form::Lite, Some(SignalId::Idx(i))) => json!({"id": {"SignalIndex": i}, "result": outcome}),
                    (Form::Lite, Some(SignalId::Name(n))) => json!({"id": {"SignalName": n}, "result": outcome}),
                    (_, None) => json!({}),
                });
            }
            _ if ty.kind() == restate_service_protocol::MessageKind::Notification => {
                let m = CompletionProbe::decode(payload.clone()).ok()?;
                let outcome = match (&m.state_keys, m.invocation_id.is_empty()) {
                    (Some(keys), _) => match form {
                        Form::Full => json!({"StateKeys": keys.keys.iter().map(|k| text(k)).collect::<Vec<_>>()}),
                        Form::Lite => json!("StateKeys"),
                    },
                    (None, false) => json!({"InvocationId": m.invocation_id}),
                    (None, true) => result(
                        form,
                        m.void.is_some(),
                        m.value.as_ref().map(|v| v.content.as_ref()),
                        m.failure.as_ref(),
                    ),
                };
                return Some(match form {
                    Form::Full => json!({"Completion": {short: {"completion_id": m.completion_id, "result": outcome}}}),
                    Form::Lite => json!({"id": {"CompletionId": m.completion_id}, "result": outcome}),
                });
            }
            _ => json!({}),
        })
    };
    let kind = if ty.is_command() { "Command" } else { "Notification" };
    let inner = body().unwrap_or_else(|| json!({}));
    if ty.is_command() {
        json!({ kind: { short: inner } })
    } else {
        json!({ kind: inner })
    }
}

/// `SleepCommand` → `Sleep`, `SleepCompletionNotification` → `Sleep`, `SignalNotification` →
/// `Signal`.
pub(crate) fn short_name(ty: MessageType) -> &'static str {
    let name = ty.name();
    for suffix in ["Command", "CompletionNotification", "Notification"] {
        if let Some(short) = name.strip_suffix(suffix) {
            return short;
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(message: impl prost::Message) -> Bytes {
        Bytes::from(message.encode_to_vec())
    }

    #[test]
    fn state_commands_carry_their_key_and_the_full_form_its_value() {
        let set = encode(proto::SetStateCommandMessage {
            key: Bytes::from_static(b"total"),
            value: Some(proto::Value {
                content: Bytes::from_static(b"7"),
            }),
            name: String::new(),
        });
        let lite = entry_json(MessageType::SetStateCommand, &set, Form::Lite, None);
        assert_eq!(lite, json!({"Command": {"SetState": {"key": "total", "name": ""}}}));
        let full = entry_json(MessageType::SetStateCommand, &set, Form::Full, None);
        assert_eq!(full["Command"]["SetState"]["value"], json!([55]));
    }

    #[test]
    fn completions_name_their_id_and_result_in_both_forms() {
        let run = encode(proto::RunCompletionNotificationMessage {
            completion_id: 3,
            result: Some(proto::run_completion_notification_message::Result::Value(
                proto::Value {
                    content: Bytes::from_static(b"ok"),
                },
            )),
        });
        let lite = entry_json(MessageType::RunCompletionNotification, &run, Form::Lite, None);
        assert_eq!(
            lite,
            json!({"Notification": {"id": {"CompletionId": 3}, "result": "Success"}})
        );
        let full = entry_json(MessageType::RunCompletionNotification, &run, Form::Full, None);
        assert_eq!(
            full,
            json!({"Notification": {"Completion": {"Run": {"completion_id": 3, "result": {"Success": [111, 107]}}}}})
        );
    }

    #[test]
    fn an_output_failure_is_named_in_lite_and_described_in_full() {
        let output = encode(proto::OutputCommandMessage {
            result: Some(proto::output_command_message::Result::Failure(proto::Failure {
                code: 400,
                message: "no".into(),
                metadata: vec![],
            })),
            name: String::new(),
        });
        let lite = entry_json(MessageType::OutputCommand, &output, Form::Lite, None);
        assert_eq!(lite["Command"]["Output"]["result"], json!("Failure"));
        let full = entry_json(MessageType::OutputCommand, &output, Form::Full, None);
        assert_eq!(
            full["Command"]["Output"]["result"],
            json!({"Failure": {"code": 400, "message": "no", "metadata": []}})
        );
    }
}
