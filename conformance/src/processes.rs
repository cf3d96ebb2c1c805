//! Several OS processes over one shared cache and one shared store, for
//! every pair whose cache claims `shared && durable_claims` and whose store
//! claims `shared` (the others do not promise anything across processes,
//! and the cases say so and pass).
//!
//! Each process is the test binary run again as a worker (the pair's
//! `process_worker` test, which does nothing unless the parent set
//! [`WORKER_ENV`]): it opens the same backends (the same key prefix, table
//! or file, by the run's id), increments shared counters with a short
//! interval policy and its own background flusher, and appends every
//! acknowledged total to a file, one unbuffered write per increment, so
//! that a SIGKILL loses at most the increment in flight.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use counter_core::{CacheLayer, Counters, DurableStore, Key, Policy};

/// The variable that turns a pair's `process_worker` test into a worker:
/// `id|acks file|increments|flush interval in ms`.
pub const WORKER_ENV: &str = "COUNTERS_CONFORMANCE_WORKER";

/// The counters every worker increments: a hot one every other time, the
/// others in turn.
const KEYS: [&str; 4] = ["hot", "warm:1", "warm:2", "cold"];

/// Opens a pair's backends for the multi-process run named by the id, as
/// every process of the run opens them (the same prefix, table or file);
/// `None` when a service is missing.
pub type Opener<C, S> = fn(String) -> Pin<Box<dyn Future<Output = Option<(C, S)>> + Send>>;

/// The pair a multi-process case runs on.
#[derive(Debug, Clone, Copy)]
pub struct ProcessPair<'a> {
    /// Its name, `<cache>_x_<store>` (for skips).
    pub name: &'a str,
    /// The `module_path!()` of the module holding its `process_worker` test.
    pub module: &'a str,
    /// A directory for the workers' acks files.
    pub scratch: &'a Path,
    /// The workers' flush interval.
    pub flush: Duration,
}

/// Workers per run.
const WORKERS: usize = 2;

fn key(name: &str) -> Key {
    Key::new("procs", name).expect("valid key")
}

/// Whether the pair promises anything across processes.
fn applies(cache: &dyn CacheLayer, store: &dyn DurableStore) -> bool {
    let caps = cache.capabilities();
    caps.shared && caps.durable_claims && store.capabilities().shared
}

fn handle<C: CacheLayer, S: DurableStore>(cache: C, store: S, flush: Duration, lease: Duration) -> Counters<C, S> {
    Counters::builder(Arc::new(cache), Arc::new(store))
        .policy(Policy::interval(flush).expect("interval above zero"))
        .tick(flush.min(Duration::from_millis(10)))
        .claim_lease(lease)
        .build()
        .expect("build the handle")
}

/// The worker side of a pair: a no-op unless [`WORKER_ENV`] is set.
/// `open(id)` opens the pair's shared backends for the run `id`.
pub async fn worker<C: CacheLayer, S: DurableStore>(open: Opener<C, S>) {
    let Ok(spec) = std::env::var(WORKER_ENV) else { return };
    let [id, out, count, flush_ms]: [&str; 4] = spec.split('|').collect::<Vec<_>>().try_into().expect("worker spec");
    let (cache, store) = open(id.to_string()).await.expect("the worker opens the run's backends");
    let flush = Duration::from_millis(flush_ms.parse().expect("flush interval"));
    let counters = handle(cache, store, flush, Duration::from_millis(300));
    let mut out = std::fs::OpenOptions::new().create(true).append(true).open(out).expect("acks file");
    for i in 0..count.parse::<usize>().expect("increments") {
        let name = if i % 2 == 0 { KEYS[0] } else { KEYS[1 + (i / 2) % 3] };
        let total = loop {
            match counters.incr(&key(name), 1).await {
                Ok(total) => break total,
                // A store shared by several processes may be busy (a cold
                // read of SQLite): transient errors are retried.
                Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(e) => panic!("increment: {e}"),
            }
        };
        out.write_all(format!("{name} {total}\n").as_bytes()).expect("append an ack");
    }
    counters.shutdown().await.expect("drain");
}

/// One run of workers over one pair.
struct Run {
    id: String,
    dir: PathBuf,
    worker_test: String,
    flush: Duration,
}

impl Run {
    fn new(pair: &ProcessPair<'_>) -> Run {
        let id = format!("p{:016x}", rand::random::<u64>());
        let dir = pair.scratch.join(format!("procs-{id}"));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        // `matrix::redis::sqlite` is the test `redis::sqlite::process_worker`.
        let path = pair.module.split_once("::").map_or(pair.module, |(_, rest)| rest);
        Run { id, dir, worker_test: format!("{path}::process_worker"), flush: pair.flush }
    }

    fn out(&self, worker: usize) -> PathBuf {
        self.dir.join(format!("worker-{worker}.acks"))
    }

    fn spawn(&self, worker: usize, count: usize) -> Child {
        let out = self.out(worker).display().to_string();
        let spec = [self.id.clone(), out, count.to_string(), self.flush.as_millis().to_string()].join("|");
        Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--exact", &self.worker_test, "--nocapture", "--test-threads=1"])
            .env(WORKER_ENV, spec)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn a worker")
    }

