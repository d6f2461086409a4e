//! `PATCH /invocations/{id}/cancel|kill` and `DELETE /invocations/{id}?mode=cancel|kill`:
//! ending invocations, through the partition that owns them.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, patch};
use restate_types::InvocationId;
use restate_worker::{Terminated, WorkerSlot};
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

async fn terminate(worker: &WorkerSlot, id: &str, kill: bool) -> Response {
    let id = match id.parse::<InvocationId>() {
        Ok(id) => id,
        Err(reason) => return error(StatusCode::BAD_REQUEST, format!("bad invocation id '{id}': {reason}")),
    };
    let Some(worker) = worker.get() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node runs no worker: send the request to the admin API of a node with the worker role".into(),
        );
    };
    let Some(partition) = worker.partition_for(id.partition_key) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the partition of {id} is not run on this node"),
        );
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
