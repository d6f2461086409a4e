//! One DataFusion table over the partitions of this node: a scan reads the rows the filters
//! allow (see [`Pushdown`]) off the async runtime, then DataFusion filters, joins and sorts.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use restate_worker::{PartitionHandle, WorkerHandle, WorkerSlot};

use crate::pushdown::Pushdown;

/// What a table is made of: its columns and how to read its rows.
pub(crate) trait SysTable: Debug + Send + Sync + 'static {
    fn schema(&self) -> SchemaRef;
    /// Reads the rows, restricted by `pushdown` where the table can use it, building only the
    /// `projection`'s columns (in its order) and stopping after `limit` rows. Blocking.
    fn read(&self, source: &Source, scan: &Scan) -> Result<RecordBatch>;

    /// [`Self::read`], possibly as several batches read in parallel (DataFusion runs each as
    /// a partition of the scan).
    fn read_parallel(&self, source: &Source, scan: &Scan) -> Result<Vec<RecordBatch>> {
        self.read(source, scan).map(|batch| vec![batch])
    }
}

/// What a scan asks of a table.
pub(crate) struct Scan {
    pub pushdown: Pushdown,
    pub projection: Option<Vec<usize>>,
    /// Set only when DataFusion applies no filter after the scan, so stopping early is exact.
    pub limit: Option<usize>,
}

impl Scan {
    pub(crate) fn projection(&self) -> Option<&[usize]> {
        self.projection.as_deref()
    }

    /// Whether `rows` already reach the limit.
    pub(crate) fn full(&self, rows: usize) -> bool {
        self.limit.is_some_and(|limit| rows >= limit)
    }
}

/// Where tables read from: the partitions of this node's worker, and its schema registry.
#[derive(Clone)]
pub(crate) struct Source {
    pub worker: WorkerHandle,
}

impl Source {
    /// The partitions owning these partition keys, or all of them.
    pub(crate) fn partitions(&self, keys: Option<&[u64]>) -> Vec<PartitionHandle> {
        self.worker
            .partition_handles()
            .filter(|(range, _)| keys.is_none_or(|keys| keys.iter().any(|k| range.contains(k))))
            .map(|(_, handle)| handle.clone())
            .collect()
    }

    /// The partitions a `partition_key = …` / `IN (…)` filter allows (all without one).
    pub(crate) fn partitions_filtered(&self, pushdown: &Pushdown) -> Vec<PartitionHandle> {
        let keys: Option<Vec<u64>> = pushdown
            .values("partition_key")
            .map(|values| values.iter().filter_map(|v| v.parse().ok()).collect());
        self.partitions(keys.as_deref())
    }
}

/// Storage errors surface as query errors (500), not as SQL errors.
pub(crate) fn storage(error: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::External(format!("reading the partition store: {error}").into())
}

pub(crate) struct Provider {
    table: Arc<dyn SysTable>,
    schema: SchemaRef,
    worker: WorkerSlot,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("table", &self.table).finish()
    }
}

impl Provider {
    pub(crate) fn new(table: Arc<dyn SysTable>, worker: WorkerSlot) -> Self {
        Self {
            schema: table.schema(),
            table,
            worker,
        }
    }
}

#[async_trait]
impl TableProvider for Provider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // Used to narrow the read; DataFusion applies every filter again on what was read.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(worker) = self.worker.get().cloned() else {
            return Err(DataFusionError::External(
                "this node runs no worker, so it has no partitions to query; ask a node with the worker role".into(),
            ));
        };
        let scan = Scan {
            pushdown: Pushdown::from_filters(filters),
            projection: projection.cloned(),
            // With inexact filters DataFusion filters what the scan returns: no early stop.
            limit: limit.filter(|_| filters.is_empty()),
        };
        let table = self.table.clone();
        let source = Source { worker };
        let batches = tokio::task::spawn_blocking(move || table.read_parallel(&source, &scan))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))??;
        let schema = match batches.first() {
            Some(batch) => batch.schema(),
            None => match projection {
                Some(projection) => Arc::new(self.schema.project(projection)?),
                None => self.schema.clone(),
            },
        };
        let partitions: Vec<Vec<RecordBatch>> = batches.into_iter().map(|batch| vec![batch]).collect();
        Ok(MemorySourceConfig::try_new_exec(&partitions, schema, None)?)
    }
}
