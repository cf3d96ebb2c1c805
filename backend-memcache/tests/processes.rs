//! Two OS processes share one memcached and one SQLite file. Each is this
//! test binary run again as a worker (`worker_process`, which does nothing
//! unless the parent set `COUNTERS_WORKER`): it increments shared counters
//! with a short interval policy and its own background flusher, and appends
//! every acknowledged total to a file, one unbuffered write per increment,
//! so a SIGKILL loses at most the increment in flight.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_memcache::{MemcacheCache, MemcacheCacheOptions};
use backend_sqlite::SqliteStore;
use common::{cache_with, random_prefix, service_url};
use counter_core::{Counters, DurableStore, Key, Policy};

const KEYS: [&str; 4] = ["hot", "warm:1", "warm:2", "cold"];

fn key(name: &str) -> Key {
    Key::new("procs", name).unwrap()
}

async fn handle(url: &str, prefix: &str, sqlite: &Path, lease: Duration) -> Counters<MemcacheCache, SqliteStore> {
    let mut options = MemcacheCacheOptions::with_prefix(prefix);
    options.dirty_window = Duration::from_millis(200);
    options.clock_margin = Duration::from_millis(200);
    let cache = cache_with(url, options).await;
    let store = SqliteStore::open(sqlite).await.expect("open SQLite");
    Counters::builder(Arc::new(cache), Arc::new(store))
        .policy(Policy::interval(Duration::from_millis(20)).unwrap())
        .tick(Duration::from_millis(10))
        .claim_lease(lease)
        .build()
        .unwrap()
}

/// The worker side; a no-op when run as an ordinary test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_process() {
    let Ok(spec) = std::env::var("COUNTERS_WORKER") else { return };
    let [url, prefix, sqlite, out, count]: [&str; 5] = spec.split('|').collect::<Vec<_>>().try_into().unwrap();
    let counters = handle(url, prefix, Path::new(sqlite), Duration::from_millis(300)).await;
    let mut out = std::fs::OpenOptions::new().create(true).append(true).open(out).unwrap();
    for i in 0..count.parse::<usize>().unwrap() {
        let name = if i % 2 == 0 { KEYS[0] } else { KEYS[1 + (i / 2) % 3] };
        let total = loop {
            match counters.incr(&key(name), 1).await {
                Ok(total) => break total,
                // The store (SQLite, shared by two processes) may be busy: retry transient errors.
                Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(e) => panic!("increment: {e}"),
            }
        };
        out.write_all(format!("{name} {total}\n").as_bytes()).unwrap();
    }
    counters.shutdown().await.expect("drain");
}

struct Run {
    url: String,
    prefix: String,
    dir: PathBuf,
}

impl Run {
    fn new(url: String) -> Run {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("mc-procs-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        Run { url, prefix: random_prefix(), dir }
    }

    fn sqlite(&self) -> PathBuf {
        self.dir.join("counters.sqlite")
    }

    fn out(&self, worker: usize) -> PathBuf {
        self.dir.join(format!("worker-{worker}.acks"))
    }

    fn spawn(&self, worker: usize, count: usize) -> Child {
        let spec = [
            self.url.clone(),
            self.prefix.clone(),
            self.sqlite().display().to_string(),
            self.out(worker).display().to_string(),
            count.to_string(),
        ]
        .join("|");
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "worker_process", "--nocapture", "--test-threads=1"])
            .env("COUNTERS_WORKER", spec)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn worker")
    }

    fn acks(&self, workers: usize) -> HashMap<String, Vec<i64>> {
        let mut acks: HashMap<String, Vec<i64>> = HashMap::new();
        for worker in 0..workers {
            let text = std::fs::read_to_string(self.out(worker)).unwrap_or_default();
            for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
                let (name, total) = line.trim_end().split_once(' ').unwrap();
                acks.entry(name.to_string()).or_default().push(total.parse().unwrap());
            }
        }
        acks
    }

    /// After the workers: a handle that recovers what is left and flushes
    /// it all. Returns per key the cache's total and the durable value.
    async fn settle(&self) -> HashMap<String, (i64, i64)> {
        let counters = handle(&self.url, &self.prefix, &self.sqlite(), Duration::ZERO).await;
        counters.flush().await.unwrap();
        let mut out = HashMap::new();
        for name in KEYS {
            let total = counters.get(&key(name)).await.unwrap();
            let durable = counters.store().get_many(&[key(name)]).await.unwrap()[0].unwrap_or(0);
            out.insert(name.to_string(), (total, durable));
        }
        counters.shutdown().await.unwrap();
        out
    }
}

fn wait_for_lines(path: &Path, lines: usize, deadline: Duration) {
    let start = Instant::now();
    while std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0) < lines {
        assert!(start.elapsed() < deadline, "worker made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Totals returned by `incr` are shared: between them the two processes see
/// every value from 1 to the final total exactly once, and the store ends
/// with exactly that total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_see_every_total_once_and_flush_each_increment_once() {
    let Some(url) = service_url() else { return };
    let run = Run::new(url);
    let workers: Vec<Child> = (0..2).map(|w| run.spawn(w, 1500)).collect();
    for mut worker in workers {
        assert!(worker.wait().unwrap().success(), "a worker failed");
    }
    let acks = run.acks(2);
    let settled = run.settle().await;
    for name in KEYS {
        let mut seen = acks[name].clone();
        seen.sort_unstable();
        let n = seen.len() as i64;
        assert_eq!(seen, (1..=n).collect::<Vec<_>>(), "{name}: every total once");
        assert_eq!(settled[name], (n, n), "{name}: cache total and durable value");
    }
}

/// One of two workers is SIGKILLed mid-run, perhaps holding a claim. Its
/// pending deltas are in the shared cache and registered in the shared
/// dirty index, its claims in the claims index, so the other (or a later
/// flusher) flushes them: the durable totals equal every acknowledged
/// increment, none twice (the one increment in flight at the kill may count
/// without having been acknowledged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_loses_and_doubles_nothing() {
    let Some(url) = service_url() else { return };
    let run = Run::new(url);
    let mut workers: Vec<Child> = (0..2).map(|w| run.spawn(w, 2500)).collect();
    wait_for_lines(&run.out(0), 600, Duration::from_secs(120));
    workers[0].kill().unwrap(); // SIGKILL
    workers[0].wait().unwrap();
    assert!(workers[1].wait().unwrap().success(), "the surviving worker failed");
    let acks = run.acks(2);
    let settled = run.settle().await;
    let acked: usize = acks.values().map(Vec::len).sum();
    let total_durable: i64 = settled.values().map(|v| v.1).sum();
    assert!(acked >= 600 + 2500, "the run was shorter than planned: {acked}");
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
