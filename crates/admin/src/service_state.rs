//! `POST /services/{s}/state`: replaces the state of one object or workflow key (what
//! `restate state edit|patch|clear` sends).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use restate_types::manifest::ServiceType;
use restate_types::partition_key_of;
use serde::Deserialize;

use crate::invocations::{PartitionAccess, error};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchStateRequest {
    object_key: String,
    /// Every key of the new state, values as JSON arrays of bytes.
    new_state: BTreeMap<String, Vec<u8>>,
    /// The version of the state this change was made against (see `restate_types::state_version`).
    version: Option<String>,
    /// Scopes exist only with the experimental vqueues of the reference server.
    scope: Option<String>,
}

/// Appends the replacement to the key's partition; 202 once it is durable.
pub(crate) async fn patch_state(
    State(access): State<PartitionAccess>,
    Path(service): Path<String>,
    body: Result<axum::Json<PatchStateRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match body {
        Ok(axum::Json(request)) => request,
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "bad state change: {}; expected {{\"object_key\": \"...\", \"new_state\": {{\"key\": [bytes]}}, \"version\": \"...\"}}",
                    rejection.body_text()
                ),
            );
        }
    };
    if request.scope.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "The request field 'scope' is invalid. Reason: scopes are not supported by this server".into(),
        );
    }
    let schema = access.schema.refresh().await;
    match schema.active_service(&service).map(|(_, s)| s.manifest.ty) {
        None if !request.new_state.is_empty() => {
            return error(StatusCode::NOT_FOUND, format!("service '{service}' not found"));
        }
        Some(ServiceType::Service) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("service '{service}' is a plain service: only virtual objects and workflows have state"),
            );
        }
        _ => {}
    }
    let partition_key = partition_key_of(request.object_key.as_bytes());
    let partition = match access.partitions.for_key(partition_key).await {
        Ok(partition) => partition,
        Err(reason) => return error(StatusCode::SERVICE_UNAVAILABLE, reason.to_string()),
    };
    let state = request
        .new_state
        .into_iter()
        .map(|(key, value)| (key.into_bytes(), value))
        .collect();
    match partition
        .patch_state(service, request.object_key, state, request.version)
        .await
    {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(reason) => error(StatusCode::SERVICE_UNAVAILABLE, reason.to_string()),
    }
}
