//! `counters-load run`: the library on a cache x store combination, then
//! the baselines of the same run, and the ratios between them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use counters::{CacheLayer, Counters, DurableStore, Key, Policy};

use crate::backends::{self, OpenedCache};
use crate::counting_store::CountingStore;
use crate::driver::{LoadSpec, run_load};
use crate::machine::Machine;
use crate::pending_age::AgeSampler;
use crate::process_memory;
use crate::progress::PhaseProgress;
use crate::report::{PendingLag, Phase, Ratio, RunReport, RunSettings, Warmup};
use crate::targets::{DashMapBaseline, DirectStoreBaseline, LibraryTarget};
use crate::workload::{DeltaMix, Distribution, key_names, task_sequences};
use crate::{memcache_raw, redis_benchmark, store_apply};

/// Keys loaded per store read during the warm-up.
const WARM_CHUNK: usize = 500;

/// A baseline to measure beside the library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Baseline {
    /// The baselines that fit the cache and store: `dashmap` always,
    /// `direct` for a store, `redis-raw` and `redis-benchmark` for a Redis cache,
    /// `memcache-raw` for a memcached cache.
    Auto,
    /// No baseline.
    None,
    /// A bare `DashMap<String, AtomicI64>` lookup-and-add loop.
    Dashmap,
    /// One store write per increment, no write-behind.
    Direct,
    /// `redis-benchmark -t incr -P 16` against the cache's Redis.
    RedisBenchmark,
    /// Raw redis-rs `HINCRBY`s, one per increment, from the same tasks over
    /// the kind of connection the Redis cache uses.
    RedisRaw,
    /// Raw pipelined `incr`s against the cache's memcached.
    MemcacheRaw,
    /// The store's own batch-apply rate: batches of its largest size
    /// applied back to back (no cache, no engine), the ceiling of the flush
    /// rate.
    StoreApply,
}

/// Everything `counters-load run` is told.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Cache URL.
    pub cache: String,
    /// Store URL; `None`: an SQLite file in a temporary directory.
    pub store: Option<String>,
    /// Combine increments in-process before they reach a shared cache.
    pub combining: bool,
    /// How often combined increments are sent (default: the combining cache's).
    pub push_interval: Option<Duration>,
    /// Concurrent tasks.
    pub tasks: usize,
    /// Tokio worker threads of the runtime this runs on.
    pub workers: usize,
    /// Distinct keys.
    pub keys: usize,
    /// How keys are chosen.
    pub distribution: Distribution,
    /// Deltas and weights.
    pub deltas: DeltaMix,
    /// How long each phase runs (unless `increments` bounds the library's).
    pub duration: Duration,
    /// Stop the library (and the DashMap baseline) after this many increments.
    pub increments: Option<u64>,
    /// How long the direct-write baseline runs (default: `duration`).
    pub direct_duration: Option<Duration>,
    /// The write-behind interval.
    pub interval: Duration,
    /// The write-behind threshold, if any.
    pub threshold: Option<u64>,
    /// Baselines to run.
    pub baselines: Vec<Baseline>,
    /// Time one call in this many (default: 64 for the in-process cache, else 1).
    pub latency_sample: Option<u32>,
    /// Load every key into the cache before measuring.
    pub warm: bool,
    /// Show progress bars.
    pub progress: bool,
}

/// A unique tag for this run's keys in shared backends.
fn run_id() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("cbench-{secs:x}-{}", std::process::id())
}

