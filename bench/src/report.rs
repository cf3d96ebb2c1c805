//! What a load run reports: a table for people, JSON for scripts. Every
//! throughput or request figure of the library is also given as a ratio to
//! a baseline measured in the same run.

use std::fmt::Write as _;

use serde::Serialize;

use crate::counting_store::StoreCounts;
use crate::driver::LoadOutcome;
use crate::latency::LatencySummary;
use crate::machine::Machine;
use crate::server_work::ServerWork;

/// The settings of a run, echoed in its report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSettings {
    /// Cache URL (with the key prefix the run added, if any).
    pub cache: String,
    /// Store URL.
    pub store: String,
    /// Whether increments were combined in-process before reaching the cache.
    pub combining: bool,
    /// Concurrent tasks incrementing.
    pub tasks: usize,
    /// Tokio worker threads.
    pub workers: usize,
    /// Distinct keys.
    pub keys: usize,
    /// How keys were chosen (`uniform`, `zipf:S`).
    pub distribution: String,
    /// Deltas and weights.
    pub deltas: String,
    /// Duration asked for, seconds (0: until `increments`).
    pub duration_s: f64,
    /// Increments asked for, if bounded by count.
    pub increments: Option<u64>,
    /// The write-behind policy's interval, seconds.
    pub interval_s: f64,
    /// The policy's threshold, if any.
    pub threshold: Option<u64>,
    /// One call in this many was timed.
    pub latency_sample: u32,
}

/// How far the store lagged behind the increments during the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PendingLag {
    /// Most cells pending at any reading (readings every 100 ms, of the
    /// gauges as of the flusher's last pass).
    pub max_cells: u64,
    /// Oldest pending delta at any reading, milliseconds (readings every
    /// 100 ms of the cache's own statistics: live, not as of a pass).
    pub max_age_ms: u64,
    /// Median over the readings of the oldest pending delta's age, ms.
    pub age_p50_ms: u64,
    /// 99th percentile over the readings of that age, ms.
    pub age_p99_ms: u64,
    /// Cells the engine found past their age bound (plus two ticks) during
    /// the load (its `age_bound_exceeded` metric).
    pub late_cells: u64,
    /// Cells flushed while the load ran.
    pub load_cells_flushed: u64,
    /// Flush passes while the load ran.
    pub load_flush_passes: u64,
    /// Time those passes took (the flusher busy), seconds.
    pub load_flush_busy_s: f64,
    /// Cells pending when the load stopped.
    pub cells_at_end: u64,
    /// Time `shutdown` took to drain what was pending, seconds.
    pub drain_s: f64,
    /// Cells the drain flushed.
    pub drain_cells: u64,
    /// Why the drain failed, if it did.
    pub drain_error: Option<String>,
}

impl PendingLag {
    /// The age readings' maximum, median and 99th percentile.
    pub fn set_ages(&mut self, mut ages: Vec<u64>) {
        ages.sort_unstable();
        let at = |q: f64| ages.get(((ages.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0);
        self.max_age_ms = ages.last().copied().unwrap_or(0);
        self.age_p50_ms = at(0.5);
        self.age_p99_ms = at(0.99);
    }

    /// Cells flushed per second of flusher busy time during the load: the
    /// flush rate while flushing (the load shares the CPU with it).
    pub fn load_flush_rows_per_busy_s(&self) -> Option<f64> {
        (self.load_cells_flushed > 0 && self.load_flush_busy_s > 0.0)
            .then(|| self.load_cells_flushed as f64 / self.load_flush_busy_s)
    }

    /// Cells the drain flushed per second.
    pub fn drain_rows_per_s(&self) -> Option<f64> {
        (self.drain_cells >= 1_000 && self.drain_s > 0.0).then(|| self.drain_cells as f64 / self.drain_s)
    }
}

/// Store reads made before the measurement to load the keys into the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Warmup {
    /// How long the warm-up took, seconds.
    pub seconds: f64,
    /// The store calls it made.
    pub store: StoreCounts,
}

/// One measured phase: the library or a baseline.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Phase {
    /// What was measured.
    pub name: String,
    /// Successful increments.
    pub increments: u64,
    /// Failed increments.
    pub errors: u64,
    /// The first failure, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Seconds the load ran.
    pub elapsed_s: f64,
    /// Successful increments per second.
    pub ops_per_sec: f64,
    /// Latency of one call (or, where the name says so, of one pipeline).
    pub latency: LatencySummary,
    /// Store calls during the load and the drain after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreCounts>,
    /// Store requests per successful increment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_increment: Option<f64>,
    /// Counter rows written to the store per successful increment (write
    /// amplification; below 1 when writes are coalesced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_amplification: Option<f64>,
    /// Peak resident memory of the process during the phase, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    /// Resident memory when the phase started (the harness, its key
    /// sequences and what earlier phases left), bytes: the phase's own
    /// growth is the peak minus this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_before_bytes: Option<u64>,
    /// Pending lag (library only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingLag>,
    /// The warm-up before the load (library only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup: Option<Warmup>,
    /// Rows per second, for a baseline that writes rows (the store's batch apply).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_per_sec: Option<f64>,
    /// What the cache server did, by its own accounting (Redis `INFO
    /// commandstats`, memcached `stats`), flushes included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerWork>,
    /// CPU microseconds this process (the client side: the load tasks, the
    /// library and its background work) used per successful increment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cpu_usec_per_increment: Option<f64>,
}

