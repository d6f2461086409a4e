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

use futures::StreamExt as _;
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
        .route("/internal/invocations_batch_operations/{operation}", post(batch))
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

/// The body of `POST /internal/invocations_batch_operations/{operation}`.
#[derive(Debug, Deserialize)]
struct BatchRequest {
    invocation_ids: Vec<String>,
}

/// At most this many invocations per batch request (the web UI sends pages of 1000).
const BATCH_LIMIT: usize = 1000;

/// `POST /internal/invocations_batch_operations/{cancel|kill|pause|resume|purge|purge-journal|
/// restart-as-new}` (what the web UI sends for a selection): the single operation on each
/// invocation, the ids that succeeded and, for the others, why not.
async fn batch(
    State(access): State<PartitionAccess>,
    Path(operation): Path<String>,
    axum::Json(request): axum::Json<BatchRequest>,
) -> Response {
    const OPERATIONS: [&str; 7] = [
        "cancel",
        "kill",
        "pause",
        "resume",
        "purge",
        "purge-journal",
        "restart-as-new",
    ];
    if !OPERATIONS.contains(&operation.as_str()) {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "unknown batch operation '{operation}'; expected one of {}",
                OPERATIONS.join(", ")
            ),
        );
    }
    if request.invocation_ids.len() > BATCH_LIMIT {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "The request field 'invocation_ids' is invalid. Reason: {} ids, at most {BATCH_LIMIT} per request",
                request.invocation_ids.len()
            ),
        );
    }
    let outcomes = futures::stream::iter(request.invocation_ids)
        .map(|id| {
            let (access, operation) = (access.clone(), operation.clone());
            async move {
                let response = match operation.as_str() {
                    "cancel" => terminate(&access, &id, false).await,
                    "kill" => terminate(&access, &id, true).await,
                    "pause" => manage(&access, &id, Management::Pause).await,
                    "resume" => manage(&access, &id, Management::Resume).await,
                    "purge" => manage(&access, &id, Management::Purge).await,
                    "purge-journal" => manage(&access, &id, Management::PurgeJournal).await,
                    _ => {
                        restart_as_new(
                            State(access),
                            Path(id.clone()),
                            Query(RestartQuery {
                                from: None,
                                deployment: None,
                            }),
                        )
                        .await
                    }
                };
                (id, response)
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let (mut succeeded, mut failed) = (Vec::new(), Vec::new());
    for (id, response) in outcomes {
        if response.status().is_success() {
            succeeded.push(serde_json::Value::String(id));
            continue;
        }
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| status.to_string());
        failed.push(serde_json::json!({ "invocation_id": id, "error": message }));
    }
    Json(serde_json::json!({ "succeeded": succeeded, "failed": failed })).into_response()
}