/// Runs the library and the baselines, and reports.
pub async fn run(options: &RunOptions) -> Result<RunReport, String> {
    let mut machine = Machine::now();
    let id = run_id();
    let temp = tempfile::tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let default_store = options.store.is_none();
    let store_url = options.store.clone().unwrap_or_else(|| backends::sqlite_url_in(temp.path(), "library.sqlite"));
    let cache_url = backends::with_prefix(&options.cache, &format!("{id}:"));
    let in_process = options.cache == "memory://" || options.combining;
    let latency_sample = options.latency_sample.unwrap_or(if in_process { 64 } else { 1 });
    let names = key_names(&format!("{id}:lib"), options.keys);
    let spec = LoadSpec {
        duration: if options.increments.is_some() { None } else { Some(options.duration) },
        increments: options.increments,
        latency_sample,
    };
    let settings = RunSettings {
        cache: cache_url.clone(),
        store: store_url.clone(),
        combining: options.combining,
        tasks: options.tasks,
        workers: options.workers,
        keys: options.keys,
        distribution: options.distribution.to_string(),
        deltas: options.deltas.to_string(),
        duration_s: spec.duration.map_or(0.0, |d| d.as_secs_f64()),
        increments: options.increments,
        interval_s: options.interval.as_secs_f64(),
        threshold: options.threshold,
        latency_sample,
    };

    let store = Arc::new(CountingStore::new(backends::open_store(&store_url).await?));
    let library = match backends::open_cache(&cache_url).await? {
        OpenedCache::Memory(cache) => {
            if options.combining {
                return Err("--combining is for a shared cache (Redis); the in-process cache needs none".into());
            }
            library_phase(cache, store, &names, spec, options).await?
        }
        #[cfg(feature = "redis")]
        OpenedCache::Redis(cache) => {
            let before = crate::redis_raw::read_commandstats(&options.cache).await;
            let phase = if options.combining {
                let combining = counters::combining::CombiningCache::start(cache.clone(), combining_options(options));
                library_phase(combining, store, &names, spec, options).await
            } else {
                library_phase(cache.clone(), store, &names, spec, options).await
            };
            let phase = with_server_work(phase, &options.cache, before).await;
            if cache_url != options.cache {
                // The run's own prefix: remove what it left in Redis.
                use counters::testing::CacheFaults;
                let _ = cache.lose_everything().await;
            }
            phase?
        }
        #[cfg(feature = "memcache")]
        OpenedCache::Memcache(cache) => {
            let address = memcache_raw::address_of(&options.cache).unwrap_or_default();
            let before = memcache_raw::read_stats(&address).await;
            let phase = if options.combining {
                let combining = counters::combining::CombiningCache::start(cache, combining_options(options));
                library_phase(combining, store, &names, spec, options).await?
            } else {
                library_phase(cache, store, &names, spec, options).await?
            };
            with_memcached_work(phase, &address, before).await
        }
    };

    let mut report = RunReport {
        machine: machine.clone(),
        settings,
        library,
        baselines: Vec::new(),
        ratios: Vec::new(),
        skipped: Vec::new(),
    };
    // A store baseline writes its own file when the store is the default
    // one, and the run's store (under its own key names) otherwise.
    let baseline_store = |file: &str| {
        if default_store { backends::sqlite_url_in(temp.path(), file) } else { store_url.clone() }
    };
    for baseline in resolve(&options.baselines, &options.cache, &store_url) {
        let measured = match baseline {
            Baseline::Dashmap => dashmap_phase(&names, spec, options).await,
            Baseline::Direct => direct_phase(&baseline_store("direct.sqlite"), &id, options).await,
            Baseline::RedisBenchmark => redis_benchmark_phase(&options.cache, options).await,
            Baseline::RedisRaw => redis_raw_phase(&options.cache, &id, options).await,
            Baseline::MemcacheRaw => memcache_raw_phase(&options.cache, &id, options).await,
            Baseline::StoreApply => store_apply_phase(&baseline_store("apply.sqlite"), &id, options).await,
            Baseline::Auto | Baseline::None => continue,
        };
        match measured {
            Ok(phase) => report.baselines.push(phase),
            Err(e) => report.skipped.push(format!("{baseline:?}: {e}")),
        }
    }
    report.ratios = ratios(&report.library, &report.baselines);
    machine.finish();
    report.machine = machine;
    Ok(report)
}

/// The baselines `asked` names, with `auto` resolved for this cache and store.
fn resolve(asked: &[Baseline], cache: &str, store: &str) -> Vec<Baseline> {
    let mut out = Vec::new();
    for &b in asked {
        let add: Vec<Baseline> = match b {
            Baseline::None => return Vec::new(),
            Baseline::Auto => {
                let mut auto = vec![Baseline::Dashmap];
                if matches!(backends::scheme(store), "sqlite" | "dynamodb" | "redis") {
                    auto.push(Baseline::Direct);
                }
                match backends::scheme(cache) {
                    "redis" | "redis+cluster" => auto.extend([Baseline::RedisRaw, Baseline::RedisBenchmark]),
                    "memcache" => auto.push(Baseline::MemcacheRaw),
                    _ => {}
                }
                auto
            }
            other => vec![other],
        };
        for b in add {
            if !out.contains(&b) {
                out.push(b);
            }
        }
    }
    out
}

/// The combining cache's settings for this run.
#[cfg(any(feature = "redis", feature = "memcache"))]
fn combining_options(options: &RunOptions) -> counters::combining::CombiningOptions {
    let mut settings = counters::combining::CombiningOptions::default();
    if let Some(interval) = options.push_interval {
        settings.push_interval = interval;
    }
    settings
}

