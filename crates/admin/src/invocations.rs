//! `PATCH /invocations/{id}/cancel|kill` and `DELETE /invocations/{id}?mode=cancel|kill`:
//! ending invocations, through the partition that owns them.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, patch};
use restate_types::InvocationId;
use restate_worker::{Managed, Management, PartitionHandle, Terminated, WorkerSlot};
use serde::Deserialize;

pub(crate) fn router(worker: WorkerSlot) -> Router {
    Router::new()
        .route(
            "/invocations/{id}/cancel",
            patch(|State(w): State<WorkerSlot>, Path(id): Path<String>| async move { terminate(&w, &id, false).await }),
        )
        .route(
            "/invocations/{id}/kill",
            patch(|State(w): State<WorkerSlot>, Path(id): Path<String>| async move { terminate(&w, &id, true).await }),
        )
        .route(
            "/invocations/{id}/pause",
            patch(|State(w): State<WorkerSlot>, Path(id): Path<String>| async move {
                manage(&w, &id, Management::Pause).await
            }),
        )
        .route(
            "/invocations/{id}/resume",
            patch(|State(w): State<WorkerSlot>, Path(id): Path<String>| async move {
                manage(&w, &id, Management::Resume).await
            }),
        )
        .route(
            "/invocations/{id}/purge",
            patch(|State(w): State<WorkerSlot>, Path(id): Path<String>| async move {
                manage(&w, &id, Management::Purge).await
            }),
        )
        .route("/invocations/{id}", delete(delete_invocation))
        .with_state(worker)
}

#[derive(Debug, Deserialize)]
struct DeleteQuery {
    mode: Option<String>,
}

/// The deprecated form: `mode` is `cancel` (default) or `kill`.
async fn delete_invocation(
    State(worker): State<WorkerSlot>,
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
    match terminate(&worker, &id, kill).await {
        // The old endpoint answers 202 for both.
        response if response.status() == StatusCode::OK => StatusCode::ACCEPTED.into_response(),
        response => response,
    }
}

fn error(status: StatusCode, message: String) -> Response {
    (
        status,
        Json(serde_json::json!({ "message": message, "restate_code": null })),
    )
        .into_response()
}

/// The invocation id and the partition handling it, or the error answer.
#[allow(clippy::result_large_err)]
fn locate(worker: &WorkerSlot, id: &str) -> Result<(InvocationId, PartitionHandle), Response> {
    let id = match id.parse::<InvocationId>() {
        Ok(id) => id,
        Err(reason) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("bad invocation id '{id}': {reason}"),
            ));
        }
    };
    let Some(worker) = worker.get() else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node runs no worker: send the request to the admin API of a node with the worker role".into(),
        ));
    };
    match worker.partition_for(id.partition_key) {
        Some(partition) => Ok((id, partition.clone())),
        None => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the partition of {id} is not run on this node"),
        )),
    }
}

async fn manage(worker: &WorkerSlot, id: &str, operation: Management) -> Response {
    let (id, partition) = match locate(worker, id) {
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
                }
            ),
        ),
        Err(reason) => error(StatusCode::SERVICE_UNAVAILABLE, reason.to_string()),
    }
}

async fn terminate(worker: &WorkerSlot, id: &str, kill: bool) -> Response {
    let (id, partition) = match locate(worker, id) {
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
