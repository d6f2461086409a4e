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

use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
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

/// The SQL engine of one node over its partitions; cheap to clone.
#[derive(Clone)]
pub struct QueryEngine {
    ctx: SessionContext,
}

impl QueryEngine {
    pub fn new(worker: WorkerSlot) -> Self {
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
        Self { ctx }
    }

    /// Plans and starts `sql`; the rows stream as the plan produces them.
    pub async fn execute(&self, sql: &str) -> Result<SendableRecordBatchStream, QueryError> {
        let read_only = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = self
            .ctx
            .sql_with_options(sql, read_only)
            .await
            .map_err(QueryError::of)?;
        frame.execute_stream().await.map_err(QueryError::of)
    }
}
