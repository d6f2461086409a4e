//! `sys_journal`: the journal of an invocation, one row per command or notification.

use std::collections::HashMap;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use prost::Message as _;
use restate_partition_api::introspect::{JournalRow, Page};
use restate_service_protocol::{MessageType, proto};
use restate_types::InvocationId;
use serde_json::json;

use crate::entry_json::{Form, entry_json, short_name};
use crate::rows::{Rows, schema, timestamp};
use crate::table::{CHUNK_ROWS, Cursor, Scan, Source, SysTable, storage};

/// The completion id a command is completed with (`result_completion_id`, field 11 of every
/// command that has one).
#[derive(Clone, PartialEq, prost::Message)]
struct ResultCompletionProbe {
    #[prost(uint32, tag = "11")]
    result_completion_id: u32,
}

/// The completion id a completion notification carries (field 1 of all of them).
#[derive(Clone, PartialEq, prost::Message)]
struct CompletionIdProbe {
    #[prost(uint32, tag = "1")]
    completion_id: u32,
}

/// The `name` of a command (field 12 of every command).
#[derive(Clone, PartialEq, prost::Message)]
struct NameProbe {
    #[prost(string, tag = "12")]
    name: String,
}

#[derive(Debug)]
pub(crate) struct JournalTable;

impl SysTable for JournalTable {
    fn schema(&self) -> SchemaRef {
        let s = || DataType::Utf8;
        schema(&[
            ("partition_key", DataType::UInt64),
            ("id", s()),
            ("index", DataType::UInt32),
            ("entry_type", s()),
            ("name", s()),
            ("completed", DataType::Boolean),
            ("invoked_id", s()),
            ("invoked_target", s()),
            ("sleep_wakeup_at", timestamp()),
            ("promise_name", s()),
            ("raw", DataType::LargeBinary),
            ("version", DataType::UInt32),
            ("entry_json", s()),
            ("appended_at", timestamp()),
            ("raw_length", DataType::UInt64),
            ("entry_lite_json", s()),
        ])
    }

    fn read_chunk(&self, source: &Source, scan: &Scan, cursor: &mut Cursor) -> Result<Option<RecordBatch>> {
        let mut rows = Rows::new(self.schema(), scan.projection());
        if let Some(ids) = scan.pushdown.values("id") {
            if std::mem::replace(&mut cursor.done, true) {
                return Ok(None);
            }
            for id in ids.iter().filter_map(|id| id.parse::<InvocationId>().ok()) {
                for partition in source.partitions(Some(&[id.partition_key])) {
                    push_journal(&mut rows, &id, &partition.journal(&id).map_err(storage)?);
                }
            }
            return rows.finish().map(Some);
        }
        let Some(partition) = cursor.partitions.front().cloned() else {
            return Ok(None);
        };
        // Journals go whole into a chunk: a few invocations at a time until it is full.
        let page = partition
            .invocation_statuses(Page {
                after: cursor.after.as_deref(),
                limit: INVOCATIONS_PER_STEP,
            })
            .map_err(storage)?;
        let mut last = None;
        let count = page.rows.len();
        for (read, (key, (id, _))) in page.rows.into_iter().enumerate() {
            push_journal(&mut rows, &id, &partition.journal(&id).map_err(storage)?);
            last = Some(key);
            if rows.len() >= CHUNK_ROWS && read + 1 < count {
                break;
            }
        }
        match (rows.len() >= CHUNK_ROWS, last) {
            (true, Some(last)) if page.more.as_ref() != Some(&last) => cursor.after = Some(last),
            _ => cursor.advance(page.more),
        }
        rows.finish().map(Some)
    }
}

/// Invocations whose journals a chunk reads at once before it checks its size.
const INVOCATIONS_PER_STEP: usize = 64;

