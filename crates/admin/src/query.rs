//! `POST /query`: SQL over the partition stores (`crates/storage-query`). `Accept:
//! application/json` answers `{"rows": [...]}` (nulls omitted, binary as hex, timestamps RFC
//! 3339 in UTC); anything else an Arrow IPC stream, as the `restate` CLI expects. Rows stream
//! batch by batch; an error before the first batch is a status (400 for the SQL, 500 else),
//! a later one ends the stream.

use axum::body::Body;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use restate_storage_query::arrow::ipc::writer::StreamWriter;
use restate_storage_query::arrow::json::writer::{LineDelimited, WriterBuilder};
use restate_storage_query::arrow::record_batch::RecordBatch;
use restate_storage_query::{QueryEngine, QueryError, QueryStream};
use serde::Deserialize;

use crate::invocations::error;

/// Longer SQL texts are refused: no CLI command comes near it, and parsing and planning a
/// multi-megabyte `IN (...)` list would only burn CPU the invocations need.
const MAX_QUERY_BYTES: usize = 256 * 1024;

#[derive(Debug, Deserialize)]
pub(crate) struct QueryRequest {
    query: String,
    /// At most this many rows are answered (the stream ends cleanly after them); for callers
    /// that want to bound a query whose size they do not know. Not part of Restate's API.
    row_limit: Option<usize>,
}

/// The batches of a started query: the first one (already read), then the rest, cut at the
/// row limit.
struct Batches {
    stream: QueryStream,
    first: Option<RecordBatch>,
    remaining: Option<usize>,
}

impl Batches {
    async fn next(&mut self) -> Option<Result<RecordBatch, QueryError>> {
        if self.remaining == Some(0) {
            return None;
        }
        let batch = match self.first.take() {
            Some(batch) => batch,
            None => match self.stream.next().await? {
                Ok(batch) => batch,
                Err(failure) => return Some(Err(failure)),
            },
        };
        Some(Ok(match &mut self.remaining {
            Some(remaining) => {
                let rows = batch.num_rows().min(*remaining);
                *remaining -= rows;
                batch.slice(0, rows)
            }
            None => batch,
        }))
    }
}

pub(crate) async fn query(
    State(engine): State<Option<QueryEngine>>,
    headers: HeaderMap,
    body: Result<axum::Json<QueryRequest>, JsonRejection>,
) -> Response {
    let request = match body {
        Ok(axum::Json(request)) => request,
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "bad query request: {}; expected {{\"query\": \"SELECT ...\"}}",
                    rejection.body_text()
                ),
            );
        }
    };
    if request.query.len() > MAX_QUERY_BYTES {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "the query is {} bytes long; at most {MAX_QUERY_BYTES} are accepted (use a shorter IN list, or a join)",
                request.query.len()
            ),
        );
    }
    let Some(engine) = engine else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the query engine did not start on this node (see its log)".into(),
        );
    };
    let mut stream = match engine.execute(&request.query).await {
        Ok(stream) => stream,
        Err(failure) => return query_error(failure),
    };
    // The first batch decides the status: errors found while planning or starting are the
    // caller's to see as a status, not as a cut stream.
    let first = match stream.next().await {
        Some(Err(failure)) => return query_error(failure),
        Some(Ok(batch)) => Some(batch),
        None => None,
    };
    let json = headers.get(header::ACCEPT).is_some_and(|a| a == "application/json");
    let schema = stream.schema.clone();
    let batches = Batches {
        stream,
        first,
        remaining: request.row_limit,
    };
    if json {
        json_response(batches)
    } else {
        arrow_response(schema, batches)
    }
}

fn query_error(failure: QueryError) -> Response {
    match failure {
        QueryError::Sql(message) => error(StatusCode::BAD_REQUEST, message),
        QueryError::Busy(message) => {
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, message);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        QueryError::Execution(message) => error(StatusCode::INTERNAL_SERVER_ERROR, message),
    }
}

/// The rows of one batch as JSON objects, comma separated.
fn json_rows(batch: &RecordBatch) -> Result<Vec<u8>, String> {
    let mut lines = Vec::new();
    {
        let mut writer = WriterBuilder::new()
            .with_explicit_nulls(false)
            .with_timestamp_tz_format("%Y-%m-%dT%H:%M:%S%.3fZ".into())
            .build::<_, LineDelimited>(&mut lines);
        writer.write(batch).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
    }
    // One object per line; strings escape their newlines, so lines are rows.
    let rows: Vec<&[u8]> = lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    Ok(rows.join(&b","[..]))
}

fn json_response(mut batches: Batches) -> Response {
    let body = async_stream(move |tx| async move {
        let _ = tx.send(Ok(b"{\"rows\":[".to_vec())).await;
        let mut wrote_rows = false;
        loop {
            let batch = match batches.next().await {
                Some(Ok(batch)) => batch,
                Some(Err(failure)) => {
                    let _ = tx.send(Err(std::io::Error::other(failure.to_string()))).await;
                    return;
                }
                None => break,
            };
            if batch.num_rows() == 0 {
                continue;
            }
            match json_rows(&batch) {
                Ok(rows) => {
                    let mut chunk = Vec::with_capacity(rows.len() + 1);
                    if wrote_rows {
                        chunk.push(b',');
                    }
                    chunk.extend(rows);
                    wrote_rows = true;
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
                Err(failure) => {
                    let _ = tx.send(Err(std::io::Error::other(failure))).await;
                    return;
                }
            }
        }
        let _ = tx.send(Ok(b"]}".to_vec())).await;
    });
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
}

fn arrow_response(schema: restate_storage_query::arrow::datatypes::SchemaRef, mut batches: Batches) -> Response {
    let body = async_stream(move |tx| async move {
        let mut writer = match StreamWriter::try_new(Vec::new(), &schema) {
            Ok(writer) => writer,
            Err(failure) => {
                let _ = tx.send(Err(std::io::Error::other(failure.to_string()))).await;
                return;
            }
        };
        loop {
            let batch = match batches.next().await {
                Some(Ok(batch)) => batch,
                Some(Err(failure)) => {
                    let _ = tx.send(Err(std::io::Error::other(failure.to_string()))).await;
                    return;
                }
                None => break,
            };
            if let Err(failure) = writer.write(&batch) {
                let _ = tx.send(Err(std::io::Error::other(failure.to_string()))).await;
                return;
            }
            let chunk = std::mem::take(writer.get_mut());
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
        let _ = writer.finish();
        let _ = tx.send(Ok(std::mem::take(writer.get_mut()))).await;
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.apache.arrow.stream"),
        )],
        body,
    )
        .into_response()
}

type Chunk = Result<Vec<u8>, std::io::Error>;

/// A response body fed by a task through a small channel (back-pressure: the task waits while
/// the client reads slowly).
fn async_stream<F, Fut>(produce: F) -> Body
where
    F: FnOnce(tokio::sync::mpsc::Sender<Chunk>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(4);
    tokio::spawn(produce(tx));
    Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
}
