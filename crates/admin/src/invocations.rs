//! `PATCH /invocations/{id}/cancel|kill|pause|resume|purge|purge-journal|restart-as-new`,
//! `DELETE /invocations/{id}?mode=cancel|kill` and `POST /services/{s}/state`: operator changes
//! of invocations and state, through the partition that owns them.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, patch, post};
use restate_types::InvocationId;
use std::sync::Arc;

use restate_metadata_store::SchemaCache;
use restate_partition_api::{Managed, Management, PartitionApi, Partitions, Restarted, Terminated};
use serde::Deserialize;

/// What these routes reach: the partitions (through the partition API, on this node or
/// another) and the schema.
#[derive(Clone)]
pub(crate) struct PartitionAccess {
    pub partitions: Partitions,
    pub schema: SchemaCache,
}

pub(crate) fn router(access: PartitionAccess) -> Router {
    Router::new()
        .route(
            "/invocations/{id}/cancel",
            patch(|State(w): State<PartitionAccess>, Path(id): Path<String>| async move { terminate(&w, &id, false).await }),
        )
        .route(
            "/invocations/{id}/kill",
            patch(|State(w): State<PartitionAccess>, Path(id): Path<String>| async move { terminate(&w, &id, true).await }),
        )
        .route(
            "/invocations/{id}/pause",
            patch(|State(w): State<PartitionAccess>, Path(id): Path<String>| async move {
                manage(&w, &id, Management::Pause).await
            }),
        )
        .route(
            "/invocations/{id}/resume",
            patch(|State(w): State<PartitionAccess>, Path(id): Path<String>| async move {
                manage(&w, &id, Management::Resume).await
            }),
        )
        .route(
            "/invocations/{id}/purge",
            patch(|State(w): State<PartitionAccess>, Path(id): Path<String>| async move {
                manage(&w, &id, Management::Purge).await
            }),
        )
        .route(
            "/invocations/{id}/purge-journal",
            patch(|State(w): State<PartitionAccess>, Path(id): Path<String>| async move {
                manage(&w, &id, Management::PurgeJournal).await
            }),
        )
        .route("/invocations/{id}/restart-as-new", patch(restart_as_new))
        .route("/invocations/{id}", delete(delete_invocation))
        .route("/services/{service}/state", post(crate::service_state::patch_state))
        .with_state(access)
}

#[derive(Debug, Deserialize)]
struct DeleteQuery {
    mode: Option<String>,
}

/// The deprecated form: `mode` is `cancel` (default) or `kill`.
async fn delete_invocation(
    State(access): State<PartitionAccess>,
    Path(id): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> Response {
    let kill = match query.mode.as_deref() {
        None | Some("cancel") => false,
        Some("kill") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("The request field 'mode' is invalid. Reason: '{other}' is not one of cancel, kill"),
            );
        }
    };
    match terminate(&access, &id, kill).await {
        // The old endpoint answers 202 for both.
        response if response.status() == StatusCode::OK => StatusCode::ACCEPTED.into_response(),
        response => response,
    }
}

#[derive(Debug, Deserialize)]
struct RestartQuery {
    from: Option<u32>,
    deployment: Option<String>,
}