fn push_journal(rows: &mut Rows, id: &InvocationId, journal: &[JournalRow]) {
    // Which completion ids arrived, and the callee ids calls were given.
    let mut completed = std::collections::HashSet::new();
    let mut callees: HashMap<u32, String> = HashMap::new();
    for entry in journal {
        let ty = MessageType::from_code(entry.message_type);
        if ty.kind() == restate_service_protocol::MessageKind::Notification
            && ty != MessageType::SignalNotification
            && let Ok(probe) = CompletionIdProbe::decode(entry.payload.clone())
        {
            completed.insert(probe.completion_id);
            if ty == MessageType::CallInvocationIdCompletionNotification
                && let Ok(note) = proto::CallInvocationIdCompletionNotificationMessage::decode(entry.payload.clone())
            {
                callees.insert(note.completion_id, note.invocation_id);
            }
        }
    }
    let id_text = id.to_string();
    for entry in journal {
        let ty = MessageType::from_code(entry.message_type);
        let is_command = ty.is_command();
        let name = if is_command {
            NameProbe::decode(entry.payload.clone())
                .map(|p| p.name)
                .unwrap_or_default()
        } else {
            String::new()
        };
        let completion = ResultCompletionProbe::decode(entry.payload.clone())
            .ok()
            .map(|p| p.result_completion_id)
            .filter(|id| *id != 0 || ty == MessageType::SleepCommand);
        let is_completed = match (is_command, completion) {
            (true, Some(completion)) => completed.contains(&completion),
            _ => true,
        };
        let (mut invoked_id, mut invoked_target, mut sleep_until, mut promise) = (None, None, None, None);
        match ty {
            MessageType::SleepCommand => {
                if let Ok(m) = proto::SleepCommandMessage::decode(entry.payload.clone()) {
                    sleep_until = Some(m.wake_up_time);
                }
            }
            MessageType::CallCommand => {
                if let Ok(m) = proto::CallCommandMessage::decode(entry.payload.clone()) {
                    invoked_id = callees.get(&m.invocation_id_notification_idx).cloned();
                    invoked_target = Some(target_text(&m.service_name, &m.key, &m.handler_name));
                }
            }
            MessageType::OneWayCallCommand => {
                if let Ok(m) = proto::OneWayCallCommandMessage::decode(entry.payload.clone()) {
                    invoked_id = callees.get(&m.invocation_id_notification_idx).cloned();
                    invoked_target = Some(target_text(&m.service_name, &m.key, &m.handler_name));
                }
            }
            MessageType::GetPromiseCommand => {
                promise = proto::GetPromiseCommandMessage::decode(entry.payload.clone())
                    .ok()
                    .map(|m| m.key);
            }
            MessageType::PeekPromiseCommand => {
                promise = proto::PeekPromiseCommandMessage::decode(entry.payload.clone())
                    .ok()
                    .map(|m| m.key);
            }
            MessageType::CompletePromiseCommand => {
                promise = proto::CompletePromiseCommandMessage::decode(entry.payload.clone())
                    .ok()
                    .map(|m| m.key);
            }
            _ => {}
        }
        let kind = if is_command { "Command" } else { "Notification" };
        let short = short_name(ty);
        // Credentials redacted: what `raw` and the entry's JSON show.
        let payload = without_credentials(ty, &entry.payload);
        rows.u64(Some(id.partition_key))
            .str(Some(&id_text))
            .u32(Some(entry.index))
            .str(Some(&format!("{kind}: {short}")))
            .str(Some(&name))
            .bool(Some(is_completed))
            .str(invoked_id.as_deref())
            .str(invoked_target.as_deref())
            .timestamp(sleep_until)
            .str(promise.as_deref())
            .binary(Some(&payload))
            .u32(Some(2))
            // Built only when the query reads them: each decodes the entry again.
            .str_with(|| Some(entry_json(ty, &payload, Form::Full, invoked_id.as_deref()).to_string()))
            .timestamp(entry.appended_at)
            .u64(Some(entry.payload.len() as u64))
            .str_with(|| Some(entry_json(ty, &payload, Form::Lite, invoked_id.as_deref()).to_string()));
        rows.end_row();
    }
}

/// Request headers whose values are credentials: the journal keeps them for the handler, but
/// SQL does not show them.
const CREDENTIAL_HEADERS: [&str; 4] = ["authorization", "proxy-authorization", "cookie", "x-api-key"];