impl Phase {
    /// A phase named `name` from what the load loop measured.
    pub fn from_load(name: impl Into<String>, outcome: &LoadOutcome) -> Phase {
        Phase {
            name: name.into(),
            increments: outcome.increments,
            errors: outcome.errors,
            first_error: outcome.first_error.clone(),
            elapsed_s: outcome.elapsed.as_secs_f64(),
            ops_per_sec: outcome.ops_per_sec(),
            latency: outcome.latency,
            client_cpu_usec_per_increment: outcome
                .client_cpu
                .map(|cpu| cpu.as_secs_f64() * 1e6 / outcome.increments.max(1) as f64),
            ..Phase::default()
        }
    }

    /// Adds the store calls of the phase and the figures derived from them.
    pub fn with_store(mut self, counts: StoreCounts) -> Phase {
        let per = |n: u64| n as f64 / self.increments.max(1) as f64;
        self.requests_per_increment = Some(per(counts.requests()));
        self.write_amplification = Some(per(counts.counter_writes));
        self.store = Some(counts);
        self
    }
}

/// A library figure divided by a baseline figure of the same run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratio {
    /// What is compared.
    pub name: String,
    /// The ratio (higher is better for the library).
    pub value: f64,
    /// The library's figure.
    pub library: f64,
    /// The baseline's figure.
    pub baseline: f64,
}

impl Ratio {
    /// `library / baseline` throughput, named after the baseline.
    pub fn throughput(library: &Phase, baseline: &Phase) -> Ratio {
        Ratio {
            name: format!("ops/s: library / {}", baseline.name),
            value: library.ops_per_sec / baseline.ops_per_sec.max(1e-9),
            library: library.ops_per_sec,
            baseline: baseline.ops_per_sec,
        }
    }
}

/// The report of one `counters-load run`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    /// The machine and its load.
    pub machine: Machine,
    /// The settings.
    pub settings: RunSettings,
    /// The library's phase.
    pub library: Phase,
    /// The baselines, measured in the same run.
    pub baselines: Vec<Phase>,
    /// Library figures as ratios to the baselines.
    pub ratios: Vec<Ratio>,
    /// Baselines that could not run, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

