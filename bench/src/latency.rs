//! Latency percentiles from an HDR histogram of sampled calls.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest latency recorded exactly (longer ones are clamped to it).
const MAX_NANOS: u64 = 60_000_000_000;

/// Records call latencies in nanoseconds, two significant digits (1%
/// resolution, in about 15 KiB per recorder: one per task).
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    histogram: Histogram<u32>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        LatencyRecorder { histogram: Histogram::new_with_bounds(1, MAX_NANOS, 2).expect("valid histogram bounds") }
    }
}

impl LatencyRecorder {
    /// Records one call's latency.
    #[inline]
    pub fn record(&mut self, latency: Duration) {
        let nanos = (latency.as_nanos() as u64).clamp(1, MAX_NANOS);
        self.histogram.saturating_record(nanos);
    }

    /// Adds another recorder's samples.
    pub fn merge(&mut self, other: &LatencyRecorder) {
        self.histogram.add(&other.histogram).expect("histograms with the same bounds");
    }

    /// Percentiles of what was recorded.
    pub fn summary(&self) -> LatencySummary {
        let h = &self.histogram;
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
        LatencySummary {
            samples: h.len(),
            p50_us: us(0.50),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: h.max() as f64 / 1_000.0,
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Calls timed (every call, or one in N: see the run's `latency_sample`).
    pub samples: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Slowest call timed.
    pub max_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_samples() {
        let mut a = LatencyRecorder::default();
        let mut b = LatencyRecorder::default();
        for us in 1..=1000 {
            a.record(Duration::from_micros(us));
        }
        b.record(Duration::from_secs(1));
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.samples, 1001);
        assert!((s.p50_us - 500.0).abs() < 6.0, "{s:?}");
        assert!((s.max_us - 1_000_000.0).abs() < 10_000.0, "{s:?}");
    }
}
