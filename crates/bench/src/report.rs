//! Latency recording and the table + JSON report.

use std::time::Duration;

use comfy_table::{Table, presets};
use hdrhistogram::Histogram;

/// Latencies of one operation kind, in microseconds.
pub(crate) struct Latencies {
    pub(crate) name: &'static str,
    histogram: Histogram<u64>,
    pub(crate) errors: u64,
}

impl Latencies {
    pub(crate) fn new(name: &'static str) -> anyhow::Result<Self> {
        Ok(Self {
            name,
            // 1 µs .. 60 s with 3 significant digits.
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            errors: 0,
        })
    }

    pub(crate) fn record(&mut self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, 60_000_000);
        let _ = self.histogram.record(micros);
    }

    pub(crate) fn merge(&mut self, other: &Latencies) {
        let _ = self.histogram.add(&other.histogram);
        self.errors += other.errors;
    }

    pub(crate) fn count(&self) -> u64 {
        self.histogram.len()
    }

    fn percentile_ms(&self, quantile: f64) -> f64 {
        self.histogram.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// Calls per latency band, bands doubling from 0.25 ms (the last one open-ended): a stall
    /// of fixed length (a timer, a delayed ACK) shows as a second mode far from the first.
    pub(crate) fn bands(&self) -> Vec<(String, u64)> {
        const EDGES_US: [u64; 10] = [250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000];
        let mut bands = Vec::with_capacity(EDGES_US.len() + 1);
        let mut low = 0;
        for high in EDGES_US {
            let count = self.histogram.count_between(low, high.saturating_sub(1));
            bands.push((format!("{}–{} ms", low as f64 / 1000.0, high as f64 / 1000.0), count));
            low = high;
        }
        let rest = self.histogram.count_between(low, u64::MAX);
        bands.push((format!("≥ {} ms", low as f64 / 1000.0), rest));
        bands
    }
}

/// The bands of [`Latencies::bands`] as lines with a bar each (empty bands at the ends left out).
pub(crate) fn print_bands(latencies: &Latencies) {
    let bands = latencies.bands();
    let total = latencies.count().max(1);
    let first = bands.iter().position(|(_, n)| *n > 0).unwrap_or(0);
    let last = bands.iter().rposition(|(_, n)| *n > 0).unwrap_or(0);
    println!("latency histogram ({}):", latencies.name);
    for (label, count) in &bands[first..=last.max(first)] {
        let share = *count as f64 / total as f64;
        let bar = "#".repeat((share * 50.0).ceil() as usize);
        println!("  {label:>14} {count:>8} {:>6.2}% {bar}", share * 100.0);
    }
}

/// Prints the table and then one JSON line with the same figures.
pub(crate) fn print(target: &str, clients: usize, elapsed: Duration, kinds: &[&Latencies]) {
    print_with(target, clients, elapsed, kinds, serde_json::Map::new());
}

/// Like [`print`], with `extra` fields added to the JSON line.
pub(crate) fn print_with(
    target: &str,
    clients: usize,
    elapsed: Duration,
    kinds: &[&Latencies],
    extra: serde_json::Map<String, serde_json::Value>,
) {
    let mut table = Table::new();
    table
        .load_preset(presets::ASCII_MARKDOWN)
        .set_header(vec!["op", "count", "ops/s", "p50 ms", "p99 ms", "p999 ms", "errors"]);
    let mut json_ops = serde_json::Map::new();
    let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
    let mut total = 0;
    for kind in kinds {
        total += kind.count();
        let rate = kind.count() as f64 / seconds;
        table.add_row(vec![
            kind.name.to_owned(),
            kind.count().to_string(),
            format!("{rate:.0}"),
            format!("{:.2}", kind.percentile_ms(0.50)),
            format!("{:.2}", kind.percentile_ms(0.99)),
            format!("{:.2}", kind.percentile_ms(0.999)),
            kind.errors.to_string(),
        ]);
        json_ops.insert(
            kind.name.to_owned(),
            serde_json::json!({
                "count": kind.count(),
                "ops_per_sec": (rate * 10.0).round() / 10.0,
                "p50_ms": kind.percentile_ms(0.50),
                "p99_ms": kind.percentile_ms(0.99),
                "p999_ms": kind.percentile_ms(0.999),
                "errors": kind.errors,
            }),
        );
    }
    println!("{target}: {clients} clients, {:.1}s", seconds);
    println!("{table}");
    let mut summary = serde_json::json!({
        "target": target,
        "clients": clients,
        "seconds": (seconds * 100.0).round() / 100.0,
        "ops_per_sec": ((total as f64 / seconds) * 10.0).round() / 10.0,
        "ops": json_ops,
    });
    if let serde_json::Value::Object(fields) = &mut summary {
        fields.extend(extra);
    }
    println!("{summary}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_shows_as_a_second_mode_in_the_bands() {
        let mut latencies = Latencies::new("invoke").unwrap();
        for _ in 0..98 {
            latencies.record(Duration::from_micros(1_300));
        }
        latencies.record(Duration::from_millis(45));
        latencies.record(Duration::from_millis(47));
        let bands: std::collections::BTreeMap<String, u64> = latencies.bands().into_iter().collect();
        assert_eq!(bands["1–2 ms"], 98);
        assert_eq!(bands["32–64 ms"], 2);
        assert_eq!(bands.values().sum::<u64>(), 100);
    }
}