/// `12.3M`, `45.6k`, `789`.
pub fn si(value: f64) -> String {
    let a = value.abs();
    if a >= 1e9 {
        format!("{:.2}G", value / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", value / 1e3)
    } else if a >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else if a < 0.01 {
        format!("{value:.2e}")
    } else {
        format!("{value:.3}")
    }
}

fn optional(value: Option<f64>, format: impl Fn(f64) -> String) -> String {
    value.map_or_else(|| "-".to_string(), format)
}

/// Mebibytes, one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl RunReport {
    /// The report as a text table.
    pub fn table(&self) -> String {
        let s = &self.settings;
        let m = &self.machine;
        let mut out = String::new();
        let bound = match (s.increments, s.duration_s) {
            (Some(n), _) => format!("{} increments", si(n as f64)),
            (None, d) => format!("{d} s"),
        };
        let _ = writeln!(
            out,
            "counters-load: cache {} x store {}{}\n  {} tasks on {} workers, {} keys ({}), deltas {}, {bound}, \
             interval {} s{}, latency of 1 call in {}",
            s.cache,
            s.store,
            if s.combining { " (combining)" } else { "" },
            s.tasks,
            s.workers,
            s.keys,
            s.distribution,
            s.deltas,
            s.interval_s,
            s.threshold.map(|t| format!(" or {t}")).unwrap_or_default(),
            s.latency_sample,
        );
        let _ = writeln!(
            out,
            "machine: {} cores, {}, kernel {}; load average {:.2} before, {:.2} after\n",
            m.cores, m.cpu, m.kernel, m.load_before, m.load_after
        );
        let _ = writeln!(
            out,
            "{:<34} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>11} {:>11}",
            "phase", "ops/s", "p50 µs", "p99 µs", "p999 µs", "row writes", "requests", "writes/inc", "RSS growth"
        );
        for phase in std::iter::once(&self.library).chain(&self.baselines) {
            let _ = writeln!(
                out,
                "{:<34} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>10} {:>10} {:>11} {:>11}",
                phase.name,
                si(phase.ops_per_sec),
                phase.latency.p50_us,
                phase.latency.p99_us,
                phase.latency.p999_us,
                optional(phase.store.map(|c| c.counter_writes as f64), si),
                optional(phase.store.map(|c| c.requests() as f64), si),
                optional(phase.write_amplification, |w| format!("{w:.2e}")),
                match (phase.peak_rss_bytes, phase.rss_before_bytes) {
                    (Some(peak), Some(before)) => mib(peak.saturating_sub(before)),
                    _ => "-".into(),
                },
            );
            if phase.errors > 0 {
                let _ =
                    writeln!(out, "  {} errors, first: {}", phase.errors, phase.first_error.as_deref().unwrap_or("?"));
            }
        }
        for phase in std::iter::once(&self.library).chain(&self.baselines) {
            if let (Some(client), Some(_)) = (phase.client_cpu_usec_per_increment, &phase.server) {
                let _ = writeln!(out, "client, {}: {client:.2} µs of CPU per increment (this process)", phase.name);
            }
            if let Some(server) = &phase.server {
                let calls: Vec<String> =
                    server.calls.iter().map(|(name, n)| format!("{name} {}", si(*n as f64))).collect();
                // memcached keeps no time per command.
                let in_commands = if server.usec_per_increment > 0.0 {
                    format!(" {:.2} µs in commands,", server.usec_per_increment)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "server, {}: {:.2} commands,{in_commands} {:.2} µs of CPU per increment ({})",
                    phase.name,
                    server.commands_per_increment,
                    server.cpu_usec_per_increment,
                    calls.join(", ")
                );
            }
        }
        if let Some(lag) = &self.library.pending {
            let _ = writeln!(
                out,
                "\npending lag: at most {} cells; oldest pending delta p50 {} ms, p99 {} ms, max {} ms \
                 (bound: interval {} s + one tick); {} cells found past the bound",
                lag.max_cells, lag.age_p50_ms, lag.age_p99_ms, lag.max_age_ms, s.interval_s, lag.late_cells,
            );
            let _ = writeln!(
                out,
                "flush during the load: {} cells in {} passes, flusher busy {:.2} s ({} rows/s while flushing)",
                lag.load_cells_flushed,
                lag.load_flush_passes,
                lag.load_flush_busy_s,
                optional(lag.load_flush_rows_per_busy_s(), si),
            );
            let _ = writeln!(
                out,
                "drain at shutdown: {} cells pending, {} flushed in {:.3} s ({} rows/s)",
                lag.cells_at_end,
                lag.drain_cells,
                lag.drain_s,
                optional(lag.drain_rows_per_s(), si),
            );
            if let Some(e) = &lag.drain_error {
                let _ = writeln!(out, "THE DRAIN FAILED: {e}");
            }
        }
        if let Some(w) = self.library.warmup {
            let _ = writeln!(
                out,
                "warm-up (not in the figures above): {} keys loaded with {} store reads in {:.2} s",
                w.store.keys_read, w.store.reads, w.seconds
            );
        }
        if !self.ratios.is_empty() {
            let _ = writeln!(out, "\nratios (same run):");
            for r in &self.ratios {
                let _ = writeln!(
                    out,
                    "  {:<64} {:>10}   ({} vs {})",
                    r.name,
                    ratio(r.value),
                    si(r.library),
                    si(r.baseline)
                );
            }
        }
        for skipped in &self.skipped {
            let _ = writeln!(out, "skipped: {skipped}");
        }
        out
    }
}

/// `0.62x`, `143x`.
pub fn ratio(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}x")
    } else if value >= 10.0 {
        format!("{value:.1}x")
    } else {
        format!("{value:.2}x")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers_for_people() {
        assert_eq!(si(12_345_678.0), "12.35M");
        assert_eq!(si(45_600.0), "45.6k");
        assert_eq!(si(789.0), "789");
        assert_eq!(si(0.000123), "1.23e-4");
        assert_eq!(ratio(0.623), "0.62x");
        assert_eq!(ratio(1234.0), "1234x");
    }

    #[test]
    fn derives_amplification_from_store_counts() {
        let phase = Phase { increments: 1_000, ..Phase::default() }.with_store(StoreCounts {
            applies: 2,
            counter_writes: 10,
            ..StoreCounts::default()
        });
        assert_eq!(phase.write_amplification, Some(0.01));
        assert_eq!(phase.requests_per_increment, Some(0.002));
    }
}