fn keys_of(names: &[String]) -> Result<Vec<Key>, String> {
    names.iter().map(|n| Key::named(n).map_err(|e| e.to_string())).collect()
}

fn policy_of(options: &RunOptions) -> Result<Policy, String> {
    let policy = Policy::interval(options.interval).map_err(|e| e.to_string())?;
    match options.threshold {
        Some(t) => policy.with_threshold(t).map_err(|e| e.to_string()),
        None => Ok(policy),
    }
}

/// The library: warm-up, the load, the drain.
async fn library_phase<C: CacheLayer + 'static>(
    cache: Arc<C>,
    store: Arc<CountingStore<dyn DurableStore>>,
    names: &[String],
    spec: LoadSpec,
    options: &RunOptions,
) -> Result<Phase, String> {
    let keys = keys_of(names)?;
    let progress = PhaseProgress::spinner("library warm-up", options.progress);
    let warm_started = Instant::now();
    if options.warm {
        for chunk in keys.chunks(WARM_CHUNK) {
            let values = store.get_many(chunk).await.map_err(|e| format!("warm-up read: {e}"))?;
            for (key, value) in chunk.iter().zip(values) {
                cache.load(key, value.unwrap_or(0), 0).await.map_err(|e| format!("warm-up load: {e}"))?;
            }
        }
    }
    let warmup = Warmup { seconds: warm_started.elapsed().as_secs_f64(), store: store.counts() };
    progress.finish();

    let counters = Counters::builder(cache.clone(), store.clone())
        .policy(policy_of(options)?)
        .build()
        .map_err(|e| e.to_string())?;
    let target = Arc::new(LibraryTarget { counters, keys });
    let sequences = task_sequences(options.tasks, options.keys, options.distribution, &options.deltas);
    let name = if options.combining { "library (combining)" } else { "library" };
    let progress = PhaseProgress::new(name, &spec, options.progress);
    let mut lag = PendingLag::default();
    process_memory::reset_peak();
    let rss_before = process_memory::read().rss_bytes;
    let observed = target.clone();
    let before_load = target.counters.metrics();
    let ages = AgeSampler::start(cache.clone());
    let outcome = run_load(target.clone(), sequences, spec, |done, elapsed| {
        progress.update(done, elapsed);
        lag.max_cells = lag.max_cells.max(observed.counters.metrics().pending_cells);
    })
    .await;
    let after_load = target.counters.metrics();
    lag.set_ages(ages.stop().await);
    lag.cells_at_end = after_load.pending_cells;
    lag.late_cells = after_load.age_bound_exceeded - before_load.age_bound_exceeded;
    lag.load_cells_flushed = after_load.cells_flushed - before_load.cells_flushed;
    lag.load_flush_busy_s = (after_load.flush_time - before_load.flush_time).as_secs_f64();
    lag.load_flush_passes = after_load.flush_passes - before_load.flush_passes;
    progress.message("draining");
    let drain_started = Instant::now();
    let drained = target.counters.shutdown().await;
    lag.drain_s = drain_started.elapsed().as_secs_f64();
    lag.drain_cells = target.counters.metrics().cells_flushed - after_load.cells_flushed;
    progress.finish();
    // A failed drain is reported with the figures (the run then fails).
    lag.drain_error = drained.err().map(|e| e.to_string());

    let mut phase = Phase::from_load(name, &outcome).with_store(store.counts().since(&warmup.store));
    phase.peak_rss_bytes = Some(process_memory::read().peak_bytes);
    phase.rss_before_bytes = Some(rss_before);
    phase.pending = Some(lag);
    phase.warmup = options.warm.then_some(warmup);
    Ok(phase)
}

async fn dashmap_phase(names: &[String], spec: LoadSpec, options: &RunOptions) -> Result<Phase, String> {
    let target = Arc::new(DashMapBaseline::new(names));
    let sequences = task_sequences(options.tasks, options.keys, options.distribution, &options.deltas);
    let name = "baseline: DashMap<String, AtomicI64>";
    let progress = PhaseProgress::new(name, &spec, options.progress);
    process_memory::reset_peak();
    let rss_before = process_memory::read().rss_bytes;
    let outcome = run_load(target.clone(), sequences, spec, |done, elapsed| progress.update(done, elapsed)).await;
    progress.finish();
    let mut phase = Phase::from_load(name, &outcome);
    phase.peak_rss_bytes = Some(process_memory::read().peak_bytes);
    phase.rss_before_bytes = Some(rss_before);
    Ok(phase)
}

