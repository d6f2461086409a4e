//! The `http-ingress` role: where clients invoke services (default port 8080).
//!
//! A request is resolved against the schema (service, handler, key, input rules), turned into
//! an `Invoke` record in the log of the partition that owns its key, and answered when the
//! invocation completes (a call) or as soon as the record is durable (a send).

mod paths;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use restate_metadata_store::SchemaCache;
use restate_partition_api::model::{InvocationResult, InvocationTarget, InvokeRequest, SignalResult};
use restate_partition_api::{Output, Partitions, RetentionDefaults, SubmitError, invocation_id_of};
use restate_types::InvocationId;
use restate_types::manifest::{HandlerManifest, HandlerType, ServiceType};
use tokio::sync::Semaphore;

use crate::paths::{IngressPath, parse_path};

#[derive(Clone)]
struct Ingress {
    /// The partitions, on this node or others: the ingress never runs invocations itself.
    partitions: Partitions,
    schema: SchemaCache,
    retention: RetentionDefaults,
    request_size_limit: usize,
    /// One permit per request being handled (`ingress.concurrent-api-requests-limit`).
    in_flight: Arc<Semaphore>,
    limit: usize,
}

/// The longest `delay` of a send (execution times must stay representable).
const MAX_DELAY: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Headers the handler does not get.
const DROPPED_HEADERS: [&str; 4] = ["connection", "host", "idempotency-key", "idempotency-expires"];

/// The ingress: `/health` (the node's health, as on every port), `/restate/health` (the
/// services), and every other path is an invocation.
/// What the ingress reaches and how it decides a new invocation's settings.
pub struct IngressDeps {
    pub partitions: Partitions,
    pub schema: SchemaCache,
    pub retention: RetentionDefaults,
}

pub fn router(
    node_health: restate_types::NodeHealth,
    deps: IngressDeps,
    request_size_limit: usize,
    concurrent_requests_limit: usize,
) -> Router {
    let limit = concurrent_requests_limit.max(1);
    let IngressDeps {
        partitions,
        schema,
        retention,
    } = deps;
    let state = Ingress {
        partitions,
        schema,
        retention,
        request_size_limit,
        in_flight: Arc::new(Semaphore::new(limit)),
        limit,
    };
    Router::new()
        .route("/health", get(move || async move { axum::Json(node_health.to_json()) }))
        .route("/restate/health", get(health))
        .fallback(invoke)
        .with_state(state)
}

/// An error the ingress answers itself (`source: ingress`).
fn ingress_error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({"code": status.as_u16(), "message": message.into(), "source": "ingress"});
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (
                header::HeaderName::from_static("x-restate-error-source"),
                HeaderValue::from_static("ingress"),
            ),
        ],
        body.to_string(),
    )
        .into_response()
}

fn id_header(id: &InvocationId) -> (header::HeaderName, HeaderValue) {
    (
        header::HeaderName::from_static("x-restate-id"),
        HeaderValue::from_str(&id.to_string()).unwrap_or(HeaderValue::from_static("")),
    )
}

