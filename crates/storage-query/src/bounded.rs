//! Guards on the functions that build large values from small inputs: `repeat('x', 1e10)`,
//! `lpad`/`rpad`, `array_repeat`, `range`/`generate_series` (the list functions) and
//! `replace`. Their output is not held in DataFusion's memory pool, and one call can allocate
//! more than the machine has, so each call first works out how much it would build for its
//! batch of rows, and fails (naming the limit) instead of allocating beyond it. A constant
//! counts once per row of a batch, since projections copy it into every row.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::udf_eq::UdfEq;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// How a function's output grows with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(text, n)`: text × n.
    Repeat,
    /// `lpad/rpad(text, n[, fill])`: n characters (up to 4 bytes each).
    Pad,
    /// `array_repeat(element, n)`: n elements.
    ArrayRepeat,
    /// `range/generate_series([start,] stop[, step])`: (stop − start) / step integers.
    Range,
    /// `replace(text, from, to)`: every `from` in the text becomes `to`.
    Replace,
    /// `regexp_replace(text, pattern, to)`: at worst every position matches.
    RegexpReplace,
    /// `concat(…)`, `concat_ws(…)`: the arguments joined (chained, they grow geometrically).
    Sum,
}

/// The guarded functions (the list ones exist only when DataFusion's nested functions are in).
const GUARDED: [(&str, Growth); 10] = [
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("array_repeat", Growth::ArrayRepeat),
    ("range", Growth::Range),
    ("generate_series", Growth::Range),
    ("replace", Growth::Replace),
    ("regexp_replace", Growth::RegexpReplace),
    ("concat", Growth::Sum),
    ("concat_ws", Growth::Sum),
];

/// Replaces the guarded functions of `ctx` by guarded versions: one call (one batch of rows)
/// may build at most `limit` bytes.
pub(crate) fn install(ctx: &SessionContext, limit: u64) {
    for (name, growth) in GUARDED {
        if let Ok(udf) = ctx.udf(name) {
            ctx.register_udf(ScalarUDF::new_from_impl(Bounded {
                inner: Arc::clone(udf.inner()).into(),
                growth,
                limit,
            }));
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: UdfEq<Arc<dyn ScalarUDFImpl>>,
    growth: Growth,
    limit: u64,
}

impl Bounded {
    /// Bytes the call would build, at least (saturating).
    fn estimate(&self, args: &ScalarFunctionArgs) -> u64 {
        let values = &args.args;
        let arg = |n: usize| values.get(n);
        let mut total: u64 = 0;
        for row in 0..args.number_rows.max(1) {
            let bytes = match self.growth {
                Growth::Repeat => byte_len(arg(0), row).saturating_mul(count(arg(1), row)),
                Growth::Pad => count(arg(1), row).saturating_mul(4),
                Growth::ArrayRepeat => byte_len(arg(0), row).max(8).saturating_mul(count(arg(1), row)),
                Growth::Range => {
                    let (start, stop, step) = match values.len() {
                        1 => (Some(0), int(arg(0), row), Some(1)),
                        2 => (int(arg(0), row), int(arg(1), row), Some(1)),
                        _ => (int(arg(0), row), int(arg(1), row), int(arg(2), row)),
                    };
                    match (start, stop, step) {
                        (Some(start), Some(stop), Some(step)) if step != 0 => {
                            let span = (i128::from(stop) - i128::from(start)) / i128::from(step);
                            u64::try_from(span.max(0)).unwrap_or(u64::MAX).saturating_mul(8)
                        }
                        _ => 0,
                    }
                }
                Growth::Replace => {
                    let text = byte_len(arg(0), row);
                    let from = byte_len(arg(1), row).max(1);
                    let to = byte_len(arg(2), row);
                    text.saturating_add((text / from).saturating_mul(to))
                }
                Growth::RegexpReplace => {
                    let text = byte_len(arg(0), row);
                    text.saturating_add((text + 1).saturating_mul(byte_len(arg(2), row)))
                }
                Growth::Sum => (0..values.len()).fold(0u64, |sum, n| sum.saturating_add(byte_len(arg(n), row))),
            };
            total = total.saturating_add(bytes);
        }
        total
    }
}

/// The byte length of a text or binary argument in `row` (0 for anything else).
fn byte_len(value: Option<&ColumnarValue>, row: usize) -> u64 {
    let length = match value {
        Some(ColumnarValue::Scalar(scalar)) => match scalar {
            ScalarValue::Utf8(Some(text)) | ScalarValue::LargeUtf8(Some(text)) | ScalarValue::Utf8View(Some(text)) => {
                text.len()
            }
            ScalarValue::Binary(Some(bytes))
            | ScalarValue::LargeBinary(Some(bytes))
            | ScalarValue::BinaryView(Some(bytes)) => bytes.len(),
            _ => 0,
        },
        Some(ColumnarValue::Array(array)) if row < array.len() && !array.is_null(row) => match array.data_type() {
            DataType::Utf8 => array.as_string::<i32>().value(row).len(),
            DataType::LargeUtf8 => array.as_string::<i64>().value(row).len(),
            DataType::Utf8View => array.as_string_view().value(row).len(),
            DataType::Binary => array.as_binary::<i32>().value(row).len(),
            DataType::LargeBinary => array.as_binary::<i64>().value(row).len(),
            DataType::BinaryView => array.as_binary_view().value(row).len(),
            _ => 0,
        },
        _ => 0,
    };
    length as u64
}

/// An integer argument in `row`.
fn int(value: Option<&ColumnarValue>, row: usize) -> Option<i64> {
    let scalar = match value? {
        ColumnarValue::Scalar(scalar) => scalar.clone(),
        ColumnarValue::Array(array) if row < array.len() => ScalarValue::try_from_array(array, row).ok()?,
        ColumnarValue::Array(_) => return None,
    };
    match scalar {
        ScalarValue::Int8(Some(n)) => Some(i64::from(n)),
        ScalarValue::Int16(Some(n)) => Some(i64::from(n)),
        ScalarValue::Int32(Some(n)) => Some(i64::from(n)),
        ScalarValue::Int64(Some(n)) => Some(n),
        ScalarValue::UInt8(Some(n)) => Some(i64::from(n)),
        ScalarValue::UInt16(Some(n)) => Some(i64::from(n)),
        ScalarValue::UInt32(Some(n)) => Some(i64::from(n)),
        ScalarValue::UInt64(Some(n)) => Some(i64::try_from(n).unwrap_or(i64::MAX)),
        _ => None,
    }
}

/// A count argument in `row` (negative counts build nothing).
fn count(value: Option<&ColumnarValue>, row: usize) -> u64 {
    int(value, row).map_or(0, |n| u64::try_from(n).unwrap_or(0))
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let mut bytes = self.estimate(&args);
        if args.number_rows <= 1 {
            // Evaluated once (a constant, folded while planning): the value may then be copied
            // into every row of every batch, so it counts once per row of a batch.
            bytes = bytes.saturating_mul(usize::from(args.config_options.execution.batch_size) as u64);
        }
        if bytes > self.limit {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{}() would build about {} MiB for a batch of rows, more than a quarter of \
                 `[admin.query-engine] memory-size` ({} MiB) allows in one step",
                self.name(),
                bytes >> 20,
                self.limit >> 20
            )));
        }
        self.inner.invoke_with_args(args)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}
