//! Builds a record batch row by row: each row appends one value per column, in schema order.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, DurationMillisecondBuilder, LargeBinaryBuilder, ListBuilder, StringBuilder,
    TimestampMillisecondBuilder, UInt32Builder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::error::{DataFusionError, Result};

/// The time zone every timestamp column carries (values are ms since the epoch, UTC).
pub(crate) const UTC: &str = "+00:00";

pub(crate) fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some(UTC.into()))
}

pub(crate) fn duration() -> DataType {
    DataType::Duration(TimeUnit::Millisecond)
}

pub(crate) fn list_u32() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::UInt32, true)))
}

/// A schema of nullable columns.
pub(crate) fn schema(columns: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, ty)| Field::new(*name, ty.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

enum Column {
    /// Not in the query's projection: values are dropped unbuilt.
    Skip,
    Utf8(StringBuilder),
    U64(UInt64Builder),
    U32(UInt32Builder),
    Bool(BooleanBuilder),
    Timestamp(TimestampMillisecondBuilder),
    Duration(DurationMillisecondBuilder),
    Binary(LargeBinaryBuilder),
    ListU32(ListBuilder<UInt32Builder>),
}

pub(crate) struct Rows {
    schema: SchemaRef,
    columns: Vec<Column>,
    /// The columns of the batch, by index into the schema (the query's projection).
    projection: Vec<usize>,
    /// The column the next value goes to.
    cursor: usize,
    rows: usize,
}

impl Rows {
    /// Rows of `schema`; only the `projection`'s columns (all without one) are built.
    pub(crate) fn new(schema: SchemaRef, projection: Option<&[usize]>) -> Self {
        let projection: Vec<usize> = match projection {
            Some(projection) => projection.to_vec(),
            None => (0..schema.fields().len()).collect(),
        };
        let columns = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(index, field)| match field.data_type() {
                _ if !projection.contains(&index) => Column::Skip,
                DataType::UInt64 => Column::U64(UInt64Builder::new()),
                DataType::UInt32 => Column::U32(UInt32Builder::new()),
                DataType::Boolean => Column::Bool(BooleanBuilder::new()),
                DataType::Timestamp(..) => Column::Timestamp(TimestampMillisecondBuilder::new().with_timezone(UTC)),
                DataType::Duration(_) => Column::Duration(DurationMillisecondBuilder::new()),
                DataType::LargeBinary => Column::Binary(LargeBinaryBuilder::new()),
                DataType::List(_) => Column::ListU32(ListBuilder::new(UInt32Builder::new())),
                _ => Column::Utf8(StringBuilder::new()),
            })
            .collect();
        Self {
            schema,
            columns,
            projection,
            cursor: 0,
            rows: 0,
        }
    }

    /// Rows ended so far.
    pub(crate) fn len(&self) -> usize {
        self.rows
    }

    /// Whether the next value is built (costly values are computed only then).
    pub(crate) fn wants_next(&self) -> bool {
        !matches!(self.columns[self.cursor], Column::Skip)
    }

    /// A string computed only when its column is built.
    pub(crate) fn str_with(&mut self, value: impl FnOnce() -> Option<String>) -> &mut Self {
        if self.wants_next() {
            let value = value();
            self.str(value.as_deref())
        } else {
            self.cursor += 1;
            self
        }
    }

    fn next(&mut self) -> &mut Column {
        let column = &mut self.columns[self.cursor];
        self.cursor += 1;
        column
    }

    pub(crate) fn str(&mut self, value: Option<&str>) -> &mut Self {
        match self.next() {
            Column::Utf8(b) => b.append_option(value),
            Column::Skip => {}
            _ => unreachable!("column type mismatch: expected a string column"),
        }
        self
    }

    pub(crate) fn u64(&mut self, value: Option<u64>) -> &mut Self {
        match self.next() {
            Column::U64(b) => b.append_option(value),
            Column::Skip => {}
            _ => unreachable!("column type mismatch: expected a UInt64 column"),
        }
        self
    }

    pub(crate) fn u32(&mut self, value: Option<u32>) -> &mut Self {
        match self.next() {
            Column::U32(b) => b.append_option(value),
            Column::Skip => {}
            _ => unreachable!("column type mismatch: expected a UInt32 column"),
        }
        self
    }

    pub(crate) fn bool(&mut self, value: Option<bool>) -> &mut Self {
        match self.next() {
            Column::Bool(b) => b.append_option(value),
            Column::Skip => {}
            _ => unreachable!("column type mismatch: expected a boolean column"),
        }
        self
    }

    /// Milliseconds since the Unix epoch.
    pub(crate) fn timestamp(&mut self, value: Option<u64>) -> &mut Self {
        match self.next() {
            Column::Timestamp(b) => b.append_option(value.and_then(|v| i64::try_from(v).ok())),
            Column::Skip => {}
            _ => unreachable!("column type mismatch: expected a timestamp column"),
        }
        self
    }

    /// Milliseconds.
    pub(crate) fn duration(&mut self, value: Option<u64>) -> &mut Self {
        match self.next() {
            Column::Duration(b) => b.append_option(value.and_then(|v| i64::try_from(v).ok())),
            Column::Skip => {}
            _ => unreachable!("column type mismatch: expected a duration column"),
        }
        self
    }

    pub(crate) fn binary(&mut self, value: Option<&[u8]>) -> &mut Self {
        match self.next() {
            Column::Binary(b) => b.append_option(value),
            Column::Skip => {}
            _ => unreachable!("column type mismatch: expected a binary column"),
        }
        self
    }

    pub(crate) fn list_u32(&mut self, value: Option<&[u32]>) -> &mut Self {
        match self.next() {
            Column::ListU32(b) => match value {
                Some(values) => {
                    b.values().append_slice(values);
                    b.append(true);
                }
                None => b.append(false),
            },
            Column::Skip => {}
            _ => unreachable!("column type mismatch: expected a list column"),
        }
        self
    }

    /// Ends a row: every column got exactly one value.
    pub(crate) fn end_row(&mut self) {
        debug_assert_eq!(self.cursor, self.columns.len(), "a row must fill every column");
        self.cursor = 0;
        self.rows += 1;
    }

    /// The batch of the projected columns, in the projection's order.
    pub(crate) fn finish(self) -> Result<RecordBatch> {
        let schema = Arc::new(
            self.schema
                .project(&self.projection)
                .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))?,
        );
        let mut built: Vec<Option<ArrayRef>> = self
            .columns
            .into_iter()
            .map(|column| -> Option<ArrayRef> {
                Some(match column {
                    Column::Skip => return None,
                    Column::Utf8(mut b) => Arc::new(b.finish()),
                    Column::U64(mut b) => Arc::new(b.finish()),
                    Column::U32(mut b) => Arc::new(b.finish()),
                    Column::Bool(mut b) => Arc::new(b.finish()),
                    Column::Timestamp(mut b) => Arc::new(b.finish()),
                    Column::Duration(mut b) => Arc::new(b.finish()),
                    Column::Binary(mut b) => Arc::new(b.finish()),
                    Column::ListU32(mut b) => Arc::new(b.finish()),
                })
            })
            .collect();
        let arrays: Vec<ArrayRef> = self
            .projection
            .iter()
            .filter_map(|index| built.get_mut(*index).and_then(Option::take))
            .collect();
        // A projection without columns (`count(*)`) still has rows.
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        RecordBatch::try_new_with_options(schema, arrays, &options)
            .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, StringArray, UInt64Array};

    use super::*;

    fn two_rows(projection: Option<&[usize]>) -> RecordBatch {
        let schema = schema(&[("a", DataType::Utf8), ("b", DataType::UInt64), ("c", DataType::Boolean)]);
        let mut rows = Rows::new(schema, projection);
        let mut computed = 0;
        for i in 0..2u64 {
            rows.str_with(|| {
                computed += 1;
                Some(format!("row {i}"))
            })
            .u64(Some(i))
            .bool(None)
            .end_row();
        }
        assert_eq!(
            computed,
            if projection.is_some_and(|p| !p.contains(&0)) {
                0
            } else {
                2
            }
        );
        rows.finish().unwrap()
    }

    #[test]
    fn only_projected_columns_are_built_in_projection_order() {
        let batch = two_rows(Some(&[1, 0]));
        assert_eq!(batch.schema().field(0).name(), "b");
        let b = batch.column(0).as_any().downcast_ref::<UInt64Array>().unwrap();
        let a = batch.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!((b.value(1), a.value(1)), (1, "row 1"));
    }

    #[test]
    fn an_empty_projection_keeps_the_row_count() {
        let batch = two_rows(Some(&[]));
        assert_eq!((batch.num_columns(), batch.num_rows()), (0, 2));
        let all = two_rows(None);
        assert_eq!((all.num_columns(), all.num_rows()), (3, 2));
        assert!(all.column(2).is_null(0));
    }
}