async fn health(State(ingress): State<Ingress>) -> Response {
    let schema = ingress.schema.get();
    let services: Vec<&String> = schema.active_service_revisions.keys().collect();
    axum::Json(serde_json::json!({ "services": services })).into_response()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// An error that invites the client to try again in a second (`Retry-After`).
fn retry_later(status: StatusCode, message: impl Into<String>) -> Response {
    let mut response = ingress_error(status, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// How the ingress answers a request the partition did not complete: a retry is invited only
/// when sending it again cannot run it twice.
fn submit_error(error: SubmitError) -> Response {
    match error {
        SubmitError::Unknown { .. } => ingress_error(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
        SubmitError::Unanswered { id, .. } => {
            let mut response = ingress_error(StatusCode::INTERNAL_SERVER_ERROR, error.to_string());
            let (name, value) = id_header(&id);
            response.headers_mut().insert(name, value);
            response
        }
        SubmitError::Evicted => retry_later(StatusCode::TOO_MANY_REQUESTS, error.to_string()),
        _ => retry_later(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    }
}

async fn invoke(State(ingress): State<Ingress>, request: Request) -> Response {
    // Shed load instead of queueing requests (and their bodies) in memory.
    let Ok(_permit) = ingress.in_flight.clone().try_acquire_owned() else {
        return retry_later(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "the ingress is handling {} requests, its limit (`ingress.concurrent-api-requests-limit`); retry later",
                ingress.limit
            ),
        );
    };
    let (parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    if let Some(rest) = parts
        .uri
        .path()
        .strip_prefix("/restate/awakeables/")
        .or_else(|| parts.uri.path().strip_prefix("/restate/a/"))
    {
        return complete_awakeable(
            &ingress.partitions,
            &parts.method,
            rest,
            body,
            ingress.request_size_limit,
        )
        .await;
    }
    if let Some(rest) = parts.uri.path().strip_prefix("/restate/invocation/") {
        return attach_or_output(&ingress, &parts.method, rest, false).await;
    }
    if let Some(rest) = parts.uri.path().strip_prefix("/restate/workflow/") {
        return attach_or_output(&ingress, &parts.method, rest, true).await;
    }
    let path = match parse_path(parts.uri.path()) {
        Ok(path) => path,
        Err(message) => return ingress_error(StatusCode::BAD_REQUEST, message),
    };
    let IngressPath { service, rest } = path;
    let mut schema = ingress.schema.get();
    // A service or handler registered a moment ago may not be in this node's copy yet.
    let known = |schema: &restate_types::schema::SchemaRegistry| {
        schema.active_service(&service).is_some_and(|(_, s)| {
            let names: Vec<&str> = s.manifest.handlers.iter().map(|h| h.name.as_str()).collect();
            rest.iter().any(|segment| names.contains(&segment.as_str()))
        })
    };
    if !known(&schema) {
        schema = ingress.schema.refresh().await;
    }
    let Some((_, registered)) = schema.active_service(&service) else {
        return ingress_error(
            StatusCode::NOT_FOUND,
            format!("service '{service}' not found, make sure to register the service before calling it."),
        );
    };
    // By reference: this runs per request, and the admin API's overrides only change privacy.
    let manifest = &registered.manifest;
    let keyed = manifest.ty != ServiceType::Service;
    let bad_path = || {
        ingress_error(
            StatusCode::BAD_REQUEST,
            "bad path, expected either /:service-name/:handler or /:object-name/:object-key/:handler",
        )
    };
    let (key, handler, suffix) = match (keyed, rest.as_slice()) {
        (false, [handler]) => (None, handler.clone(), None),
        (false, [handler, suffix]) => (None, handler.clone(), Some(suffix.as_str())),
        (true, [key, handler]) => (Some(key.clone()), handler.clone(), None),
        (true, [key, handler, suffix]) => (Some(key.clone()), handler.clone(), Some(suffix.as_str())),
        _ => return bad_path(),
    };
    let send = match suffix {
        None => false,
        Some("send") => true,
        Some(_) => return bad_path(),
    };
    let Some(handler_manifest) = manifest.handlers.iter().find(|h| h.name == handler) else {
        return ingress_error(
            StatusCode::NOT_FOUND,
            format!(
                "the service '{service}' exists, but the handler '{handler}' was not found, check that the handler exists in the latest registered service version."
            ),
        );
    };
    let private = match registered.overrides.public {
        Some(false) => true,
        Some(true) => handler_manifest.settings.ingress_private.unwrap_or(false),
        None => handler_manifest
            .settings
            .ingress_private
            .or(manifest.settings.ingress_private)
            .unwrap_or(false),
    };
    if private {
        return ingress_error(StatusCode::BAD_REQUEST, "the invoked service is not public");
    }
    if parts.method != Method::GET && parts.method != Method::POST {
        return ingress_error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} is not allowed; use GET or POST", parts.method),
        );
    }
    let idempotency_key = match parts.headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(key)) if !key.is_empty() => Some(key.to_owned()),
        Some(_) => {
            return ingress_error(
                StatusCode::BAD_REQUEST,
                "bad idempotency-key header: it must be non-empty visible ASCII",
            );
        }
    };
    let delay = match delay_of(parts.uri.query()) {
        Ok(Some(delay)) if delay > MAX_DELAY => {
            return ingress_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "bad delay query parameter: at most {} days",
                    MAX_DELAY.as_secs() / 86_400
                ),
            );
        }
        Ok(delay) => delay,
        Err(message) => return ingress_error(StatusCode::BAD_REQUEST, message),
    };
    if delay.is_some() && !send {
        return ingress_error(
            StatusCode::BAD_REQUEST,
            "the delay query parameter is only allowed on /send requests",
        );
    }
    let body = match axum::body::to_bytes(body, ingress.request_size_limit).await {
        Ok(body) => body,
        Err(_) => {
            return ingress_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than the limit of {} bytes (`ingress.request-size-limit`)",
                    ingress.request_size_limit
                ),
            );
        }
    };
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if !handler_manifest.accepts_input(content_type, body.is_empty()) {
        return ingress_error(
            StatusCode::BAD_REQUEST,
            format!(
                "input validation error: the handler '{service}/{handler}' does not accept {}",
                match (content_type, body.is_empty()) {
                    (Some(ct), true) => format!("an empty body with content-type '{ct}'"),
                    (Some(ct), false) => format!("content-type '{ct}'"),
                    (None, true) => "an empty request without content-type".to_owned(),
                    (None, false) => "a body without content-type".to_owned(),
                }
            ),
        );
    }
    let Some(handler_type) = manifest.ty.handler_type(handler_manifest.ty) else {
        return ingress_error(StatusCode::INTERNAL_SERVER_ERROR, "the handler has an invalid type");
    };
    let target = InvocationTarget {
        service: service.clone(),
        handler: handler.clone(),
        key,
        service_type: manifest.ty,
        handler_type,
    };
    if handler_type == HandlerType::Workflow && idempotency_key.is_some() {
        return ingress_error(
            StatusCode::BAD_REQUEST,
            "an idempotency-key is not allowed on a workflow's run handler: the workflow key already identifies the run",
        );
    }
    let id = invocation_id_of(&target, idempotency_key.as_deref());
    let partition_key = id.partition_key;
    let retention = ingress
        .retention
        .retention_of(registered, &target, idempotency_key.as_deref());
    let now = unix_ms();
    let execution_time = delay.map(|d| now + d.as_millis() as u64);
    let request = InvokeRequest {
        id,
        target,
        argument: body.to_vec(),
        headers: forwarded_headers(&parts.headers, &path_and_query),
        execution_time,
        response_sink: None,
        idempotency_key,
        retention,
        restarted_from: None,
        invoked_by: None,
        submit_notification: None,
    };
    let partition = match ingress.partitions.for_key(partition_key).await {
        Ok(partition) => partition,
        Err(error) => return submit_error(error),
    };
    if send {
        return match partition.send(request).await {
            Ok(new) => {
                let status = if new { "Accepted" } else { "PreviouslyAccepted" };
                let mut answer = serde_json::json!({"invocationId": id.to_string(), "status": status});
                if let Some(at) = execution_time {
                    answer["executionTime"] = serde_json::Value::String(rfc3339(at));
                }
                (
                    StatusCode::ACCEPTED,
                    [
                        (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
                        id_header(&id),
                    ],
                    answer.to_string(),
                )
                    .into_response()
            }
            Err(error) => submit_error(error),
        };
    }
    match partition.call(request).await {
        Ok((id, result)) => result_response(&id, Some(handler_manifest), result),
        Err(error) => submit_error(error),
    }
}

