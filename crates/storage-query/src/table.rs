//! One DataFusion table over the partitions of this node. A scan streams: it reads the rows
//! the filters allow (see [`Pushdown`]) a bounded chunk at a time, off the async runtime, and
//! hands each chunk on before it reads the next, so no table is ever held in memory whole.
//! DataFusion then filters, joins and sorts (within its memory pool).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, SendableRecordBatchStream,
};
use restate_metadata_store::SchemaCache;
use restate_partition_api::{PartitionReader, Partitions, ReadablePartition};

/// One partition replica of this node, as tables read it.
pub(crate) type Reader = Arc<dyn PartitionReader>;

use crate::pushdown::Pushdown;

/// Rows a chunk of a scan holds at most (a table may stop a little after it, at the end of
/// one invocation's journal).
pub(crate) const CHUNK_ROWS: usize = 4096;

/// Slices a full scan is split into; DataFusion reads them in parallel (the node's CPUs are
/// shared with the partition processors, so not more).
const SCAN_SLICES: usize = 2;

/// What a table is made of: its columns and how to read its rows, chunk by chunk.
pub(crate) trait SysTable: Debug + Send + Sync + 'static {
    fn schema(&self) -> SchemaRef;

    /// The partitions a scan reads (all, or those the filters allow).
    fn partitions(&self, source: &Source, scan: &Scan) -> Vec<Reader> {
        source.partitions_filtered(&scan.pushdown)
    }

    /// How many slices a scan can be split into: lookups by id read in one.
    fn slices(&self, scan: &Scan) -> usize {
        match scan.pushdown.values("id") {
            Some(_) => 1,
            None => SCAN_SLICES,
        }
    }

    /// Reads the next chunk of the slice `cursor` stands in, restricted by the pushdown where
    /// the table can use it, building only the projection's columns; `None` once the slice is
    /// read. Blocking.
    fn read_chunk(&self, source: &Source, scan: &Scan, cursor: &mut Cursor) -> Result<Option<RecordBatch>>;
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
}

/// Where one slice of a scan stands.
pub(crate) struct Cursor {
    /// The partitions still to read, the current one first.
    pub partitions: VecDeque<Reader>,
    /// The raw store key in the current partition after which reading continues.
    pub after: Option<Vec<u8>>,
    /// Set by tables that read everything in one chunk (lookups, the schema registry).
    pub done: bool,
}

impl Cursor {
    /// Moves on to the next partition, or to `after` in the current one.
    pub(crate) fn advance(&mut self, more: Option<Vec<u8>>) {
        match more {
            Some(after) => self.after = Some(after),
            None => {
                self.partitions.pop_front();
                self.after = None;
            }
        }
    }
}

/// Where tables read from: a replica of every partition (this node's, or another node's over
/// the fabric), and this node's copy of the schema registry.
#[derive(Clone)]
pub(crate) struct Source {
    pub partitions: Arc<Vec<ReadablePartition>>,
    pub schema: SchemaCache,
}

impl Source {
    /// The partitions owning these partition keys, or all of them.
    pub(crate) fn partitions(&self, keys: Option<&[u64]>) -> Vec<Reader> {
        self.partitions
            .iter()
            .filter(|partition| keys.is_none_or(|keys| keys.iter().any(|k| partition.keys.contains(k))))
            .map(|partition| partition.reader.clone())
            .collect()
    }

    /// The partitions a `partition_key = …` / `IN (…)` filter allows (all without one).
    pub(crate) fn partitions_filtered(&self, pushdown: &Pushdown) -> Vec<Reader> {
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
    partitions: Partitions,
    registry: SchemaCache,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("table", &self.table).finish()
    }
}

impl Provider {
    pub(crate) fn new(table: Arc<dyn SysTable>, partitions: Partitions, schema: SchemaCache) -> Self {
        Self {
            schema: table.schema(),
            table,
            partitions,
            registry: schema,
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
        let readers = self.partitions.readers().await.map_err(|error| {
            DataFusionError::External(format!("cannot find the partitions to read: {error}").into())
        })?;
        if readers.is_empty() {
            return Err(DataFusionError::External(
                "this node runs no partition replicas (yet), so it has none to query; ask a node with the worker role"
                    .into(),
            ));
        }
        let scan = Scan {
            pushdown: Pushdown::from_filters(filters),
            projection: projection.cloned(),
            // With inexact filters DataFusion filters what the scan returns: no early stop.
            limit: limit.filter(|_| filters.is_empty()),
        };
        let source = Source {
            partitions: Arc::new(readers),
            schema: self.registry.clone(),
        };
        let partitions = self.table.partitions(&source, &scan);
        let slices = self.table.slices(&scan).clamp(1, partitions.len().max(1));
        let mut split: Vec<VecDeque<Reader>> = vec![VecDeque::new(); slices];
        for (i, partition) in partitions.into_iter().enumerate() {
            split[i % slices].push_back(partition);
        }
        let schema = match projection {
            Some(projection) => Arc::new(self.schema.project(projection)?),
            None => self.schema.clone(),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(slices),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Arc::new(ScanExec {
            table: self.table.clone(),
            source,
            scan: Arc::new(scan),
            slices: split,
            schema,
            properties: Arc::new(properties),
        }))
    }
}

/// The physical scan of a table: one output partition per slice, each a stream of chunks.
struct ScanExec {
    table: Arc<dyn SysTable>,
    source: Source,
    scan: Arc<Scan>,
    slices: Vec<VecDeque<Reader>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl Debug for ScanExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanExec").field("table", &self.table).finish()
    }
}

impl DisplayAs for ScanExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScanExec: {:?}, {} slices", self.table, self.slices.len())
    }
}

impl ExecutionPlan for ScanExec {
    fn name(&self) -> &'static str {
        "ScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(&self, slice: usize, _context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let partitions = self
            .slices
            .get(slice)
            .cloned()
            .ok_or_else(|| DataFusionError::Internal(format!("ScanExec has no slice {slice}")))?;
        let state = SliceState {
            table: self.table.clone(),
            source: self.source.clone(),
            scan: self.scan.clone(),
            cursor: Cursor {
                partitions,
                after: None,
                done: false,
            },
            emitted: 0,
        };
        let chunks = futures::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            if state.cursor.done || state.scan.limit.is_some_and(|limit| state.emitted >= limit) {
                return None;
            }
            let read = tokio::task::spawn_blocking(move || {
                let chunk = state.table.read_chunk(&state.source, &state.scan, &mut state.cursor);
                (chunk, state)
            })
            .await;
            match read {
                Ok((Ok(Some(batch)), mut state)) => {
                    state.emitted += batch.num_rows();
                    Some((Ok(batch), Some(state)))
                }
                Ok((Ok(None), _)) => None,
                Ok((Err(error), _)) => Some((Err(error), None)),
                Err(error) => Some((Err(DataFusionError::External(Box::new(error))), None)),
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), chunks)))
    }
}

/// One slice of a scan as its stream moves through it.
struct SliceState {
    table: Arc<dyn SysTable>,
    source: Source,
    scan: Arc<Scan>,
    cursor: Cursor,
    emitted: usize,
}
