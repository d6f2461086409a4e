//! The PostgreSQL wire protocol for the same SQL as `POST /query` (`[admin.query-engine]
//! pgsql-bind-address`, off by default), so `psql` and BI tools can query the introspection
//! tables. Simple query protocol; values are sent as text. No authentication: bind it to a
//! loopback or otherwise private address.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use futures::StreamExt as _;
use pgwire::api::query::SimpleQueryHandler;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::DataRow;
use restate_storage_query::arrow::array::Array;
use restate_storage_query::arrow::datatypes::DataType;
use restate_storage_query::arrow::record_batch::RecordBatch;
use restate_storage_query::arrow::util::display::{ArrayFormatter, FormatOptions};
use restate_storage_query::{QueryEngine, QueryError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves PostgreSQL clients on `listener` until `shutdown`.
pub async fn serve_pgsql(
    listener: TcpListener,
    engine: QueryEngine,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let handlers = Arc::new(Handlers {
        query: Arc::new(PgsqlQueries { engine }),
    });
    loop {
        let (socket, _) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!("PostgreSQL endpoint: accepting a connection failed: {error}");
                    continue;
                }
            },
        };
        let handlers = handlers.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                served = pgwire::tokio::process_socket(socket, None, handlers) => {
                    if let Err(error) = served {
                        tracing::debug!("PostgreSQL connection ended: {error}");
                    }
                }
            }
        });
    }
}

struct Handlers {
    query: Arc<PgsqlQueries>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.query.clone()
    }
}

struct PgsqlQueries {
    engine: QueryEngine,
}

/// A query error as PostgreSQL reports it: `42601` (syntax error or access rule) for the SQL,
/// `XX000` (internal error) for the rest.
fn pg_error(failure: QueryError) -> PgWireError {
    let (code, message) = match failure {
        QueryError::Sql(message) => ("42601", message),
        // insufficient_resources: the engine runs as many queries as it allows.
        QueryError::Busy(message) => ("53000", message),
        QueryError::Execution(message) => ("XX000", message),
    };
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message)))
}

fn pg_type(data_type: &DataType) -> Type {
    match data_type {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Type::INT8,
        DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Timestamp(..) => Type::TIMESTAMPTZ,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Type::BYTEA,
        _ => Type::TEXT,
    }
}

/// A value in PostgreSQL's text format where it differs from Arrow's display: booleans are
/// `t`/`f`, byte strings `\x` and hex (Arrow displays them as hex already).
fn pg_text(data_type: &DataType, shown: String) -> String {
    match data_type {
        DataType::Boolean => if shown == "true" { "t" } else { "f" }.to_owned(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => format!("\\x{shown}"),
        _ => shown,
    }
}

/// The rows of one batch in PostgreSQL's text format (or the query's error).
fn encode_rows(fields: &Arc<Vec<FieldInfo>>, batch: Result<RecordBatch, QueryError>) -> Vec<PgWireResult<DataRow>> {
    let batch = match batch {
        Ok(batch) => batch,
        Err(failure) => return vec![Err(pg_error(failure))],
    };
    let options = FormatOptions::default();
    let formatters = match batch
        .columns()
        .iter()
        .map(|column| ArrayFormatter::try_new(column.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(formatters) => formatters,
        Err(e) => return vec![Err(pg_error(QueryError::Execution(e.to_string())))],
    };
    let mut encoder = DataRowEncoder::new(fields.clone());
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        for (column, formatter) in batch.columns().iter().zip(&formatters) {
            let value = (!column.is_null(row)).then(|| pg_text(column.data_type(), formatter.value(row).to_string()));
            if let Err(error) = encoder.encode_field(&value) {
                rows.push(Err(error));
                return rows;
            }
        }
        rows.push(Ok(encoder.take_row()));
    }
    rows
}

#[async_trait]
impl SimpleQueryHandler for PgsqlQueries {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // psql sends an empty query for a lone `;`.
        if query.trim().trim_end_matches(';').trim().is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let stream = self.engine.execute(query).await.map_err(pg_error)?;
        let fields: Arc<Vec<FieldInfo>> = Arc::new(
            stream
                .schema
                .fields()
                .iter()
                .map(|f| FieldInfo::new(f.name().clone(), None, None, pg_type(f.data_type()), FieldFormat::Text))
                .collect(),
        );
        // Rows go out batch by batch as the query produces them; only one batch is encoded
        // and held at a time.
        let row_fields = fields.clone();
        let batches = futures::stream::unfold(stream, |mut stream| async move {
            stream.next().await.map(|batch| (batch, stream))
        });
        let rows = batches.flat_map(move |batch| futures::stream::iter(encode_rows(&row_fields, batch)));
        Ok(vec![Response::Query(QueryResponse::new(fields, rows))])
    }
}