/// An invocation's result as the ingress answers it: the output with the handler's content
/// type, or the failure with its code (`source: invocation`).
fn result_response(id: &InvocationId, handler: Option<&HandlerManifest>, result: Arc<InvocationResult>) -> Response {
    match &*result {
        InvocationResult::Success(_) => success(id, handler, result),
        InvocationResult::Failure {
            code,
            message,
            metadata,
        } => {
            let status = StatusCode::from_u16(*code)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut body = serde_json::json!({"code": code, "message": message, "source": "invocation"});
            if !metadata.is_empty() {
                body["metadata"] = metadata
                    .iter()
                    .map(|(key, value)| (key.clone(), serde_json::Value::String(value.clone())))
                    .collect::<serde_json::Map<_, _>>()
                    .into();
            }
            (
                status,
                [
                    (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
                    (
                        header::HeaderName::from_static("x-restate-error-source"),
                        HeaderValue::from_static("invocation"),
                    ),
                    id_header(id),
                ],
                body.to_string(),
            )
                .into_response()
        }
    }
}

/// `GET /restate/invocation/{id}/attach|output` and
/// `GET /restate/invocation/{service}[/{key}]/{handler}/{idempotency-key}/attach|output`:
/// attach waits for the result, output answers at once (470 while it runs).
async fn attach_or_output(ingress: &Ingress, method: &Method, rest: &str, workflow: bool) -> Response {
    let segments: Vec<String> = match rest.split('/').map(paths::percent_decode).collect::<Option<Vec<_>>>() {
        Some(segments) if segments.iter().all(|s| !s.is_empty()) => segments,
        _ => return ingress_error(StatusCode::BAD_REQUEST, format!("bad path: /restate/invocation/{rest}")),
    };
    let Some((action, target)) = segments.split_last() else {
        return ingress_error(StatusCode::BAD_REQUEST, "bad path: /restate/invocation/");
    };
    let attach = match action.as_str() {
        "attach" => true,
        "output" => false,
        other => {
            return ingress_error(
                StatusCode::BAD_REQUEST,
                format!("bad path: expected attach or output at the end, got '{other}'"),
            );
        }
    };
    if method != Method::GET {
        return ingress_error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} is not allowed; use GET"),
        );
    }
    let schema = ingress.schema.get();
    let (id, handler) = match target {
        [workflow_name, key] if workflow => {
            let workflow = workflow_name;
            let Some((_, registered)) = schema.active_service(workflow) else {
                return ingress_error(StatusCode::NOT_FOUND, format!("workflow '{workflow}' not found"));
            };
            let run = registered
                .manifest
                .handlers
                .iter()
                .find(|h| registered.manifest.ty.handler_type(h.ty) == Some(HandlerType::Workflow));
            let Some(run) = run.filter(|_| registered.manifest.ty == ServiceType::Workflow) else {
                return ingress_error(StatusCode::BAD_REQUEST, format!("'{workflow}' is not a workflow"));
            };
            let target = InvocationTarget {
                service: workflow.clone(),
                handler: run.name.clone(),
                key: Some(key.clone()),
                service_type: ServiceType::Workflow,
                handler_type: HandlerType::Workflow,
            };
            (invocation_id_of(&target, None), Some(run))
        }
        _ if workflow => {
            return ingress_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "bad path: expected /restate/workflow/{{name}}/{{key}}/attach|output, got /restate/workflow/{rest}"
                ),
            );
        }
        [id] => match id.parse::<InvocationId>() {
            Ok(id) => (id, None),
            Err(error) => return ingress_error(StatusCode::BAD_REQUEST, format!("bad invocation id '{id}': {error}")),
        },
        [service, rest @ ..] if (2..=3).contains(&rest.len()) => {
            let Some((_, registered)) = schema.active_service(service) else {
                return ingress_error(StatusCode::NOT_FOUND, format!("service '{service}' not found"));
            };
            let keyed = registered.manifest.ty != ServiceType::Service;
            let (key, handler, idempotency_key) = match (keyed, rest) {
                (true, [key, handler, ik]) => (Some(key.clone()), handler, ik),
                (false, [handler, ik]) => (None, handler, ik),
                _ => {
                    return ingress_error(
                        StatusCode::BAD_REQUEST,
                        "bad path: expected /restate/invocation/{service}[/{key}]/{handler}/{idempotency-key}/attach|output",
                    );
                }
            };
            let Some(handler_manifest) = registered.manifest.handlers.iter().find(|h| &h.name == handler) else {
                return ingress_error(
                    StatusCode::NOT_FOUND,
                    format!("the service '{service}' exists, but the handler '{handler}' was not found"),
                );
            };
            let Some(handler_type) = registered.manifest.ty.handler_type(handler_manifest.ty) else {
                return ingress_error(StatusCode::INTERNAL_SERVER_ERROR, "the handler has an invalid type");
            };
            let target = InvocationTarget {
                service: service.clone(),
                handler: handler.clone(),
                key,
                service_type: registered.manifest.ty,
                handler_type,
            };
            (invocation_id_of(&target, Some(idempotency_key)), Some(handler_manifest))
        }
        _ => return ingress_error(StatusCode::BAD_REQUEST, format!("bad path: /restate/invocation/{rest}")),
    };
    let partition = match ingress.partitions.for_key(id.partition_key).await {
        Ok(partition) => partition,
        Err(error) => return submit_error(error),
    };
    let not_found = || ingress_error(StatusCode::NOT_FOUND, "invocation not found");
    if attach {
        return match partition.attach(id).await {
            Ok(Some(result)) => result_response(&id, handler, result),
            Ok(None) => not_found(),
            Err(error) => submit_error(error),
        };
    }
    match partition.output(id).await {
        Ok(Output::Completed(result)) => result_response(&id, handler, Arc::new(result)),
        Ok(Output::NotFound) => not_found(),
        Ok(Output::NotReady) => ingress_error(
            StatusCode::from_u16(470).unwrap_or(StatusCode::CONFLICT),
            "the invocation exists but has not completed yet",
        ),
        Err(error) => submit_error(error),
    }
}