/// Starts a new invocation with the input of an ended one, on the latest deployment.
async fn restart_as_new(
    State(access): State<PartitionAccess>,
    Path(id): Path<String>,
    Query(query): Query<RestartQuery>,
) -> Response {
    if query.from.is_some_and(|from| from > 0) {
        return error(
            StatusCode::BAD_REQUEST,
            "The request field 'from' is invalid. Reason: this server restarts invocations from the start of their journal only (from=0)".into(),
        );
    }
    if let Some(deployment) = query.deployment.as_deref()
        && !deployment.eq_ignore_ascii_case("latest")
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "The request field 'deployment' is invalid. Reason: '{deployment}': an invocation restarted from the start runs on the latest deployment; omit it or pass 'latest'"
            ),
        );
    }
    let (id, partition) = match locate(&access, &id).await {
        Ok(located) => located,
        Err(response) => return response,
    };
    match partition.restart_as_new(id).await {
        Ok(Restarted::Started(new_id)) => {
            Json(serde_json::json!({ "new_invocation_id": new_id.to_string() })).into_response()
        }
        Ok(Restarted::NotFound) => error(StatusCode::NOT_FOUND, format!("invocation {id} not found")),
        Ok(Restarted::StillRunning) => error(
            StatusCode::CONFLICT,
            format!("invocation {id} is still running; kill or cancel it before restarting it as new"),
        ),
        Ok(Restarted::NotStarted) => error(
            StatusCode::TOO_EARLY,
            format!("invocation {id} has not started yet (scheduled or waiting in its object's inbox)"),
        ),
        Ok(Restarted::JournalGone) => error(
            StatusCode::GONE,
            format!("the journal of invocation {id} is no longer kept (journal retention), so its input is gone"),
        ),
        Ok(Restarted::Workflow) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invocation {id} is a workflow run; a workflow runs once per key and cannot be restarted as new"),
        ),
        Err(reason) => error(StatusCode::SERVICE_UNAVAILABLE, reason.to_string()),
    }
}

pub(crate) fn error(status: StatusCode, message: String) -> Response {
    (
        status,
        Json(serde_json::json!({ "message": message, "restate_code": null })),
    )
        .into_response()
}

/// The invocation id and the partition handling it (on this node or another), or the error
/// answer.
#[allow(clippy::result_large_err)]
async fn locate(access: &PartitionAccess, id: &str) -> Result<(InvocationId, Arc<dyn PartitionApi>), Response> {
    let id = match id.parse::<InvocationId>() {
        Ok(id) => id,
        Err(reason) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("bad invocation id '{id}': {reason}"),
            ));
        }
    };
    match access.partitions.for_key(id.partition_key).await {
        Ok(partition) => Ok((id, partition)),
        Err(reason) => Err(error(StatusCode::SERVICE_UNAVAILABLE, reason.to_string())),
    }
}

async fn manage(access: &PartitionAccess, id: &str, operation: Management) -> Response {
    let (id, partition) = match locate(access, id).await {
        Ok(located) => located,
        Err(response) => return response,
    };
    match partition.manage(id, operation).await {
        Ok(Managed::Done) => StatusCode::OK.into_response(),
        Ok(Managed::NotFound) => error(StatusCode::NOT_FOUND, format!("invocation {id} not found")),
        Ok(Managed::Refused(why)) => error(
            StatusCode::CONFLICT,
            format!(
                "invocation {id} cannot be {}: {why}",
                match operation {
                    Management::Pause => "paused",
                    Management::Resume => "resumed",
                    Management::Purge => "purged",
                    Management::PurgeJournal => "purged of its journal",
                }
            ),
        ),
        Err(reason) => error(StatusCode::SERVICE_UNAVAILABLE, reason.to_string()),
    }
}

async fn terminate(access: &PartitionAccess, id: &str, kill: bool) -> Response {
    let (id, partition) = match locate(access, id).await {
        Ok(located) => located,
        Err(response) => return response,
    };
    match partition.terminate(id, kill).await {
        Ok(Terminated::Done) => StatusCode::OK.into_response(),
        Ok(Terminated::Requested) => StatusCode::ACCEPTED.into_response(),
        Ok(Terminated::NotFound) => error(StatusCode::NOT_FOUND, format!("invocation {id} not found")),
        Ok(Terminated::AlreadyCompleted) => error(
            StatusCode::CONFLICT,
            format!(
                "invocation {id} was already completed, so it cannot be cancelled nor killed; purge it instead to let restate forget it"
            ),
        ),
        Err(reason) => error(StatusCode::SERVICE_UNAVAILABLE, reason.to_string()),
    }
}
