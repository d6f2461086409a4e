//! Builds a record batch row by row: each row appends one value per column, in schema order.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, DurationMillisecondBuilder, LargeBinaryBuilder, ListBuilder, StringBuilder,
    TimestampMillisecondBuilder, UInt32Builder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
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
    /// The column the next value goes to.
    cursor: usize,
}

impl Rows {
    pub(crate) fn new(schema: SchemaRef) -> Self {
        let columns = schema
            .fields()
            .iter()
            .map(|field| match field.data_type() {
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
            cursor: 0,
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
            _ => unreachable!("column type mismatch: expected a string column"),
        }
        self
    }

    pub(crate) fn u64(&mut self, value: Option<u64>) -> &mut Self {
        match self.next() {
            Column::U64(b) => b.append_option(value),
            _ => unreachable!("column type mismatch: expected a UInt64 column"),
        }
        self
    }

    pub(crate) fn u32(&mut self, value: Option<u32>) -> &mut Self {
        match self.next() {
            Column::U32(b) => b.append_option(value),
            _ => unreachable!("column type mismatch: expected a UInt32 column"),
        }
        self
    }

    pub(crate) fn bool(&mut self, value: Option<bool>) -> &mut Self {
        match self.next() {
            Column::Bool(b) => b.append_option(value),
            _ => unreachable!("column type mismatch: expected a boolean column"),
        }
        self
    }

    /// Milliseconds since the Unix epoch.
    pub(crate) fn timestamp(&mut self, value: Option<u64>) -> &mut Self {
        match self.next() {
            Column::Timestamp(b) => b.append_option(value.and_then(|v| i64::try_from(v).ok())),
            _ => unreachable!("column type mismatch: expected a timestamp column"),
        }
        self
    }

    /// Milliseconds.
    pub(crate) fn duration(&mut self, value: Option<u64>) -> &mut Self {
        match self.next() {
            Column::Duration(b) => b.append_option(value.and_then(|v| i64::try_from(v).ok())),
            _ => unreachable!("column type mismatch: expected a duration column"),
        }
        self
    }

    pub(crate) fn binary(&mut self, value: Option<&[u8]>) -> &mut Self {
        match self.next() {
            Column::Binary(b) => b.append_option(value),
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
            _ => unreachable!("column type mismatch: expected a list column"),
        }
        self
    }

    /// Ends a row: every column got exactly one value.
    pub(crate) fn end_row(&mut self) {
        debug_assert_eq!(self.cursor, self.columns.len(), "a row must fill every column");
        self.cursor = 0;
    }

    pub(crate) fn finish(self) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self
            .columns
            .into_iter()
            .map(|column| -> ArrayRef {
                match column {
                    Column::Utf8(mut b) => Arc::new(b.finish()),
                    Column::U64(mut b) => Arc::new(b.finish()),
                    Column::U32(mut b) => Arc::new(b.finish()),
                    Column::Bool(mut b) => Arc::new(b.finish()),
                    Column::Timestamp(mut b) => Arc::new(b.finish()),
                    Column::Duration(mut b) => Arc::new(b.finish()),
                    Column::Binary(mut b) => Arc::new(b.finish()),
                    Column::ListU32(mut b) => Arc::new(b.finish()),
                }
            })
            .collect();
        RecordBatch::try_new(self.schema, arrays).map_err(|e| DataFusionError::ArrowError(Box::new(e), None))
    }
}
