//! Command-line arguments.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Real-time counters from the command line.
///
/// Keys are `namespace/name`, or `name` in the default namespace. Backends
/// are chosen by URL; the default is an in-process cache and an SQLite file
/// in the current directory, so nothing needs to be installed.
#[derive(Debug, Parser)]
#[command(name = "counters", version, about, long_about = None)]
pub struct Args {
    /// Cache URL (the schemes compiled in: see `cache_help`).
    #[arg(long, global = true, env = "COUNTERS_CACHE", default_value = counters::DEFAULT_CACHE_URL, help = cache_help())]
    pub cache: String,
    /// Store URL (the schemes compiled in: see `store_help`).
    #[arg(long, global = true, env = "COUNTERS_STORE", default_value = counters::DEFAULT_STORE_URL, help = store_help())]
    pub store: String,
    /// Spill journal directory: where the deltas the store does not take at
    /// exit are kept (fsynced) until a later run lands them. Default: next
    /// to the SQLite file (PATH.spill), else counters-HASH.spill here.
    #[arg(long, global = true, env = "COUNTERS_JOURNAL")]
    pub journal: Option<std::path::PathBuf>,
    /// Print JSON for scripts instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The help of `--cache`: every cache scheme this build has.
fn cache_help() -> String {
    let mut schemes = vec!["memory://"];
    if cfg!(feature = "redis") {
        schemes.extend([
            "redis://HOST:PORT",
            "redis+cluster://HOST:PORT,HOST:PORT",
            "rediss:// and rediss+cluster:// (TLS; ?ca=PEM)",
        ]);
    }
    if cfg!(feature = "memcache") {
        schemes.push("memcache://HOST:PORT");
    }
    format!("Cache URL: {}. Options as URL parameters (timeouts, pool sizes; see the README)", schemes.join(", "))
}

/// The help of `--store`: every store scheme this build has.
fn store_help() -> String {
    let mut schemes = vec!["sqlite://PATH", "memory:// (not durable)"];
    if cfg!(feature = "redis") {
        schemes.push("redis://HOST:PORT (or rediss:// over TLS)");
    }
    if cfg!(feature = "dynamo") {
        schemes.push("dynamodb://TABLE?region=R");
    }
    format!("Store URL: {}", schemes.join(", "))
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add DELTA (default 1) to a counter and print its new total.
    Incr {
        /// The counter.
        key: String,
        /// How much to add (negative to subtract).
        #[arg(default_value_t = 1, allow_hyphen_values = true)]
        delta: i64,
        /// Start a missing counter at this value.
        #[arg(long, allow_hyphen_values = true)]
        default: Option<i64>,
        /// Also count into time slices, at this event time (epoch seconds; now if absent).
        #[arg(long)]
        sliced: bool,
        /// Event time for time slices, epoch seconds: years 1 to 9999, and
        /// within the retention of at least one precision (120 days by default).
        #[arg(long, allow_hyphen_values = true, requires = "sliced")]
        at: Option<i64>,
        /// Also count into the key's ancestors (a:b:c into a:b and a).
        #[arg(long)]
        rollup: bool,
        /// Count this increment once per counter and key: run again with
        /// the same key (after a timeout, say), it counts nothing and prints
        /// the first run's total. 1 to 128 visible ASCII characters.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
    },
    /// Subtract DELTA (default 1) from a counter and print its new total.
    Decr {
        /// The counter.
        key: String,
        /// How much to subtract.
        #[arg(default_value_t = 1, allow_hyphen_values = true)]
        delta: i64,
    },
    /// Print counters' values (0 for a counter that does not exist).
    Get {
        /// The counters.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Set a counter's value.
    Put {
        /// The counter.
        key: String,
        /// Its new value.
        #[arg(allow_hyphen_values = true)]
        value: i64,
    },
    /// Delete a counter and its time series.
    Delete {
        /// The counter.
        key: String,
    },
    /// List the counters of a namespace, by name or top-N by value.
    List {
        /// Namespace (default: the default namespace).
        #[arg(long, default_value = "")]
        namespace: String,
        /// Only names starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// The N largest, by value (not with --limit).
        #[arg(long, conflicts_with = "limit")]
        top: Option<usize>,
        /// At most this many, by name (not with --top).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Print a time-sliced counter's (bucket start, count) pairs.
    Series {
        /// The counter.
        key: String,
        /// Bucket width in seconds (one of the configured precisions).
        #[arg(long)]
        precision: u32,
        /// Range start, epoch seconds (default: 120 buckets ago). Years 1 to
        /// 9999; at most 100,000 buckets from --from to --to.
        #[arg(long, allow_hyphen_values = true)]
        from: Option<i64>,
        /// Range end, epoch seconds (default: now). Years 1 to 9999.
        #[arg(long, allow_hyphen_values = true)]
        to: Option<i64>,
    },
    /// Write every pending delta to the store, and report the claims other
    /// processes hold (a process killed mid-flush leaves some).
    Flush {
        /// Also land other processes' claims now, instead of once they are
        /// older than the claim lease (safe: a claim lands once, whoever
        /// lands it).
        #[arg(long)]
        recover: bool,
    },
    /// Run the HTTP service: the JSON API under /v1, /metrics, /healthz,
    /// /readyz and the admin page at /admin. Stops on SIGINT or SIGTERM
    /// after draining every pending delta to the store.
    Serve(ServeArgs),
}

/// Options of `counters serve`.
///
/// `--listen`, `--flush-interval`, `--time-sliced` and `--max-pending` may
/// also come from the `--config` file: an option given on the command line
/// (or by its environment variable) wins over the file, and the file over the
/// defaults.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A TOML configuration file: families of counters with policies of
    /// their own (`[[family]]` tables), and listen, flush_interval,
    /// time_sliced, max_pending. Options given here win over it.
    #[arg(long, env = "COUNTERS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080). A non-loopback address
    /// needs --token.
    #[arg(long, env = "COUNTERS_LISTEN", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,
    /// Bearer token required for writes (and accepted for reads). Prefer the
    /// environment variable: arguments are visible to other local users. An
    /// empty token is refused.
    #[arg(long, env = "COUNTERS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Bearer token for reads only; when set, every read needs a token.
    /// Needs --token too (writes would be open otherwise).
    #[arg(long, env = "COUNTERS_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,
    /// Leave reads open without a token on a non-loopback address.
    #[arg(long)]
    pub public_reads: bool,
    /// A host name (NAME, any port, or NAME:PORT) the service answers to
    /// besides its listen address and localhost; repeat for more. Requests
    /// naming another Host are 421, writes from another Origin 403.
    #[arg(long = "allowed-host", value_name = "NAME[:PORT]", env = "COUNTERS_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// How long a client may take to send a request head (and an idle
    /// kept-alive connection may stay open); the connection is closed beyond.
    /// Seconds, or a duration like 250ms, 2s, 5m.
    #[arg(long, default_value = "10", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// How long a client may take to send a request body (408 beyond).
    /// Seconds, or a duration like 250ms, 2s, 5m.
    #[arg(long, default_value = "10", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// How long an answer may wait on a client that reads nothing before the
    /// connection is closed. Seconds, or a duration like 250ms, 2s, 5m.
    #[arg(long, default_value = "10", value_parser = parse_duration)]
    pub write_timeout: Duration,
    /// Most connections served at once; more wait in the listen backlog.
    #[arg(long, default_value_t = counters_service::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Write-behind age bound of the counters in no family of the --config
    /// file (and of families that give no interval); default 10. Seconds,
    /// or a duration like 250ms, 2s, 5m.
    #[arg(long, value_parser = parse_duration)]
    pub flush_interval: Option<Duration>,
    /// Count every increment into time slices unless the request says
    /// otherwise (--time-sliced=false overrides the --config file).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub time_sliced: Option<bool>,
    /// Most cells pending before increments get 503 backpressure (default
    /// 1000000).
    #[arg(long)]
    pub max_pending: Option<u64>,
    /// Most bytes of a request body.
    #[arg(long, default_value_t = counters_service::DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,
}

/// `HOST:PORT`, with a host name resolved (`localhost:8080`), as the
/// configuration file takes it.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    counters_service::parse_listen(text)
}

/// A duration above zero, as the configuration file takes it: seconds
/// (`0.5`) or a number with a unit (`250ms`, `2s`, `5m`, `1h`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    counters_service::parse_duration(text)
}
