//! `counters-load`: drives the counters library on any cache x store
//! combination and reports ops/s, latency percentiles, store writes and
//! requests, write amplification, peak memory and pending lag, each beside
//! a baseline measured in the same run. See the crate's README.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use counters_bench::run::{Baseline, RunOptions};
use counters_bench::workload::{DeltaMix, Distribution};
use counters_bench::{flush_scale, idempotency_cost, list_scale, memory_size, run};

/// Load generator and scenarios for the counters library.
#[derive(Debug, Parser)]
#[command(name = "counters-load", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print JSON for scripts instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Tokio worker threads (default: one per core).
    #[arg(long, global = true)]
    workers: Option<usize>,
    /// Also write the JSON report to this file.
    #[arg(long, global = true)]
    save: Option<std::path::PathBuf>,
    /// No progress bars.
    #[arg(long, global = true)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive a cache x store combination, then the baselines, and compare.
    Run(RunArgs),
    /// Bytes per counter in the in-process cache.
    Memory {
        /// Counters to install.
        #[arg(long, default_value_t = 1_000_000)]
        counters: usize,
    },
    /// Flush time with a few dirty counters among many idle ones.
    FlushScale {
        /// Idle counter counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [10_000, 100_000, 1_000_000])]
        idle: Vec<usize>,
        /// Counters made dirty before each flush.
        #[arg(long, default_value_t = 1_000)]
        dirty: usize,
        /// Store URL (default: an SQLite file in a temporary directory).
        #[arg(long)]
        store: Option<String>,
    },
    /// Increments/s with an idempotency key each beside the same without,
    /// and the cache's bytes per remembered key.
    Idempotency {
        /// Cache URL: memory:// or redis://HOST:PORT (a prefix of the run's own is used).
        #[arg(long, default_value = "memory://")]
        cache: String,
        /// Increments per round.
        #[arg(long, default_value_t = 200_000)]
        increments: usize,
        /// Counters incremented.
        #[arg(long, default_value_t = 1_000)]
        keys: usize,
        /// Tasks calling at once.
        #[arg(long, default_value_t = 2)]
        tasks: usize,
    },
    /// Listing time of one namespace beside many dirty counters elsewhere.
    ListScale {
        /// Cache URL (a shared cache gets a prefix of the run's own).
        #[arg(long, default_value = "memory://")]
        cache: String,
        /// Dirty counters in another namespace, comma-separated sizes.
        #[arg(long, value_delimiter = ',', default_values_t = [1_000, 1_000_000])]
        noise: Vec<usize>,
        /// Dirty counters in the namespace listed.
        #[arg(long, default_value_t = 1_000)]
        shown: usize,
        /// Counters per listing (the admin page's default is 100).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Cache URL: memory://, redis://HOST:PORT, redis+cluster://..., memcache://HOST:PORT.
    #[arg(long, default_value = "memory://")]
    cache: String,
    /// Store URL: sqlite://PATH, dynamodb://TABLE?endpoint=..., redis://..., memory://
    /// (default: an SQLite file in a temporary directory).
    #[arg(long)]
    store: Option<String>,
    /// Combine increments of one key in-process before they reach a shared cache
    /// (`incr` then returns a process-local estimate).
    #[arg(long)]
    combining: bool,
    /// With --combining: milliseconds between two pushes to the shared cache (default 100).
    #[arg(long)]
    push_interval_ms: Option<u64>,
    /// Concurrent tasks incrementing.
    #[arg(long, default_value_t = 2)]
    tasks: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// How keys are chosen: uniform, zipf (exponent 1) or zipf:S.
    #[arg(long, default_value = "uniform")]
    distribution: Distribution,
    /// Deltas with weights, e.g. 1 or 1:90,5:9,-1:1.
    #[arg(long, default_value = "1")]
    deltas: DeltaMix,
    /// Seconds each phase runs.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop the library's phase after this many increments instead.
    #[arg(long)]
    increments: Option<u64>,
    /// Seconds the direct-write baseline runs (default: --duration).
    #[arg(long)]
    direct_duration: Option<f64>,
    /// Write-behind interval, seconds.
    #[arg(long, default_value_t = 10.0)]
    interval: f64,
    /// Write-behind threshold (flush a counter when its pending delta reaches it).
    #[arg(long)]
    threshold: Option<u64>,
    /// Baselines: auto, none, dashmap, direct, redis-raw, redis-benchmark, memcache-raw.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Baseline::Auto])]
    baseline: Vec<Baseline>,
    /// Time one call in N (default: 64 for memory://, else 1).
    #[arg(long)]
    latency_sample: Option<u32>,
    /// Do not load the keys into the cache before measuring.
    #[arg(long)]
    no_warm: bool,
}

