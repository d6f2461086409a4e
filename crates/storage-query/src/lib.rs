//! SQL introspection over the partition stores: the tables the admin API's `/query` serves
//! (`sys_invocation`, `sys_journal`, `state`, ...), with the reference server's names and
//! column types, on Apache DataFusion. Read-only: DDL, DML and `SET` are refused.

mod invocations;
mod journal;
mod keyed;
mod pushdown;
mod registry;
mod rows;
mod table;

pub use datafusion::arrow;

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt as _;
use restate_worker::WorkerSlot;

use crate::invocations::InvocationTable;
use crate::journal::JournalTable;
use crate::keyed::KeyedTable;
use crate::registry::RegistryTable;
use crate::table::{Provider, SysTable};

/// Why a query failed: the SQL (the caller's mistake, 400) or running it (500).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Sql(String),
    #[error("{0}")]
    Execution(String),
}

impl QueryError {
    fn of(error: DataFusionError) -> Self {
        match error.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => Self::Sql(error.to_string()),
            _ => Self::Execution(error.to_string()),
        }
    }
}

/// The SQL engine of one node over its partitions; cheap to clone. Queries plan and run on a
/// runtime of their own, so a heavy query competes with invocations for CPU only through the
/// OS scheduler, never by occupying the node's async workers.
#[derive(Clone)]
pub struct QueryEngine {
    ctx: SessionContext,
    runtime: Arc<QueryRuntime>,
}

/// The dedicated runtime; shut down in the background when the engine goes (a runtime may not
/// be dropped inside another one's async context).
struct QueryRuntime(Option<tokio::runtime::Runtime>);

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The rows of a running query, batch by batch; the first item tells whether it started.
pub struct QueryStream {
    pub schema: SchemaRef,
    batches: tokio::sync::mpsc::Receiver<Result<RecordBatch, QueryError>>,
}

impl QueryStream {
    /// The next batch; `None` once every row was produced.
    pub async fn next(&mut self) -> Option<Result<RecordBatch, QueryError>> {
        self.batches.recv().await
    }
}

impl QueryEngine {
    pub fn new(worker: WorkerSlot) -> std::io::Result<Self> {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema("restate", "public")
            .with_information_schema(true)
            .with_target_partitions(2)
            .set_str("datafusion.sql_parser.dialect", "PostgreSQL");
        let ctx = SessionContext::new_with_config(config);
        let tables: [(&str, Arc<dyn SysTable>); 10] = [
            ("sys_invocation_status", Arc::new(InvocationTable::Status)),
            ("sys_invocation_state", Arc::new(InvocationTable::State)),
            ("sys_invocation", Arc::new(InvocationTable::Joined)),
            ("sys_journal", Arc::new(JournalTable)),
            ("state", Arc::new(KeyedTable::State)),
            ("sys_inbox", Arc::new(KeyedTable::Inbox)),
            ("sys_keyed_service_status", Arc::new(KeyedTable::KeyedServiceStatus)),
            ("sys_promise", Arc::new(KeyedTable::Promise)),
            ("sys_service", Arc::new(RegistryTable::Service)),
            ("sys_deployment", Arc::new(RegistryTable::Deployment)),
        ];
        for (name, table) in tables {
            // Names are distinct and the catalog is in memory: registration cannot fail.
            let _ = ctx.register_table(name, Arc::new(Provider::new(table, worker.clone())));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(2)
            .thread_name("query-engine")
            .enable_all()
            .build()?;
        Ok(Self {
            ctx,
            runtime: Arc::new(QueryRuntime(Some(runtime))),
        })
    }

    /// Plans and starts `sql` (read-only); the rows stream as the plan produces them. Dropping
    /// the stream stops the query.
    pub async fn execute(&self, sql: &str) -> Result<QueryStream, QueryError> {
        let Some(runtime) = self.runtime.0.as_ref() else {
            return Err(QueryError::Execution("the query engine stopped".into()));
        };
        let (ctx, sql) = (self.ctx.clone(), sql.to_owned());
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (batches_tx, batches_rx) = tokio::sync::mpsc::channel(2);
        runtime.spawn(async move {
            let read_only = SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false);
            let stream = match ctx.sql_with_options(&sql, read_only).await {
                Ok(frame) => frame.execute_stream().await,
                Err(error) => Err(error),
            };
            let mut stream = match stream {
                Ok(stream) => {
                    let _ = started_tx.send(Ok(stream.schema()));
                    stream
                }
                Err(error) => {
                    let _ = started_tx.send(Err(QueryError::of(error)));
                    return;
                }
            };
            while let Some(batch) = stream.next().await {
                let failed = batch.is_err();
                if batches_tx.send(batch.map_err(QueryError::of)).await.is_err() || failed {
                    return;
                }
            }
        });
        let schema = started_rx
            .await
            .map_err(|_| QueryError::Execution("the query stopped before it started".into()))??;
        Ok(QueryStream {
            schema,
            batches: batches_rx,
        })
    }
}