/// `POST /restate/awakeables/{id}/resolve|reject` (alias `/restate/a/…`): the body is the
/// value, or for `reject` the failure message (code 500). 202 once the result is durable.
async fn complete_awakeable(
    partitions: &Partitions,
    method: &Method,
    rest: &str,
    body: Body,
    request_size_limit: usize,
) -> Response {
    let Some((id, action)) = rest.split_once('/') else {
        return ingress_error(
            StatusCode::BAD_REQUEST,
            format!("bad path: expected /restate/awakeables/{{id}}/resolve or /reject, got '{rest}'"),
        );
    };
    if action != "resolve" && action != "reject" {
        return ingress_error(
            StatusCode::BAD_REQUEST,
            format!("bad path: expected resolve or reject after the awakeable id, got '{action}'"),
        );
    }
    if method != Method::POST {
        return ingress_error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} is not allowed; use POST"),
        );
    }
    let awakeable = match id.parse::<restate_types::AwakeableId>() {
        Ok(awakeable) => awakeable,
        Err(error) => return ingress_error(StatusCode::BAD_REQUEST, format!("bad awakeable id '{id}': {error}")),
    };
    let Ok(body) = axum::body::to_bytes(body, request_size_limit).await else {
        return ingress_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than the limit of {request_size_limit} bytes (`ingress.request-size-limit`)"
            ),
        );
    };
    let result = match action {
        "resolve" => SignalResult::Value(body.to_vec()),
        _ => SignalResult::Failure {
            code: 500,
            message: String::from_utf8_lossy(&body).into_owned(),
        },
    };
    let target = awakeable.invocation;
    let partition = match partitions.for_key(target.partition_key).await {
        Ok(partition) => partition,
        Err(error) => return submit_error(error),
    };
    match partition.signal(target, awakeable.signal_index, result).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(error) => submit_error(error),
    }
}

