//! The load loop: a number of Tokio tasks, each incrementing keys from its
//! pre-drawn sequence as fast as the target answers, for a duration or a
//! number of increments.
//!
//! Every target (the library or a baseline) runs through the same loop, so
//! the loop's own cost is the same on both sides of a ratio.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::latency::{LatencyRecorder, LatencySummary};
use crate::workload::TaskSequence;

/// Increments a task makes between two yields to the runtime (so that the
/// background flusher and the progress display get their turn even when
/// every call completes at once).
const YIELD_EVERY: u64 = 256;

/// How often the observer is called while the load runs.
const OBSERVE_EVERY: Duration = Duration::from_millis(100);

/// Something the load loop increments: the library or a baseline.
pub trait IncrTarget: Send + Sync + 'static {
    /// Adds `delta` to the key of index `key`.
    fn incr(&self, key: usize, delta: i64) -> impl Future<Output = Result<(), String>> + Send;
}

/// How long and how a load runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSpec {
    /// Stop after this long (unless `increments` stops it first).
    pub duration: Option<Duration>,
    /// Stop after this many increments in all (split evenly over the tasks).
    pub increments: Option<u64>,
    /// Time one call in this many (1: every call). Timing costs two clock
    /// reads, which would dominate a 50 ns in-process call.
    pub latency_sample: u32,
}

/// What a load run did.
#[derive(Debug, Clone, Default)]
pub struct LoadOutcome {
    /// Increments that succeeded.
    pub increments: u64,
    /// Increments that failed.
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// From the start until the last task stopped.
    pub elapsed: Duration,
    /// Latency of the calls timed.
    pub latency: LatencySummary,
    /// CPU time the whole process used meanwhile (every thread: the load
    /// tasks, and for the library its background work), if readable.
    pub client_cpu: Option<Duration>,
}

impl LoadOutcome {
    /// Successful increments per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.increments as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// State the tasks share with the observer.
#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    done: Vec<Padded>,
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

struct TaskResult {
    attempted: u64,
    errors: u64,
    first_error: Option<String>,
    latency: LatencyRecorder,
    finished: Instant,
}

/// Runs one task per sequence against `target` until the spec says stop,
/// calling `observe(increments so far, time so far)` about every 100 ms.
/// Must run inside a multi-threaded Tokio runtime.
pub async fn run_load<T: IncrTarget>(
    target: Arc<T>,
    sequences: Vec<TaskSequence>,
    spec: LoadSpec,
    mut observe: impl FnMut(u64, Duration),
) -> LoadOutcome {
    let tasks = sequences.len().max(1);
    let shared =
        Arc::new(Shared { stop: AtomicBool::new(false), done: (0..tasks).map(|_| Padded::default()).collect() });
    let per_task = spec.increments.map(|n| n.div_ceil(tasks as u64));
    let cpu_before = crate::process_cpu::used();
    let started = Instant::now();
    let handles: Vec<_> = sequences
        .into_iter()
        .enumerate()
        .map(|(index, sequence)| {
            let (target, shared) = (target.clone(), shared.clone());
            let limit = per_task.unwrap_or(u64::MAX);
            tokio::spawn(task_loop(target, sequence, limit, spec.latency_sample.max(1), shared, index))
        })
        .collect();
    loop {
        tokio::time::sleep(OBSERVE_EVERY).await;
        let elapsed = started.elapsed();
        observe(shared.done.iter().map(|d| d.0.load(Relaxed)).sum(), elapsed);
        if spec.duration.is_some_and(|d| elapsed >= d) {
            shared.stop.store(true, Relaxed);
        }
        if handles.iter().all(|h| h.is_finished()) {
            break;
        }
    }
    let mut outcome = LoadOutcome::default();
    let mut latency = LatencyRecorder::default();
    let mut last = started;
    for handle in handles {
        let result = handle.await.expect("a load task panicked");
        outcome.increments += result.attempted - result.errors;
        outcome.errors += result.errors;
        if outcome.first_error.is_none() {
            outcome.first_error = result.first_error;
        }
        latency.merge(&result.latency);
        last = last.max(result.finished);
    }
    outcome.elapsed = last - started;
    outcome.latency = latency.summary();
    outcome.client_cpu = crate::process_cpu::used().zip(cpu_before).map(|(after, before)| after.saturating_sub(before));
    observe(outcome.increments + outcome.errors, outcome.elapsed);
    outcome
}

async fn task_loop<T: IncrTarget>(
    target: Arc<T>,
    mut sequence: TaskSequence,
    limit: u64,
    sample: u32,
    shared: Arc<Shared>,
    index: usize,
) -> TaskResult {
    let mut result = TaskResult {
        attempted: 0,
        errors: 0,
        first_error: None,
        latency: LatencyRecorder::default(),
        finished: Instant::now(),
    };
    let mut until_timed = 0;
    'run: while result.attempted < limit {
        let chunk = YIELD_EVERY.min(limit - result.attempted);
        for _ in 0..chunk {
            if shared.stop.load(Relaxed) {
                break 'run;
            }
            let (key, delta) = sequence.next_choice();
            let outcome = if until_timed == 0 {
                until_timed = sample - 1;
                let start = Instant::now();
                let outcome = target.incr(key, delta).await;
                result.latency.record(start.elapsed());
                outcome
            } else {
                until_timed -= 1;
                target.incr(key, delta).await
            };
            result.attempted += 1;
            if let Err(e) = outcome {
                result.errors += 1;
                result.first_error.get_or_insert(e);
            }
        }
        shared.done[index].0.store(result.attempted, Relaxed);
        tokio::task::yield_now().await;
    }
    shared.done[index].0.store(result.attempted, Relaxed);
    result.finished = Instant::now();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{DeltaMix, Distribution, task_sequences};

    struct Sum(AtomicU64);

    impl IncrTarget for Sum {
        async fn incr(&self, _key: usize, delta: i64) -> Result<(), String> {
            self.0.fetch_add(delta as u64, Relaxed);
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_exactly_the_increments_asked_for() {
        let target = Arc::new(Sum(AtomicU64::new(0)));
        let sequences = task_sequences(3, 10, Distribution::Uniform, &DeltaMix::default());
        let spec = LoadSpec { duration: None, increments: Some(30_000), latency_sample: 7 };
        let mut seen = 0;
        let outcome = run_load(target.clone(), sequences, spec, |n, _| seen = n).await;
        assert_eq!((outcome.increments, outcome.errors, seen), (30_000, 0, 30_000));
        assert_eq!(target.0.load(Relaxed), 30_000);
        assert!(outcome.latency.samples >= 30_000 / 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stops_after_the_duration() {
        let target = Arc::new(Sum(AtomicU64::new(0)));
        let sequences = task_sequences(2, 10, Distribution::Uniform, &DeltaMix::default());
        let spec = LoadSpec { duration: Some(Duration::from_millis(300)), increments: None, latency_sample: 1 };
        let outcome = run_load(target, sequences, spec, |_, _| {}).await;
        assert!(outcome.increments > 0);
        assert!(outcome.elapsed < Duration::from_secs(2), "{:?}", outcome.elapsed);
    }
}