/// An entry's payload as SQL shows it: an input's credential headers have their values
/// replaced.
fn without_credentials(ty: MessageType, payload: &bytes::Bytes) -> bytes::Bytes {
    if ty != MessageType::InputCommand {
        return payload.clone();
    }
    let Ok(mut input) = proto::InputCommandMessage::decode(payload.clone()) else {
        return payload.clone();
    };
    let mut redacted = false;
    for header in &mut input.headers {
        if CREDENTIAL_HEADERS
            .iter()
            .any(|name| header.key.eq_ignore_ascii_case(name))
        {
            header.value = "<redacted>".into();
            redacted = true;
        }
    }
    match redacted {
        true => bytes::Bytes::from(input.encode_to_vec()),
        false => payload.clone(),
    }
}

fn target_text(service: &str, key: &str, handler: &str) -> String {
    match key {
        "" => format!("{service}/{handler}"),
        key => format!("{service}/{key}/{handler}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_an_input_are_shown_redacted() {
        let header = |key: &str, value: &str| proto::Header {
            key: key.into(),
            value: value.into(),
        };
        let input = proto::InputCommandMessage {
            headers: vec![
                header("Authorization", "Bearer secret"),
                header("cookie", "session=secret"),
                header("x-request-id", "42"),
            ],
            ..Default::default()
        };
        let shown = without_credentials(MessageType::InputCommand, &bytes::Bytes::from(input.encode_to_vec()));
        let shown = proto::InputCommandMessage::decode(shown).unwrap();
        let values: Vec<&str> = shown.headers.iter().map(|h| h.value.as_str()).collect();
        assert_eq!(values, ["<redacted>", "<redacted>", "42"]);
    }
}

/// `sys_journal_events`: what happened to an invocation between journal entries. The store
/// keeps an invocation's last failed attempt (not each one), so an unfinished invocation that
/// failed shows that failure: `TransientError` while it retries, `Paused` once it is paused.
#[derive(Debug)]
pub(crate) struct JournalEventsTable;

impl SysTable for JournalEventsTable {
    fn schema(&self) -> SchemaRef {
        let s = || DataType::Utf8;
        schema(&[
            ("partition_key", DataType::UInt64),
            ("id", s()),
            ("after_journal_entry_index", DataType::UInt32),
            ("appended_at", timestamp()),
            ("event_type", s()),
            ("event_json", s()),
        ])
    }

    fn read_chunk(&self, source: &Source, scan: &Scan, cursor: &mut Cursor) -> Result<Option<RecordBatch>> {
        let mut rows = Rows::new(self.schema(), scan.projection());
        if let Some(ids) = scan.pushdown.values("id") {
            if std::mem::replace(&mut cursor.done, true) {
                return Ok(None);
            }
            for (_, id, status) in crate::invocations::statuses_of(source, ids)? {
                push_events(&mut rows, &id, &status);
            }
            return rows.finish().map(Some);
        }
        let Some(partition) = cursor.partitions.front().cloned() else {
            return Ok(None);
        };
        let page = partition
            .invocation_statuses(Page {
                after: cursor.after.as_deref(),
                limit: CHUNK_ROWS,
            })
            .map_err(storage)?;
        cursor.advance(page.more);
        for (_, (id, status)) in page.rows {
            push_events(&mut rows, &id, &status);
        }
        rows.finish().map(Some)
    }
}

fn push_events(rows: &mut Rows, id: &InvocationId, status: &restate_partition_api::model::InvocationStatus) {
    use restate_partition_api::model::Phase;
    let Some(failure) = &status.last_failure else {
        return;
    };
    let event_type = match status.phase {
        Phase::Completed { .. } => return,
        Phase::Paused => "Paused",
        _ => "TransientError",
    };
    let error = json!({
        "error_code": failure.code,
        "error_message": failure.message,
        "error_stacktrace": null,
        "restate_doc_error_code": null,
        "related_command_index": null,
        "related_command_name": null,
        "related_command_type": null,
    });
    let event = match event_type {
        "Paused" => json!({ "ty": "Paused", "last_failure": error }),
        _ => error,
    };
    rows.u64(Some(id.partition_key))
        .str_with(|| Some(id.to_string()))
        .u32(Some(status.journal_length.saturating_sub(1)))
        .timestamp(Some(failure.at))
        .str(Some(event_type))
        .str_with(|| Some(event.to_string()))
        .end_row();
}
