//! SQL introspection over the partition stores: the tables the admin API's `/query` serves
//! (`sys_invocation`, `sys_journal`, `state`, ...), with the reference server's names and
//! column types, on Apache DataFusion. Read-only: DDL, DML and `SET` are refused.

mod bounded;
mod entry_json;
mod invocations;
mod journal;
mod keyed;
mod pushdown;
mod registry;
mod rows;
mod table;

pub use datafusion::arrow;

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt as _;
use restate_metadata_store::SchemaCache;
use restate_partition_api::Partitions;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use crate::invocations::InvocationTable;
use crate::journal::{JournalEventsTable, JournalTable};
use crate::keyed::KeyedTable;
use crate::registry::RegistryTable;
use crate::table::{Provider, SysTable};

/// Why a query failed: the SQL (the caller's mistake, 400), a limit of the engine (too many
/// queries at once, 429), or running it (500; also a query that needed more memory or time
/// than the engine allows, which the message names).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Sql(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Execution(String),
}

/// What the engine allows one node's queries (`[admin.query-engine]`).
#[derive(Debug, Clone)]
pub struct QueryLimits {
    /// Memory all running queries may hold for sorts, joins and aggregations together.
    pub memory_size: usize,
    /// Longest a query may run.
    pub timeout: Duration,
    /// Queries running at once.
    pub concurrent_queries: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            memory_size: 1 << 30,
            timeout: Duration::from_secs(60),
            concurrent_queries: 8,
        }
    }
}

impl QueryError {
    fn of(error: DataFusionError, limits: &QueryLimits) -> Self {
        match error.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => Self::Sql(error.to_string()),
            DataFusionError::ResourcesExhausted(reason) => Self::Execution(format!(
                "the query needs more memory than `[admin.query-engine] memory-size` ({} MiB) allows: {reason}",
                limits.memory_size >> 20
            )),
            _ => Self::Execution(error.to_string()),
        }
    }

    fn timed_out(limits: &QueryLimits) -> Self {
        Self::Execution(format!(
            "the query ran longer than `[admin.query-engine] query-timeout` ({:?}) allows; it was stopped",
            limits.timeout
        ))
    }
}

