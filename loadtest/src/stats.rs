//! Percentiles and histograms over latency samples (milliseconds).

use serde_json::{Value, json};

/// The `q` quantile (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Sorted latency samples in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Latencies(Vec<f64>);

impl Latencies {
    pub fn new(mut values: Vec<f64>) -> Self {
        values.retain(|v| v.is_finite());
        values.sort_by(f64::total_cmp);
        Self(values)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn q(&self, q: f64) -> f64 {
        quantile(&self.0, q)
    }

    pub fn max(&self) -> f64 {
        self.0.last().copied().unwrap_or(f64::NAN)
    }

    /// `p50 … p99 … p99.9 … max`, for the table.
    pub fn summary(&self) -> String {
        if self.0.is_empty() {
            return "no samples".to_owned();
        }
        format!(
            "p50 {}  p99 {}  p99.9 {}  max {}  (n={})",
            ms(self.q(0.5)),
            ms(self.q(0.99)),
            ms(self.q(0.999)),
            ms(self.max()),
            self.0.len()
        )
    }

    pub fn to_json(&self) -> Value {
        let number = |v: f64| if v.is_finite() { json!(v) } else { Value::Null };
        json!({
            "count": self.0.len(),
            "p50": number(self.q(0.5)),
            "p90": number(self.q(0.9)),
            "p99": number(self.q(0.99)),
            "p99_9": number(self.q(0.999)),
            "max": number(self.max()),
        })
    }

    /// Counts per bucket on a log scale: 4 buckets per power of ten from 0.1 ms, the
    /// first bucket taking everything below. Returns (upper bound ms, count) pairs up to
    /// the bucket holding the maximum.
    pub fn histogram(&self) -> Vec<(f64, usize)> {
        const PER_DECADE: f64 = 4.0;
        const FLOOR_MS: f64 = 0.1;
        let Some(&max) = self.0.last() else {
            return Vec::new();
        };
        let bucket_of = |v: f64| -> usize {
            if v <= FLOOR_MS {
                0
            } else {
                ((v / FLOOR_MS).log10() * PER_DECADE).ceil() as usize
            }
        };
        let mut counts = vec![0; bucket_of(max) + 1];
        for &v in &self.0 {
            counts[bucket_of(v)] += 1;
        }
        counts
            .into_iter()
            .enumerate()
            .map(|(i, n)| (FLOOR_MS * 10f64.powf(i as f64 / PER_DECADE), n))
            .collect()
    }
}

/// Milliseconds for people: one decimal below 100, none above.
pub fn ms(value: f64) -> String {
    if !value.is_finite() {
        "-".to_owned()
    } else if value < 100.0 {
        format!("{value:.1} ms")
    } else {
        format!("{value:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), 50.0);
        assert_eq!(quantile(&values, 0.99), 99.0);
        assert_eq!(quantile(&values, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.999), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn latencies_sort_and_drop_non_finite_values() {
        let latencies = Latencies::new(vec![3.0, f64::NAN, 1.0, 2.0, f64::INFINITY]);
        assert_eq!(latencies.len(), 3);
        assert_eq!(latencies.q(0.5), 2.0);
        assert_eq!(latencies.max(), 3.0);
        assert_eq!(latencies.to_json()["p99"], json!(3.0));
        assert_eq!(Latencies::default().to_json()["p50"], Value::Null);
    }

    #[test]
    fn the_histogram_counts_every_sample_once_in_log_buckets() {
        let latencies = Latencies::new(vec![0.05, 0.1, 0.5, 1.0, 1.5, 10.0, 250.0]);
        let histogram = latencies.histogram();
        assert_eq!(histogram.iter().map(|(_, n)| n).sum::<usize>(), 7);
        // 0.05 and 0.1 fall in the first bucket (≤ 0.1 ms).
        assert_eq!(histogram[0], (0.1, 2));
        let bound_of = |v: f64| {
            histogram
                .iter()
                .find(|(bound, _)| v <= *bound * (1.0 + 1e-9))
                .map(|(bound, _)| *bound)
        };
        // 1.5 ms lies in (1.0, 1.78]: the bucket above 1 ms.
        let above_one = bound_of(1.5).expect("a bucket");
        assert!(above_one > 1.0 && above_one < 2.0, "{above_one}");
        // The last bucket holds the maximum.
        let (last, count) = histogram.last().copied().expect("buckets");
        assert!(last >= 250.0 && count == 1, "{last} {count}");
    }
}