fn seconds(value: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|_| format!("{what} must be a number of seconds, not {value}"))
}

fn run_options(args: &RunArgs, progress: bool, workers: usize) -> Result<RunOptions, String> {
    if args.tasks == 0 || args.keys == 0 {
        return Err("--tasks and --keys must be at least 1".into());
    }
    Ok(RunOptions {
        cache: args.cache.clone(),
        store: args.store.clone(),
        combining: args.combining,
        push_interval: args.push_interval_ms.map(Duration::from_millis),
        tasks: args.tasks,
        workers,
        keys: args.keys,
        distribution: args.distribution,
        deltas: args.deltas.clone(),
        duration: seconds(args.duration, "--duration")?,
        increments: args.increments,
        direct_duration: args.direct_duration.map(|d| seconds(d, "--direct-duration")).transpose()?,
        interval: seconds(args.interval, "--interval")?,
        threshold: args.threshold,
        baselines: args.baseline.clone(),
        latency_sample: args.latency_sample,
        warm: !args.no_warm,
        progress,
    })
}

/// Prints the report (JSON or table) and saves its JSON where asked.
fn print(cli: &Cli, value: &impl serde::Serialize, table: impl FnOnce() -> String) -> Result<(), String> {
    let json = serde_json::to_string_pretty(value).expect("reports serialize");
    if let Some(path) = &cli.save {
        std::fs::write(path, format!("{json}\n")).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if cli.json {
        println!("{json}");
    } else {
        print!("{}", table());
    }
    Ok(())
}

async fn main_async(cli: Cli, workers: usize) -> Result<(), String> {
    match &cli.command {
        Command::Run(args) => {
            let options = run_options(args, !cli.quiet && !cli.json, workers)?;
            let report = run::run(&options).await?;
            print(&cli, &report, || report.table())?;
            if let Some(e) = report.library.pending.as_ref().and_then(|lag| lag.drain_error.as_ref()) {
                return Err(format!("the drain at shutdown failed: {e}"));
            }
            if report.library.increments == 0 {
                return Err(format!(
                    "the library made no increment: {}",
                    report.library.first_error.as_deref().unwrap_or("no error reported")
                ));
            }
        }
        Command::Memory { counters } => {
            let report = memory_size::measure(*counters).await?;
            print(&cli, &report, || report.table())?;
        }
        Command::FlushScale { idle, dirty, store } => {
            let rows = flush_scale::measure(idle, *dirty, store.as_deref()).await?;
            print(&cli, &rows, || flush_scale::table(&rows))?;
        }
        Command::Idempotency { cache, increments, keys, tasks } => {
            let report = idempotency_cost::measure(cache, *increments, *keys, (*tasks).max(1)).await?;
            print(&cli, &report, || report.table())?;
        }
        Command::ListScale { cache, noise, shown, limit } => {
            let rows = list_scale::measure(cache, noise, *shown, *limit).await?;
            print(&cli, &rows, || list_scale::table(&rows))?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let workers = cli.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).max(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("counters-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_async(cli, workers)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("counters-load: {e}");
            ExitCode::FAILURE
        }
    }
}