async fn direct_phase(store_url: &str, id: &str, options: &RunOptions) -> Result<Phase, String> {
    let store = Arc::new(CountingStore::new(backends::open_store(store_url).await?));
    let keys = keys_of(&key_names(&format!("{id}:direct"), options.keys))?;
    let target = Arc::new(DirectStoreBaseline::new(store.clone(), keys));
    let spec = LoadSpec {
        duration: Some(options.direct_duration.unwrap_or(options.duration)),
        increments: None,
        latency_sample: 1,
    };
    let sequences = task_sequences(options.tasks, options.keys, options.distribution, &options.deltas);
    let name = format!("baseline: direct {} writes", backends::scheme(store_url));
    let progress = PhaseProgress::new(&name, &spec, options.progress);
    let outcome = run_load(target, sequences, spec, |done, elapsed| progress.update(done, elapsed)).await;
    progress.finish();
    Ok(Phase::from_load(name, &outcome).with_store(store.counts()))
}

async fn store_apply_phase(store_url: &str, id: &str, options: &RunOptions) -> Result<Phase, String> {
    let store = Arc::new(CountingStore::new(backends::open_store(store_url).await?));
    let keys = keys_of(&key_names(&format!("{id}:apply"), options.keys))?;
    let size = store.capabilities().max_batch.clamp(1, keys.len().max(1));
    let name = format!("baseline: {} batch apply, {size} rows", backends::scheme(store_url));
    let progress = PhaseProgress::spinner(&name, options.progress);
    let duration = options.direct_duration.unwrap_or(options.duration);
    let rate = store_apply::measure(store.clone(), &keys, duration).await;
    progress.finish();
    let rate = rate?;
    let mut phase = Phase {
        name,
        increments: rate.rows,
        elapsed_s: rate.elapsed.as_secs_f64(),
        ops_per_sec: rate.rows_per_sec(),
        ..Phase::default()
    }
    .with_store(store.counts());
    phase.rows_per_sec = Some(rate.rows_per_sec());
    Ok(phase)
}

async fn redis_benchmark_phase(cache: &str, options: &RunOptions) -> Result<Phase, String> {
    let progress = PhaseProgress::spinner("baseline: redis-benchmark", options.progress);
    progress.message("redis-benchmark -t incr -P 16");
    let result = redis_benchmark::run(cache, options.keys, options.duration).await;
    progress.finish();
    let result = result?;
    let mut phase = Phase {
        name: "baseline: redis-benchmark -t incr -P 16".into(),
        increments: result.requests,
        elapsed_s: result.requests as f64 / result.ops_per_sec.max(1e-9),
        ops_per_sec: result.ops_per_sec,
        ..Phase::default()
    };
    phase.latency.p50_us = result.p50_us;
    phase.latency.p99_us = result.p99_us;
    Ok(phase)
}

/// Adds what the Redis server did since `before` to a phase.
#[cfg(feature = "redis")]
async fn with_server_work(
    phase: Result<Phase, String>,
    url: &str,
    before: Result<crate::server_work::CommandStats, String>,
) -> Result<Phase, String> {
    let mut phase = phase?;
    if let (Ok(before), Ok(after)) = (before, crate::redis_raw::read_commandstats(url).await) {
        phase.server = Some(crate::server_work::ServerWork::of(after.since(&before), phase.increments));
    }
    Ok(phase)
}

#[cfg(feature = "redis")]
async fn redis_raw_phase(cache: &str, id: &str, options: &RunOptions) -> Result<Phase, String> {
    let names = key_names(&format!("{id}:raw"), options.keys);
    let target = Arc::new(crate::redis_raw::RedisRawBaseline::connect(cache, &names).await?);
    let spec = LoadSpec { duration: Some(options.duration), increments: None, latency_sample: 1 };
    let sequences = task_sequences(options.tasks, options.keys, options.distribution, &options.deltas);
    let name = "baseline: redis-rs HINCRBY";
    let progress = PhaseProgress::new(name, &spec, options.progress);
    let before = crate::redis_raw::read_commandstats(cache).await;
    let outcome = run_load(target.clone(), sequences, spec, |done, elapsed| progress.update(done, elapsed)).await;
    progress.finish();
    let phase = with_server_work(Ok(Phase::from_load(name, &outcome)), cache, before).await;
    target.clean_up().await?;
    phase
}

#[cfg(not(feature = "redis"))]
async fn redis_raw_phase(_: &str, _: &str, _: &RunOptions) -> Result<Phase, String> {
    Err("the raw Redis baseline needs the `redis` feature of counters-bench".into())
}

