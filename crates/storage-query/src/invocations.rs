//! `sys_invocation_status` (what the log says about each invocation), `sys_invocation_state`
//! (what the leader's invoker knows about the ones it runs or retries) and `sys_invocation`
//! (both, with the status operators see: pending, scheduled, ready, running, backing-off,
//! suspended, paused, completed).

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use restate_partition_api::AttemptInfo;
use restate_partition_api::introspect::Page;
use restate_partition_api::model::{InvocationResult, InvocationStatus, Phase};
use restate_types::manifest::ServiceType;
use restate_types::{DeploymentId, InvocationId};

use crate::rows::{Rows, duration, list_u32, schema, timestamp};
use crate::table::{CHUNK_ROWS, Cursor, Reader, Scan, Source, SysTable, storage};

/// The columns of `sys_invocation_status`, after `partition_key` and `id`.
fn status_columns() -> Vec<(&'static str, DataType)> {
    let s = || DataType::Utf8;
    vec![
        ("status", s()),
        ("completion_result", s()),
        ("completion_failure", s()),
        ("target", s()),
        ("target_service_name", s()),
        ("target_service_key", s()),
        ("target_handler_name", s()),
        ("target_service_ty", s()),
        ("idempotency_key", s()),
        ("invoked_by", s()),
        ("invoked_by_service_name", s()),
        ("invoked_by_id", s()),
        ("invoked_by_target", s()),
        ("restarted_from", s()),
        ("pinned_deployment_id", s()),
        ("pinned_service_protocol_version", DataType::UInt32),
        ("trace_id", s()),
        ("journal_size", DataType::UInt32),
        ("journal_commands_size", DataType::UInt32),
        ("created_at", timestamp()),
        ("modified_at", timestamp()),
        ("scheduled_start_at", timestamp()),
        ("completed_at", timestamp()),
        ("completion_retention", duration()),
        ("journal_retention", duration()),
        ("suspended_waiting_for_completions", list_u32()),
        ("suspended_waiting_for_signals", list_u32()),
        // Kafka subscriptions do not exist here: always null.
        ("invoked_by_subscription_id", s()),
        // When it entered the inbox, was scheduled, first ran: the store keeps only the
        // creation time and the delay, so these are known for scheduled invocations alone.
        ("inboxed_at", timestamp()),
        ("scheduled_at", timestamp()),
        ("running_at", timestamp()),
        ("created_using_restate_version", s()),
    ]
}

/// The columns of `sys_invocation_state`, after `partition_key` and `id`.
fn state_columns() -> Vec<(&'static str, DataType)> {
    let s = || DataType::Utf8;
    vec![
        ("in_flight", DataType::Boolean),
        ("retry_count", DataType::UInt64),
        ("last_start_at", timestamp()),
        ("next_retry_at", timestamp()),
        ("last_attempt_deployment_id", s()),
        ("last_attempt_server", s()),
        ("last_failure", s()),
        ("last_failure_error_code", s()),
        ("last_failure_related_entry_index", DataType::UInt64),
        ("last_failure_related_entry_name", s()),
        ("last_failure_related_entry_type", s()),
        ("last_failure_related_command_index", DataType::UInt64),
        ("last_failure_related_command_name", s()),
        ("last_failure_related_command_type", s()),
    ]
}