/// The output of a successful invocation, shared by every request that waited for it (a large
/// output is not copied per waiter).
struct SharedOutput(Arc<InvocationResult>);

impl AsRef<[u8]> for SharedOutput {
    fn as_ref(&self) -> &[u8] {
        match &*self.0 {
            InvocationResult::Success(output) => output,
            InvocationResult::Failure { .. } => &[],
        }
    }
}

/// A successful call: the output bytes with the content type the handler's output rules give.
fn success(id: &InvocationId, handler: Option<&HandlerManifest>, result: Arc<InvocationResult>) -> Response {
    let output = SharedOutput(result);
    let empty = output.as_ref().is_empty();
    let content_type = match handler.and_then(|h| h.output.as_ref()) {
        None => (!empty).then_some("application/json".to_owned()),
        Some(rules) => rules
            .content_type
            .clone()
            .filter(|_| !empty || rules.set_content_type_if_empty.unwrap_or(false)),
    };
    let mut response = Response::new(Body::from(Bytes::from_owner(output)));
    let headers = response.headers_mut();
    let (name, value) = id_header(id);
    headers.insert(name, value);
    if let Some(content_type) = content_type.and_then(|ct| HeaderValue::from_str(&ct).ok()) {
        headers.insert(header::CONTENT_TYPE, content_type);
    }
    response
}

/// The request headers the handler sees, plus `x-restate-ingress-path`.
fn forwarded_headers(headers: &HeaderMap, path_and_query: &str) -> Vec<(String, String)> {
    let mut forwarded: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| !DROPPED_HEADERS.contains(&name.as_str()))
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
        .collect();
    forwarded.push(("x-restate-ingress-path".into(), path_and_query.to_owned()));
    forwarded
}

/// The `delay` query parameter (name case-insensitive), friendly (`10s`) or ISO 8601 (`PT10S`).
fn delay_of(query: Option<&str>) -> Result<Option<Duration>, String> {
    let Some(query) = query else { return Ok(None) };
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name.eq_ignore_ascii_case("delay") {
            let value = paths::percent_decode(value).unwrap_or_else(|| value.to_owned());
            return restate_types::durations::parse_duration(&value)
                .map(|ms| Some(Duration::from_millis(ms)))
                .map_err(|error| format!("bad delay query parameter, must be a ISO8601 duration: {error}"));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_friendly_or_iso8601() {
        assert_eq!(delay_of(Some("delay=10s")), Ok(Some(Duration::from_secs(10))));
        assert_eq!(delay_of(Some("x=1&DELAY=PT1M")), Ok(Some(Duration::from_secs(60))));
        assert_eq!(delay_of(Some("delay=1h%2030m")), Ok(Some(Duration::from_secs(5400))));
        assert_eq!(delay_of(None), Ok(None));
        assert!(
            delay_of(Some("delay=abc"))
                .unwrap_err()
                .starts_with("bad delay query parameter")
        );
    }

    #[test]
    fn forwarded_headers_drop_connection_details_and_add_the_path() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("h"));
        headers.insert("x-custom", HeaderValue::from_static("v"));
        let forwarded = forwarded_headers(&headers, "/Greeter/greet?x=1");
        assert_eq!(
            forwarded,
            vec![
                ("x-custom".to_owned(), "v".to_owned()),
                ("x-restate-ingress-path".to_owned(), "/Greeter/greet?x=1".to_owned())
            ]
        );
    }
}