    /// Acknowledged totals per key, over all workers.
    fn acks(&self) -> HashMap<String, Vec<i64>> {
        let mut acks: HashMap<String, Vec<i64>> = HashMap::new();
        for worker in 0..WORKERS {
            let text = std::fs::read_to_string(self.out(worker)).unwrap_or_default();
            // A killed worker may leave half a line: only whole lines count.
            for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
                let (name, total) = line.trim_end().split_once(' ').expect("name total");
                acks.entry(name.to_string()).or_default().push(total.parse().expect("a total"));
            }
        }
        acks
    }

    fn wait_for_lines(&self, worker: usize, lines: usize, deadline: Duration) {
        let start = Instant::now();
        while std::fs::read_to_string(self.out(worker)).map(|t| t.lines().count()).unwrap_or(0) < lines {
            assert!(start.elapsed() < deadline, "worker {worker} made no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// After the workers: a handle that recovers what is left (claims of a
/// dead flusher, pending deltas) and flushes it all. Per key, the cache's
/// total and the durable value.
async fn settle<C: CacheLayer, S: DurableStore>(cache: C, store: S, flush: Duration) -> HashMap<String, (i64, i64)> {
    let counters = handle(cache, store, flush, Duration::ZERO);
    counters.flush().await.expect("flush what the workers left");
    let mut out = HashMap::new();
    for name in KEYS {
        let total = counters.get(&key(name)).await.expect("get");
        let durable = counters.store().get_many(&[key(name)]).await.expect("store read")[0].unwrap_or(0);
        out.insert(name.to_string(), (total, durable));
    }
    counters.shutdown().await.expect("shutdown");
    out
}

/// Opens the run's backends in the parent, or says why the case does not
/// apply: `None` when a service is missing (a skip, noted for `pair`) or
/// the pair promises nothing across processes.
async fn open_for_run<C: CacheLayer, S: DurableStore>(pair: &str, open: Opener<C, S>, id: &str) -> Option<(C, S)> {
    let Some((cache, store)) = open(id.to_string()).await else {
        crate::matrix::skipped(pair);
        return None;
    };
    if !applies(&cache, &store) {
        eprintln!(
            "{pair}: not a multi-process pair (cache {:?}, store shared: {}): nothing to check across processes",
            cache.capabilities(),
            store.capabilities().shared
        );
        return None;
    }
    Some((cache, store))
}

/// Totals returned by `incr` are shared: between them the processes see
/// every value from 1 to the final total exactly once, and the store ends
/// with exactly that total.
pub async fn every_total_once_across_processes<C: CacheLayer, S: DurableStore>(
    pair: &ProcessPair<'_>,
    open: Opener<C, S>,
) {
    let run = Run::new(pair);
    let Some(_) = open_for_run(pair.name, open, &run.id).await else { return };
    let workers: Vec<Child> = (0..WORKERS).map(|w| run.spawn(w, 1500)).collect();
    for mut worker in workers {
        assert!(worker.wait().expect("wait for a worker").success(), "a worker failed");
    }
    let acks = run.acks();
    let (cache, store) = open(run.id.clone()).await.expect("reopen");
    let settled = settle(cache, store, pair.flush).await;
    for name in KEYS {
        let mut seen = acks[name].clone();
        seen.sort_unstable();
        let n = seen.len() as i64;
        assert_eq!(seen, (1..=n).collect::<Vec<_>>(), "{name}: every total once");
        assert_eq!(settled[name], (n, n), "{name}: cache total and durable value");
    }
}

/// One worker is SIGKILLed mid-run, perhaps holding a claim. Its pending
/// deltas are in the shared cache and its claims recorded there, so the
/// other (or a later flusher) flushes them: the durable totals equal every
/// acknowledged increment, none twice (the one increment in flight at the
/// kill may count without having been acknowledged).
pub async fn a_killed_process_loses_and_doubles_nothing<C: CacheLayer, S: DurableStore>(
    pair: &ProcessPair<'_>,
    open: Opener<C, S>,
) {
    let run = Run::new(pair);
    let Some(_) = open_for_run(pair.name, open, &run.id).await else { return };
    let mut workers: Vec<Child> = (0..WORKERS).map(|w| run.spawn(w, 2500)).collect();
    run.wait_for_lines(0, 600, Duration::from_secs(120));
    workers[0].kill().expect("SIGKILL");
    workers[0].wait().expect("reap");
    for worker in &mut workers[1..] {
        assert!(worker.wait().expect("wait for a worker").success(), "a surviving worker failed");
    }
    let acks = run.acks();
    let (cache, store) = open(run.id.clone()).await.expect("reopen");
    let settled = settle(cache, store, pair.flush).await;
    let acked: usize = acks.values().map(Vec::len).sum();
    let total_durable: i64 = settled.values().map(|v| v.1).sum();
    assert!(acked >= 600 + (WORKERS - 1) * 2500, "the run was shorter than planned: {acked}");
    for name in KEYS {
        let mut seen = acks[name].clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), acks[name].len(), "{name}: a total was returned twice");
        let (total, durable) = settled[name];
        assert_eq!(durable, total, "{name}: the store holds every counted increment, once");
        assert!(seen.last().copied().unwrap_or(0) <= total, "{name}");
    }
    assert!(
        (acked as i64..=acked as i64 + 1).contains(&total_durable),
        "durable {total_durable} for {acked} acknowledged increments"
    );
}