fn with_keys(columns: Vec<(&'static str, DataType)>) -> SchemaRef {
    let mut all = vec![("partition_key", DataType::UInt64), ("id", DataType::Utf8)];
    all.extend(columns);
    schema(&all)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InvocationTable {
    /// `sys_invocation_status`
    Status,
    /// `sys_invocation_state`
    State,
    /// `sys_invocation`: status and state, with the derived status.
    Joined,
}

impl SysTable for InvocationTable {
    fn schema(&self) -> SchemaRef {
        match self {
            Self::Status => with_keys(status_columns()),
            Self::State => with_keys(state_columns()),
            Self::Joined => {
                let mut columns = status_columns();
                columns.extend(state_columns());
                with_keys(columns)
            }
        }
    }

    fn read_chunk(&self, source: &Source, scan: &Scan, cursor: &mut Cursor) -> Result<Option<RecordBatch>> {
        if let Some(ids) = scan.pushdown.values("id") {
            if std::mem::replace(&mut cursor.done, true) {
                return Ok(None);
            }
            return self.rows_of(lookup(source, ids)?, scan).map(Some);
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
        let service = scan.pushdown.single("target_service_name");
        let skip_completed = scan.pushdown.excludes("status", "completed");
        let mut attempts = partition.attempts();
        let found = page
            .rows
            .into_iter()
            .map(|(_, row)| row)
            .filter(|(_, status)| {
                service.is_none_or(|s| s == status.target.service)
                    && !(skip_completed && matches!(status.phase, Phase::Completed { .. }))
            })
            .map(|(id, status)| {
                let attempt = attempts.remove(&id);
                (id, status, attempt)
            })
            .collect();
        self.rows_of(found, scan).map(Some)
    }
}

impl InvocationTable {
    fn rows_of(&self, invocations: Vec<InvocationRow>, scan: &Scan) -> Result<RecordBatch> {
        let mut rows = Rows::new(self.schema(), scan.projection());
        for (id, status, attempt) in invocations {
            let state = attempt_state(&status, attempt.as_ref());
            if *self == Self::State && state.is_none() {
                continue;
            }
            rows.u64(Some(id.partition_key)).str_with(|| Some(id.to_string()));
            if *self != Self::State {
                let derived = (*self == Self::Joined).then(|| derived_status(&status, state.as_ref()));
                push_status(&mut rows, &status, derived);
            }
            if *self != Self::Status {
                push_state(&mut rows, state.as_ref());
            }
            rows.end_row();
        }
        rows.finish()
    }
}

type InvocationRow = (InvocationId, InvocationStatus, Option<AttemptInfo>);

/// The statuses of these invocation ids (a lookup in each owning partition; ids that do not
/// parse match no row).
fn lookup(source: &Source, ids: &[String]) -> Result<Vec<InvocationRow>> {
    let mut found = Vec::new();
    for (partition, id, status) in statuses_of(source, ids)? {
        let attempt = partition.attempts().remove(&id);
        found.push((id, status, attempt));
    }
    Ok(found)
}

/// The statuses of these invocation ids, each with the partition that holds it (ids that do
/// not parse match nothing).
pub(crate) fn statuses_of(source: &Source, ids: &[String]) -> Result<Vec<(Reader, InvocationId, InvocationStatus)>> {
    let mut found = Vec::new();
    for id in ids.iter().filter_map(|id| id.parse::<InvocationId>().ok()) {
        for partition in source.partitions(Some(&[id.partition_key])) {
            if let Some(status) = partition.invocation_status(&id).map_err(storage)? {
                found.push((partition, id, status));
            }
        }
    }
    Ok(found)
}

/// What `sys_invocation_state` shows: the invoker's view while the leader runs or retries the
/// invocation, else the last failure the log recorded (e.g. after a restart, or while paused).
fn attempt_state(status: &InvocationStatus, attempt: Option<&AttemptInfo>) -> Option<AttemptInfo> {
    if let Some(attempt) = attempt {
        return Some(attempt.clone());
    }
    if matches!(status.phase, Phase::Completed { .. }) {
        return None;
    }
    let failure = status.last_failure.as_ref()?;
    Some(AttemptInfo {
        in_flight: false,
        retry_count: failure.attempt,
        last_start_at: None,
        next_retry_at: None,
        deployment_id: status.pinned.map(|p| DeploymentId(p.deployment_id)),
        server: None,
        last_failure: Some((failure.code, failure.message.clone())),
    })
}

/// The status operators see (`sys_invocation.status`).
fn derived_status(status: &InvocationStatus, state: Option<&AttemptInfo>) -> &'static str {
    match &status.phase {
        Phase::Inboxed { .. } => "pending",
        Phase::Scheduled => "scheduled",
        Phase::Suspended { .. } => "suspended",
        Phase::Paused => "paused",
        Phase::Completed { .. } => "completed",
        Phase::Invoked => match state {
            Some(state) if state.in_flight => "running",
            Some(state) if state.retry_count > 0 => "backing-off",
            _ => "ready",
        },
    }
}

fn phase_name(phase: &Phase) -> &'static str {
    match phase {
        Phase::Scheduled => "scheduled",
        Phase::Inboxed { .. } => "inboxed",
        Phase::Invoked => "invoked",
        Phase::Suspended { .. } => "suspended",
        Phase::Paused => "paused",
        Phase::Completed { .. } => "completed",
    }
}

pub(crate) fn service_type_name(ty: ServiceType) -> &'static str {
    match ty {
        ServiceType::Service => "service",
        ServiceType::VirtualObject => "virtual_object",
        ServiceType::Workflow => "workflow",
    }
}

