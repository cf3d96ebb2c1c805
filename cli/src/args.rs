//! Command-line arguments.

use clap::{Parser, Subcommand};

/// Real-time counters from the command line.
///
/// Keys are `namespace/name`, or `name` in the default namespace. Backends
/// are chosen by URL; the default is an in-process cache and an SQLite file
/// in the current directory, so nothing needs to be installed.
#[derive(Debug, Parser)]
#[command(name = "counters", version, about, long_about = None)]
pub struct Args {
    /// Cache URL: memory://
    #[arg(long, global = true, env = "COUNTERS_CACHE", default_value = counters::DEFAULT_CACHE_URL)]
    pub cache: String,
    /// Store URL: sqlite://PATH or memory://
    #[arg(long, global = true, env = "COUNTERS_STORE", default_value = counters::DEFAULT_STORE_URL)]
    pub store: String,
    /// Print JSON for scripts instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
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
        /// Event time for time slices, epoch seconds.
        #[arg(long, allow_hyphen_values = true, requires = "sliced")]
        at: Option<i64>,
        /// Also count into the key's ancestors (a:b:c into a:b and a).
        #[arg(long)]
        rollup: bool,
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
        /// The N largest, by value.
        #[arg(long)]
        top: Option<usize>,
        /// At most this many (by name).
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
        /// Range start, epoch seconds (default: 120 buckets ago).
        #[arg(long, allow_hyphen_values = true)]
        from: Option<i64>,
        /// Range end, epoch seconds (default: now).
        #[arg(long, allow_hyphen_values = true)]
        to: Option<i64>,
    },
    /// Write every pending delta to the store.
    Flush,
    /// Run the HTTP service (not available in this version).
    Serve,
}