async fn memcache_raw_phase(cache: &str, id: &str, options: &RunOptions) -> Result<Phase, String> {
    let address = memcache_raw::address_of(cache).ok_or_else(|| format!("cannot find host:port in {cache}"))?;
    let names = key_names(&format!("{id}:raw"), options.keys);
    let progress = PhaseProgress::spinner("baseline: memcached raw incr", options.progress);
    progress.message("setting the keys");
    memcache_raw::prepare(&address, &names).await?;
    progress.message(format!("pipelines of {} incr", memcache_raw::PIPELINE));
    let sequences = task_sequences(options.tasks, options.keys, options.distribution, &options.deltas);
    let before = memcache_raw::read_stats(&address).await;
    let outcome = memcache_raw::run(&address, &names, sequences, options.duration).await;
    progress.finish();
    let phase = Phase::from_load(
        format!("baseline: memcached raw incr -P {} (latency/pipeline)", memcache_raw::PIPELINE),
        &outcome,
    );
    Ok(with_memcached_work(phase, &address, before).await)
}

/// Adds what the memcached server did since `before` to a phase.
async fn with_memcached_work(
    mut phase: Phase,
    address: &str,
    before: Result<crate::server_work::CommandStats, String>,
) -> Phase {
    if let (Ok(before), Ok(after)) = (before, memcache_raw::read_stats(address).await) {
        phase.server = Some(crate::server_work::ServerWork::of(after.since(&before), phase.increments));
    }
    phase
}

/// The library's figures over each baseline's.
fn ratios(library: &Phase, baselines: &[Phase]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for baseline in baselines {
        if let Some(apply) = baseline.rows_per_sec {
            // The store's ceiling: the flush rates are compared with it.
            if let Some(lag) = &library.pending {
                for (name, rate) in [
                    ("flush rows/s while flushing, during the load", lag.load_flush_rows_per_busy_s()),
                    ("flush rows/s during the drain at shutdown", lag.drain_rows_per_s()),
                ] {
                    if let Some(rate) = rate {
                        out.push(Ratio {
                            name: format!("{name} / {}", baseline.name),
                            value: rate / apply.max(1e-9),
                            library: rate,
                            baseline: apply,
                        });
                    }
                }
            }
            continue;
        }
        out.push(Ratio::throughput(library, baseline));
        if let (Some(lib), Some(raw)) = (&library.server, &baseline.server) {
            out.push(Ratio {
                name: format!("server CPU per increment: library / {}", baseline.name),
                value: lib.cpu_usec_per_increment / raw.cpu_usec_per_increment.max(1e-12),
                library: lib.cpu_usec_per_increment,
                baseline: raw.cpu_usec_per_increment,
            });
            if let (Some(lib), Some(raw)) =
                (library.client_cpu_usec_per_increment, baseline.client_cpu_usec_per_increment)
            {
                out.push(Ratio {
                    name: format!("client CPU per increment: library / {}", baseline.name),
                    value: lib / raw.max(1e-12),
                    library: lib,
                    baseline: raw,
                });
            }
        }
        if let (Some(direct), Some(lib)) = (baseline.requests_per_increment, library.requests_per_increment) {
            out.push(Ratio {
                name: format!("store requests per increment: {} / library", baseline.name),
                value: direct / lib.max(1e-12),
                library: lib,
                baseline: direct,
            });
            if let (Some(warm), Some(store)) = (library.warmup, library.store) {
                let with_warmup = (store.requests() + warm.store.requests()) as f64 / library.increments.max(1) as f64;
                out.push(Ratio {
                    name: "  the same, counting the library's warm-up reads".to_string(),
                    value: direct / with_warmup.max(1e-12),
                    library: with_warmup,
                    baseline: direct,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_the_baselines_that_fit() {
        let auto = resolve(&[Baseline::Auto], "memory://", "sqlite://x");
        assert_eq!(auto, vec![Baseline::Dashmap, Baseline::Direct]);
        let auto = resolve(&[Baseline::Auto], "redis://h:1", "memory://");
        assert_eq!(auto, vec![Baseline::Dashmap, Baseline::RedisRaw, Baseline::RedisBenchmark]);
        let auto = resolve(&[Baseline::Auto], "redis+cluster://h:1,h:2", "sqlite://x");
        assert_eq!(auto, vec![Baseline::Dashmap, Baseline::Direct, Baseline::RedisRaw, Baseline::RedisBenchmark]);
        assert!(resolve(&[Baseline::Auto, Baseline::None], "memory://", "sqlite://x").is_empty());
    }
}
