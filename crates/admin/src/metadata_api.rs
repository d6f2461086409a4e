//! `/metadata/{key}`: raw access to user keys of the metadata store over HTTP.
//!
//! `GET` returns the bytes with the version in `ETag`; `HEAD` only the version; `PUT` needs
//! `If-Match` (`*`, `does-not-exist` or a version) and the new version in `ETag`; `DELETE`
//! needs `If-Match`. Keys the cluster owns cannot be changed here.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use restate_metadata_store::{MetadataClient, ReadError, WriteError};
use restate_types::metadata::{Precondition, Version, VersionedValue, is_system_key, validate_key};

pub(crate) fn router(client: MetadataClient) -> Router {
    // Read whole bodies up to twice the store's limit, so a value somewhat above it gets the
    // store's explanation rather than a bare 413.
    let body_limit = client.max_value_size().saturating_mul(2);
    Router::new()
        .route(
            "/metadata/{key}",
            get(get_value).head(head_value).put(put_value).delete(delete_value),
        )
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(client)
}

/// An error answer: a status and a message naming what was wrong.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "message": self.1 }))).into_response()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError(status, message.into())
}

fn check_key(key: &str) -> Result<(), ApiError> {
    validate_key(key).map_err(|reason| error(StatusCode::BAD_REQUEST, reason))
}

fn check_writable(key: &str) -> Result<(), ApiError> {
    check_key(key)?;
    if is_system_key(key) {
        return Err(error(
            StatusCode::FORBIDDEN,
            format!("`{key}` is managed by the cluster and cannot be changed through this API"),
        ));
    }
    Ok(())
}

fn read_failure(error_value: ReadError) -> ApiError {
    let status = match error_value {
        ReadError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ReadError::Rejected(_) => StatusCode::FORBIDDEN,
        ReadError::Codec { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, error_value.to_string())
}

fn write_failure(error_value: WriteError) -> ApiError {
    let status = match &error_value {
        WriteError::FailedPrecondition { .. } => StatusCode::PRECONDITION_FAILED,
        WriteError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        WriteError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        WriteError::UnknownOutcome(_) => StatusCode::GATEWAY_TIMEOUT,
        WriteError::Rejected(_) => StatusCode::FORBIDDEN,
        WriteError::Codec { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, error_value.to_string())
}

fn with_version(version: Version, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    if let Ok(value) = version.0.to_string().parse() {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

fn parse_version(text: &str) -> Option<Version> {
    text.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse::<u32>()
        .ok()
        .filter(|v| *v > 0)
        .map(Version)
}

fn precondition(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Err(error(
            StatusCode::PRECONDITION_REQUIRED,
            "`If-Match` is required: `*` (any), `does-not-exist`, or the version the key must have",
        ));
    };
    let text = value.to_str().unwrap_or_default().trim();
    match text {
        "*" => Ok(Precondition::None),
        "does-not-exist" | "\"does-not-exist\"" => Ok(Precondition::DoesNotExist),
        other => parse_version(other).map(Precondition::MatchesVersion).ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                format!("`If-Match: {other}` is invalid: expected `*`, `does-not-exist` or a version ≥ 1"),
            )
        }),
    }
}

async fn get_value(State(client): State<MetadataClient>, Path(key): Path<String>) -> Result<Response, ApiError> {
    check_key(&key)?;
    match client.get(&key).await.map_err(read_failure)? {
        Some(value) => Ok(with_version(
            value.version,
            ([(header::CONTENT_TYPE, "application/octet-stream")], value.value),
        )),
        None => Err(error(StatusCode::NOT_FOUND, format!("`{key}` does not exist"))),
    }
}

async fn head_value(State(client): State<MetadataClient>, Path(key): Path<String>) -> Result<Response, ApiError> {
    check_key(&key)?;
    match client.get_version(&key).await.map_err(read_failure)? {
        Some(version) => Ok(with_version(version, StatusCode::OK)),
        None => Ok(StatusCode::NOT_FOUND.into_response()),
    }
}

async fn put_value(
    State(client): State<MetadataClient>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_writable(&key)?;
    let precondition = precondition(&headers)?;
    let version = headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_version)
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "`ETag` is required and must be the new version (a number ≥ 1)",
            )
        })?;
    client
        .put(&key, VersionedValue::new(version, body.to_vec()), precondition)
        .await
        .map_err(write_failure)?;
    Ok(with_version(version, StatusCode::OK))
}

async fn delete_value(
    State(client): State<MetadataClient>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_writable(&key)?;
    let precondition = precondition(&headers)?;
    client.delete(&key, precondition).await.map_err(write_failure)?;
    Ok(StatusCode::OK.into_response())
}