fn push_status(rows: &mut Rows, status: &InvocationStatus, derived: Option<&'static str>) {
    let target = &status.target;
    let (result, failure) = match (&status.phase, &status.output) {
        (Phase::Completed { .. }, Some(InvocationResult::Success(_))) => (Some("success"), None),
        (Phase::Completed { .. }, Some(InvocationResult::Failure { code, message, .. })) => {
            (Some("failure"), Some(format!("[{code}] {message}")))
        }
        _ => (None, None),
    };
    let invoked_by = match (&status.invoked_by, &status.restarted_from) {
        (Some(_), _) => "service",
        (None, Some(_)) => "restart_as_new",
        (None, None) => "ingress",
    };
    let caller_service = status
        .invoked_by
        .as_ref()
        .and_then(|c| c.target.split('/').next().map(str::to_owned));
    let completed_at = match status.phase {
        Phase::Completed { at } => Some(at),
        _ => None,
    };
    let modified_at = completed_at.unwrap_or(status.journal_modified_at);
    let (waiting_completions, waiting_signals) = match &status.phase {
        Phase::Suspended {
            completions, signals, ..
        } => (Some(completions.as_slice()), Some(signals.as_slice())),
        _ => (None, None),
    };
    let pinned = status.pinned;
    rows.str(Some(derived.unwrap_or_else(|| phase_name(&status.phase))))
        .str(result)
        .str(failure.as_deref())
        .str_with(|| Some(target.to_string()))
        .str(Some(&target.service))
        .str(target.key.as_deref())
        .str(Some(&target.handler))
        .str(Some(service_type_name(target.service_type)))
        .str(status.idempotency_key.as_deref())
        .str(Some(invoked_by))
        .str(caller_service.as_deref())
        .str_with(|| status.invoked_by.as_ref().map(|c| c.id.to_string()))
        .str(status.invoked_by.as_ref().map(|c| c.target.as_str()))
        .str_with(|| status.restarted_from.map(|id| id.to_string()))
        .str_with(|| pinned.map(|p| DeploymentId(p.deployment_id).to_string()))
        .u32(pinned.map(|p| p.protocol_version))
        .str(None)
        .u32(Some(status.journal_length))
        .u32(Some(status.commands))
        .timestamp(Some(status.created_at))
        .timestamp(Some(modified_at))
        .timestamp(status.execution_time)
        .timestamp(completed_at)
        .duration(Some(status.retention.completion))
        .duration(Some(status.retention.journal))
        .list_u32(waiting_completions)
        .list_u32(waiting_signals)
        .str(None)
        .timestamp(None)
        .timestamp(status.execution_time.map(|_| status.created_at))
        .timestamp(None)
        .str_with(|| Some(restate_types::reported_version()));
}

fn push_state(rows: &mut Rows, state: Option<&AttemptInfo>) {
    let failure = state.and_then(|s| s.last_failure.as_ref());
    rows.bool(state.map(|s| s.in_flight))
        .u64(state.map(|s| u64::from(s.retry_count)))
        .timestamp(state.and_then(|s| s.last_start_at))
        .timestamp(state.and_then(|s| s.next_retry_at))
        .str_with(|| state.and_then(|s| s.deployment_id).map(|d| d.to_string()))
        .str(state.and_then(|s| s.server.as_deref()))
        .str(failure.map(|(_, message)| message.as_str()))
        .str(failure.map(|(code, _)| code.to_string()).as_deref())
        .u64(None)
        .str(None)
        .str(None)
        .u64(None)
        .str(None)
        .str(None);
}
