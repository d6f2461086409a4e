//! Filters the tables use to read less: `column = 'x'` and `column IN ('x', ...)` on key
//! columns (`id`, `service_name`, `service_key`, ...) turn full scans into key lookups or
//! key-range scans. DataFusion still applies every filter afterwards, so reading more than the
//! filter selects is always correct.

use std::collections::HashMap;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

/// For each column, the only values a row may have (from equalities and `IN` lists).
#[derive(Debug, Default, Clone)]
pub(crate) struct Pushdown {
    values: HashMap<String, Vec<String>>,
    /// For each column, values a row may not have (from `column != 'x'`).
    excluded: HashMap<String, Vec<String>>,
}

impl Pushdown {
    pub(crate) fn from_filters(filters: &[Expr]) -> Self {
        let mut pushdown = Self::default();
        for filter in filters {
            pushdown.add(filter);
        }
        pushdown
    }

    fn add(&mut self, expr: &Expr) {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
                Operator::And => {
                    self.add(left);
                    self.add(right);
                }
                Operator::Eq => {
                    let (column, value) = match (column_of(left), literal_of(right)) {
                        (Some(column), Some(value)) => (column, value),
                        _ => match (column_of(right), literal_of(left)) {
                            (Some(column), Some(value)) => (column, value),
                            _ => return,
                        },
                    };
                    self.restrict(column, vec![value]);
                }
                Operator::NotEq => {
                    let (column, value) = match (column_of(left), literal_of(right)) {
                        (Some(column), Some(value)) => (column, value),
                        _ => match (column_of(right), literal_of(left)) {
                            (Some(column), Some(value)) => (column, value),
                            _ => return,
                        },
                    };
                    self.excluded.entry(column).or_default().push(value);
                }
                _ => {}
            },
            Expr::InList(list) if !list.negated => {
                let Some(column) = column_of(&list.expr) else {
                    return;
                };
                let values: Option<Vec<String>> = list.list.iter().map(literal_of).collect();
                if let Some(values) = values {
                    self.restrict(column, values);
                }
            }
            _ => {}
        }
    }

    /// Two restrictions of one column: only values in both remain.
    fn restrict(&mut self, column: String, values: Vec<String>) {
        match self.values.get_mut(&column) {
            Some(existing) => existing.retain(|v| values.contains(v)),
            None => {
                self.values.insert(column, values);
            }
        }
    }

    /// The values `column` is restricted to, if the filters restrict it.
    pub(crate) fn values(&self, column: &str) -> Option<&[String]> {
        self.values.get(column).map(Vec::as_slice)
    }

    /// Whether the filters rule out rows whose `column` is `value`.
    pub(crate) fn excludes(&self, column: &str, value: &str) -> bool {
        self.excluded
            .get(column)
            .is_some_and(|values| values.iter().any(|v| v == value))
    }

    /// The single value `column` is restricted to.
    pub(crate) fn single(&self, column: &str) -> Option<&str> {
        match self.values(column) {
            Some([value]) => Some(value),
            _ => None,
        }
    }
}

fn column_of(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Column(column) => Some(column.name.clone()),
        Expr::Cast(cast) => column_of(&cast.expr),
        _ => None,
    }
}

fn literal_of(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Literal(ScalarValue::UInt64(Some(value)), _) => Some(value.to_string()),
        Expr::Literal(ScalarValue::Int64(Some(value)), _) => Some(value.to_string()),
        Expr::Literal(ScalarValue::Utf8(Some(value)) | ScalarValue::Utf8View(Some(value)), _) => Some(value.clone()),
        Expr::Literal(ScalarValue::LargeUtf8(Some(value)), _) => Some(value.clone()),
        Expr::Cast(cast) => literal_of(&cast.expr),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{col, in_list, lit};

    use super::*;

    #[test]
    fn equalities_and_in_lists_restrict_columns() {
        let filters = vec![
            col("service_name")
                .eq(lit("counter"))
                .and(lit("b").eq(col("service_key"))),
            in_list(col("id"), vec![lit("inv_1"), lit("inv_2")], false),
            in_list(col("id"), vec![lit("inv_2"), lit("inv_3")], false),
            col("status").not_eq(lit("completed")),
        ];
        let pushdown = Pushdown::from_filters(&filters);
        assert_eq!(pushdown.single("service_name"), Some("counter"));
        assert_eq!(pushdown.single("service_key"), Some("b"));
        assert_eq!(pushdown.values("id"), Some(&["inv_2".to_owned()][..]));
        assert_eq!(pushdown.values("status"), None, "inequalities restrict no value");
        assert!(pushdown.excludes("status", "completed"));
        assert!(!pushdown.excludes("status", "running"));
    }

    #[test]
    fn negated_lists_and_disjunctions_read_everything() {
        let filters = vec![
            in_list(col("id"), vec![lit("inv_1")], true),
            col("id").eq(lit("a")).or(col("id").eq(lit("b"))),
        ];
        assert_eq!(Pushdown::from_filters(&filters).values("id"), None);
    }
}