/// The SQL engine of one node over its partitions; cheap to clone. Queries plan and run on a
/// runtime of their own, so a heavy query competes with invocations for CPU only through the
/// OS scheduler, never by occupying the node's async workers. Memory for sorts, joins and
/// aggregations comes from one pool of `memory-size`; functions that build large values check
/// their output first; scans stream in bounded chunks.
#[derive(Clone)]
pub struct QueryEngine {
    ctx: SessionContext,
    runtime: Arc<QueryRuntime>,
    limits: QueryLimits,
    running: Arc<Semaphore>,
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

/// What a running query sends: its schema first, then its batches.
enum Produced {
    Started(SchemaRef),
    Batch(RecordBatch),
}

/// The rows of a running query, batch by batch. Dropping it stops the query.
pub struct QueryStream {
    pub schema: SchemaRef,
    batches: mpsc::Receiver<Result<Produced, QueryError>>,
}

impl QueryStream {
    /// The next batch; `None` once every row was produced (never after a failure: a query
    /// that fails, panics included, ends with its error).
    pub async fn next(&mut self) -> Option<Result<RecordBatch, QueryError>> {
        loop {
            return match self.batches.recv().await? {
                Ok(Produced::Batch(batch)) => Some(Ok(batch)),
                Ok(Produced::Started(_)) => continue,
                Err(error) => Some(Err(error)),
            };
        }
    }
}

impl QueryEngine {
    pub fn new(partitions: Partitions, schema: SchemaCache, limits: QueryLimits) -> std::io::Result<Self> {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema("restate", "public")
            .with_information_schema(true)
            .with_target_partitions(2)
            .set_str("datafusion.sql_parser.dialect", "PostgreSQL");
        // No spilling to disk: a query that needs more memory than the pool fails instead of
        // filling the node's disk.
        let runtime_env = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory_size, 1.0)
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
            .build_arc()
            .map_err(std::io::Error::other)?;
        let ctx = SessionContext::new_with_config_rt(config, runtime_env);
        // Table functions that generate rows from nothing: a query of them is unbounded.
        ctx.deregister_udtf("generate_series");
        ctx.deregister_udtf("range");
        bounded::install(&ctx, (limits.memory_size / 4) as u64);
        let tables: [(&str, Arc<dyn SysTable>); 12] = [
            ("sys_invocation_status", Arc::new(InvocationTable::Status)),
            ("sys_invocation_state", Arc::new(InvocationTable::State)),
            ("sys_invocation", Arc::new(InvocationTable::Joined)),
            ("sys_journal", Arc::new(JournalTable)),
            ("sys_journal_events", Arc::new(JournalEventsTable)),
            ("sys_locks", Arc::new(KeyedTable::Locks)),
            ("state", Arc::new(KeyedTable::State)),
            ("sys_inbox", Arc::new(KeyedTable::Inbox)),
            ("sys_keyed_service_status", Arc::new(KeyedTable::KeyedServiceStatus)),
            ("sys_promise", Arc::new(KeyedTable::Promise)),
            ("sys_service", Arc::new(RegistryTable::Service)),
            ("sys_deployment", Arc::new(RegistryTable::Deployment)),
        ];
        for (name, table) in tables {
            // Names are distinct and the catalog is in memory: registration cannot fail.
            let _ = ctx.register_table(name, Arc::new(Provider::new(table, partitions.clone(), schema.clone())));
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
            running: Arc::new(Semaphore::new(limits.concurrent_queries.max(1))),
            limits,
        })
    }

    /// Plans and starts `sql` (read-only); the rows stream as the plan produces them. Dropping
    /// the stream stops the query.
    pub async fn execute(&self, sql: &str) -> Result<QueryStream, QueryError> {
        let Some(runtime) = self.runtime.0.as_ref() else {
            return Err(QueryError::Execution("the query engine stopped".into()));
        };
        let Ok(permit) = self.running.clone().try_acquire_owned() else {
            return Err(QueryError::Busy(format!(
                "{} queries are running, as many as `[admin.query-engine] concurrent-queries-limit` allows; \
                 try again when one has ended",
                self.limits.concurrent_queries
            )));
        };
        let (ctx, sql, limits) = (self.ctx.clone(), sql.to_owned(), self.limits.clone());
        let deadline = Instant::now() + limits.timeout;
        let (batches_tx, mut batches_rx) = mpsc::channel(2);
        let failures = batches_tx.clone();
        let query = runtime.spawn(async move {
            let _permit = permit;
            let read_only = SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false);
            let planned = tokio::time::timeout_at(deadline, async {
                ctx.sql_with_options(&sql, read_only).await?.execute_stream().await
            })
            .await;
            let mut stream = match planned {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    let _ = batches_tx.send(Err(QueryError::of(error, &limits))).await;
                    return false;
                }
                Err(_) => {
                    let _ = batches_tx.send(Err(QueryError::timed_out(&limits))).await;
                    return false;
                }
            };
            if batches_tx.send(Ok(Produced::Started(stream.schema()))).await.is_err() {
                return false;
            }
            loop {
                let produced = match tokio::time::timeout_at(deadline, stream.next()).await {
                    Ok(Some(Ok(batch))) => Ok(Produced::Batch(batch)),
                    Ok(Some(Err(error))) => Err(QueryError::of(error, &limits)),
                    Ok(None) => return false,
                    Err(_) => Err(QueryError::timed_out(&limits)),
                };
                let failed = produced.is_err();
                match tokio::time::timeout_at(deadline, batches_tx.send(produced)).await {
                    // A client that stopped reading holds no memory and no slot past the limit.
                    Err(_) => return true,
                    Ok(Err(_)) => return false,
                    Ok(Ok(())) if failed => return false,
                    Ok(Ok(())) => {}
                }
            }
        });
        // A panic while the query runs (in DataFusion or Arrow) ends it with the reason, never
        // with a short answer that looks complete: the channel closes only after this.
        let timed_out = QueryError::timed_out(&self.limits);
        runtime.spawn(async move {
            let failure = match query.await {
                Ok(false) => None,
                // It stopped while its client did not read; the client learns why if it reads on.
                Ok(true) => Some(timed_out),
                Err(error) if error.is_panic() => {
                    let panic = error.into_panic();
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Some(QueryError::Execution(format!("the query failed: {message}")))
                }
                Err(_) => None,
            };
            if let Some(failure) = failure {
                let _ = failures.send(Err(failure)).await;
            }
        });
        match batches_rx.recv().await {
            Some(Ok(Produced::Started(schema))) => Ok(QueryStream {
                schema,
                batches: batches_rx,
            }),
            Some(Ok(Produced::Batch(_))) | None => {
                Err(QueryError::Execution("the query stopped before it started".into()))
            }
            Some(Err(error)) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::catalog::{Session, TableProvider};
    use datafusion::datasource::TableType;
    use datafusion::logical_expr::Expr;
    use datafusion::physical_plan::ExecutionPlan;

    use super::*;

    fn engine(limits: QueryLimits) -> QueryEngine {
        QueryEngine::new(
            Partitions::local_only(),
            SchemaCache::new(restate_metadata_store::MetadataClient::new(
                Arc::new(restate_metadata_store::InMemoryStore::default()),
                1 << 20,
            )),
            limits,
        )
        .unwrap()
    }

    /// Runs a query to its end: its rows, or its error.
    async fn run(engine: &QueryEngine, sql: &str) -> Result<usize, QueryError> {
        let mut stream = engine.execute(sql).await?;
        let mut rows = 0;
        while let Some(batch) = stream.next().await {
            rows += batch?.num_rows();
        }
        Ok(rows)
    }

    /// `(VALUES (1), (2), …, (n)) AS {name}(x)`: rows to work on (the engine generates none).
    fn values(n: usize, name: &str) -> String {
        let rows: Vec<String> = (1..=n).map(|i| format!("({i})")).collect();
        format!("(VALUES {}) AS {name}(x)", rows.join(", "))
    }

    /// The error `sql` ends with.
    async fn refused(engine: &QueryEngine, sql: &str) -> String {
        match run(engine, sql).await {
            Ok(rows) => panic!("expected an error, got {rows} rows: {}", &sql[..sql.len().min(200)]),
            Err(error) => error.to_string(),
        }
    }

    #[tokio::test]
    async fn table_functions_that_generate_rows_are_not_available() {
        let engine = engine(QueryLimits::default());
        let error = engine
            .execute("SELECT length(string_agg(repeat('x', 1000000), ',')) AS l FROM generate_series(1, 100000)")
            .await
            .err()
            .unwrap();
        assert!(matches!(error, QueryError::Sql(_)), "{error}");
        assert!(error.to_string().contains("generate_series"), "{error}");
    }

    #[tokio::test]
    async fn functions_that_build_huge_values_fail_before_allocating() {
        let engine = engine(QueryLimits::default());
        let error = refused(&engine, "SELECT length(repeat('x', 100000000000))").await;
        assert!(error.contains("repeat() would build"), "{error}");
        assert!(error.contains("memory-size"), "{error}");
        // Computed per row: the whole batch is weighed before anything is built.
        let sql = format!("SELECT length(repeat('x', x * 1000000)) FROM {}", values(1000, "t"));
        let error = refused(&engine, &sql).await;
        assert!(error.contains("repeat() would build"), "{error}");
        let error = refused(&engine, "SELECT length(lpad('x', 2000000000))").await;
        assert!(error.contains("lpad() would build"), "{error}");
        let sql = format!(
            "SELECT length(replace(repeat('a', 100000), 'a', repeat('b', 100000))) FROM {}",
            values(2, "t")
        );
        let error = refused(&engine, &sql).await;
        assert!(error.contains("replace() would build"), "{error}");
        // A constant is copied into every row of a batch: a large one is refused as such.
        let sql = format!(
            "SELECT length(string_agg(repeat('x', 1000000), ',')) FROM {}",
            values(1000, "t")
        );
        let error = refused(&engine, &sql).await;
        assert!(error.contains("repeat() would build"), "{error}");
        // Chained, each step small, together huge.
        let sql = "WITH a AS (SELECT repeat('x', 30000) AS s), b AS (SELECT concat(s, s, s, s, s, s, s, s, s, s) AS s FROM a) SELECT length(s) FROM b";
        let error = refused(&engine, sql).await;
        assert!(error.contains("concat() would build"), "{error}");
        // Within the limit they work as usual.
        let sql = "SELECT repeat('ab', 3), lpad('x', 5), replace('aa', 'a', 'b')";
        assert_eq!(run(&engine, sql).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_query_beyond_the_memory_pool_fails_naming_the_limit() {
        let engine = engine(QueryLimits {
            memory_size: 32 << 20,
            ..QueryLimits::default()
        });
        let sql = format!(
            "SELECT array_agg(a.x * 5000 + b.x) FROM {}, {}",
            values(5000, "a"),
            values(5000, "b")
        );
        let error = refused(&engine, &sql).await;
        assert!(error.contains("`[admin.query-engine] memory-size` (32 MiB)"), "{error}");
        // Each value is small; together they are not.
        let sql = format!(
            "SELECT length(string_agg(repeat('x', 500 + a.x % 2), ',')) FROM {}, {}",
            values(5000, "a"),
            values(20, "b")
        );
        let error = refused(&engine, &sql).await;
        assert!(error.contains("`[admin.query-engine] memory-size` (32 MiB)"), "{error}");
        assert!(
            !error.contains("would build"),
            "the pool, not a function's own check: {error}"
        );
        // The engine serves the next query.
        assert_eq!(run(&engine, "SELECT 1").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_query_running_too_long_is_stopped_and_busy_engines_refuse_more() {
        let engine = engine(QueryLimits {
            timeout: Duration::from_millis(500),
            concurrent_queries: 1,
            ..QueryLimits::default()
        });
        let endless = format!(
            "SELECT sum(a.x * b.x * c.x) FROM {}, {}, {}",
            values(2000, "a"),
            values(2000, "b"),
            values(2000, "c")
        );
        let slow = engine.execute(&endless).await.unwrap();
        let busy = engine.execute("SELECT 1").await.err().unwrap();
        assert!(matches!(busy, QueryError::Busy(_)), "{busy}");
        assert!(busy.to_string().contains("concurrent-queries-limit"), "{busy}");
        let mut slow = slow;
        let started = std::time::Instant::now();
        let error = loop {
            match slow.next().await {
                Some(Err(error)) => break error.to_string(),
                Some(Ok(_)) => continue,
                None => panic!("the endless query ended"),
            }
        };
        assert!(error.contains("query-timeout"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        drop(slow);
        // Its slot is free again once it stopped.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(run(&engine, "SELECT 1").await.unwrap(), 1);
    }

    /// A table whose scan panics, as a bug in a table or in Arrow would.
    #[derive(Debug)]
    struct Panicking;

    #[async_trait]
    impl TableProvider for Panicking {
        fn schema(&self) -> SchemaRef {
            Arc::new(Schema::new(vec![Field::new("x", DataType::UInt64, true)]))
        }

        fn table_type(&self) -> TableType {
            TableType::Base
        }

        async fn scan(
            &self,
            _state: &dyn Session,
            _projection: Option<&Vec<usize>>,
            _filters: &[Expr],
            _limit: Option<usize>,
        ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
            panic!("offset overflow");
        }
    }

    #[tokio::test]
    async fn a_panic_while_a_query_runs_is_an_error_not_a_short_answer() {
        let engine = engine(QueryLimits::default());
        engine.ctx.register_table("panicking", Arc::new(Panicking)).unwrap();
        let error = refused(&engine, "SELECT * FROM panicking").await;
        assert!(error.contains("offset overflow"), "{error}");
        assert_eq!(run(&engine, "SELECT 1").await.unwrap(), 1);
    }
}
