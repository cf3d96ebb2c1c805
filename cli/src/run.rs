//! Carries out one command: every argument is checked before any backend is
//! opened, so bad input creates nothing.

use std::time::{Duration, SystemTime};

use counters::{Counters, Error, ErrorKind, FlushOptions, IncrOptions, Key, ListQuery, Result, TimeSlices};
use serde_json::json;

use crate::args::{Args, Command, ServeArgs};

/// How long a one-shot command tries to deliver its deltas before it keeps
/// them in the spill journal and exits 0 with a warning.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Checked arguments of a command, ready to run.
enum Job {
    Incr { key: Key, delta: i64, options: IncrOptions },
    Get { keys: Vec<Key> },
    Put { key: Key, value: i64 },
    Delete { key: Key },
    List { query: ListQuery },
    Series { key: Key, precision: u32, from: SystemTime, to: SystemTime },
    Flush { recover: bool },
}

/// The time given to `flag`, in years 1 to 9999 like the HTTP API's
/// (the library's [`counters::epoch_time`]), else bad input naming the flag.
fn epoch(flag: &str, secs: i64) -> Result<SystemTime> {
    counters::epoch_time(secs).map_err(|e| Error::new(e.kind(), format!("{flag}: {}", e.message())))
}

/// The time slices a command's handle counts with: the library's defaults.
fn time_slices() -> TimeSlices {
    TimeSlices::default()
}

fn check(command: Command) -> Result<Job> {
    Ok(match command {
        Command::Incr { key, delta, default, sliced, at, rollup, idempotency_key } => {
            let key = Key::parse(&key)?;
            let mut options = IncrOptions::new().rollup(rollup);
            if let Some(id) = idempotency_key {
                counters::check_idempotency_key(&id).map_err(|e| e.with_key(&key))?;
                options = options.idempotency_key(id);
            }
            if let Some(d) = default {
                options = options.default_value(d);
            }
            if sliced {
                let at = at.map(|secs| epoch("--at", secs)).transpose()?;
                if let Some(at) = at {
                    // The library checks it too; here it is refused before
                    // any backend is opened.
                    time_slices().check_event_time(at, SystemTime::now()).map_err(|e| e.with_key(&key))?;
                }
                options = options.time_sliced(at);
            }
            Job::Incr { key, delta, options }
        }
        Command::Decr { key, delta } => {
            let delta = delta
                .checked_neg()
                .ok_or_else(|| Error::new(ErrorKind::Overflow, "cannot negate the delta").with_key(&key))?;
            Job::Incr { key: Key::parse(&key)?, delta, options: IncrOptions::new() }
        }
        Command::Get { keys } => Job::Get { keys: keys.iter().map(|k| Key::parse(k)).collect::<Result<_>>()? },
        Command::Put { key, value } => Job::Put { key: Key::parse(&key)?, value },
        Command::Delete { key } => Job::Delete { key: Key::parse(&key)? },
        Command::List { namespace, prefix, top, limit } => {
            Key::validate_namespace(&namespace)?;
            Key::validate_prefix(&prefix)?;
            let query = ListQuery::new(namespace, prefix);
            Job::List {
                query: match top {
                    Some(n) => query.top(n),
                    None => query.limit(limit),
                },
            }
        }
        Command::Series { key, precision, from, to } => {
            let key = Key::parse(&key)?;
            if let (Some(f), Some(t)) = (from, to) {
                if f > t {
                    return Err(Error::new(ErrorKind::InvalidInput, "--from is after --to").with_key(&key));
                }
            }
            let to_time = to.map(|secs| epoch("--to", secs)).transpose()?.unwrap_or_else(SystemTime::now);
            let from_time = match from {
                Some(secs) => epoch("--from", secs)?,
                // 120 buckets before --to, or year 1 if that is earlier.
                None => {
                    let back = 120 * i64::from(precision);
                    let secs = counters::epoch_secs(to_time).saturating_sub(back).max(counters::MIN_EPOCH_SECS);
                    epoch("--from", secs)?
                }
            };
            time_slices().series_range(precision, from_time, to_time).map_err(|e| e.with_key(&key))?;
            Job::Series { key, precision, from: from_time, to: to_time }
        }
        Command::Flush { recover } => Job::Flush { recover },
        Command::Serve(_) => unreachable!("`serve` is run by `serve`"),
    })
}

/// How a command ended.
pub enum Outcome {
    /// It did its work and everything it changed is in the store.
    Done,
    /// It did its work (an increment was counted), but the follow-up
    /// failed: its deltas are held (spill journal or shared cache) and land
    /// later. Retrying the command would count twice.
    Counted(Error),
}

/// Runs the command.
pub async fn run(args: Args) -> Result<Outcome> {
    let journal = args.journal.clone().unwrap_or_else(|| counters::default_journal(&args.store));
    if let Command::Serve(serve_args) = args.command {
        return serve(&args.cache, &args.store, journal, serve_args).await;
    }
    let job = check(args.command)?;
    let cache = counters::cache_from_url(&args.cache).await?;
    if let Job::Incr { options, .. } = &job {
        if options.idempotency_key.is_some() && !cache.capabilities().shared {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "--idempotency-key needs a shared cache (redis://, memcache://): the {} cache of one command \
                     starts empty, so a second run would count again",
                    cache.capabilities().name
                ),
            ));
        }
    }
    let store = counters::store_from_url(&args.store).await?;
    // One command, one process: no background flusher; shutdown writes
    // everything through before the process exits, or keeps it in the spill
    // journal (replayed by the next command) when the store does not take it.
    let counters = Counters::builder(cache, store)
        .background(false)
        .shutdown_timeout(SHUTDOWN_TIMEOUT)
        .spill_journal(journal)
        .build()?;
    let outcome = execute(&counters, job, args.json).await;
    let flushed = counters.shutdown().await;
    outcome?;
    match flushed {
        Ok(_) => Ok(Outcome::Done),
        Err(e) if e.kind() == ErrorKind::Deferred => Ok(Outcome::Counted(e)),
        Err(e) => Err(e),
    }
}

async fn execute(counters: &Counters, job: Job, json: bool) -> Result<()> {
    match job {
        Job::Incr { key, delta, options } => {
            let total = counters.incr_with(&key, delta, &options).await?;
            print(json, json!({ "key": key.to_string(), "value": total }), total.to_string());
        }
        Job::Get { keys } => {
            let values = counters.get_many(&keys).await?;
            let text = if keys.len() == 1 {
                values[0].to_string()
            } else {
                keys.iter().zip(&values).map(|(k, v)| format!("{k}\t{v}")).collect::<Vec<_>>().join("\n")
            };
            let rows: Vec<_> =
                keys.iter().zip(&values).map(|(k, v)| json!({ "key": k.to_string(), "value": v })).collect();
            print(json, json!(rows), text);
        }
        Job::Put { key, value } => {
            counters.put(&key, value).await?;
            print(json, json!({ "key": key.to_string(), "value": value }), value.to_string());
        }
        Job::Delete { key } => {
            let existed = counters.delete(&key).await?;
            let text = if existed { format!("deleted {key}") } else { format!("{key} did not exist") };
            print(json, json!({ "key": key.to_string(), "deleted": existed }), text);
        }
        Job::List { query } => {
            let rows = counters.list(&query).await?;
            let text = rows.iter().map(|(k, v)| format!("{k}\t{v}")).collect::<Vec<_>>().join("\n");
            let rows: Vec<_> = rows.iter().map(|(k, v)| json!({ "key": k.to_string(), "value": v })).collect();
            print(json, json!(rows), text);
        }
        Job::Series { key, precision, from, to } => {
            let points = counters.series(&key, precision, from, to).await?;
            let text = points.iter().map(|(s, c)| format!("{s}\t{c}")).collect::<Vec<_>>().join("\n");
            let rows: Vec<_> = points.iter().map(|(s, c)| json!({ "start": s, "count": c })).collect();
            print(json, json!(rows), text);
        }
        Job::Flush { recover } => {
            let report = counters.flush_with(&FlushOptions::new().recover_claims(recover)).await?;
            let mut text = format!(
                "flushed {} counters and {} time buckets in {} batches",
                report.counters, report.slices, report.batches
            );
            if report.recovered > 0 {
                text.push_str(&format!(", {} of them recovered claims of other processes", report.recovered));
            }
            if report.outstanding_claims > 0 {
                let age = report.oldest_claim_age.unwrap_or_default().as_secs_f64();
                text.push_str(&format!(
                    "\n{} claims of other processes are outstanding (the oldest {age:.1} s old): they land when \
                     their process finishes them, or by any flusher once they are older than the claim lease \
                     (30 s), or now with `counters flush --recover`",
                    report.outstanding_claims
                ));
            }
            print(
                json,
                json!({
                    "batches": report.batches,
                    "counters": report.counters,
                    "slices": report.slices,
                    "recovered": report.recovered,
                    "outstanding_claims": report.outstanding_claims,
                    "oldest_claim_age_ms": report.oldest_claim_age.map(|a| a.as_millis() as u64),
                }),
                text,
            );
        }
    }
    Ok(())
}

fn print(json: bool, value: serde_json::Value, text: String) {
    if json {
        println!("{value}");
    } else if !text.is_empty() {
        println!("{text}");
    }
}

/// `counters serve`: reads the `--config` file, checks the settings and
/// binds the listen address before opening any backend (so a bad setting or
/// an address in use creates no file), then serves until SIGINT or SIGTERM
/// and drains.
async fn serve(cache: &str, store: &str, journal: std::path::PathBuf, args: ServeArgs) -> Result<Outcome> {
    let mut config = counters_service::ServiceConfig {
        // An empty token is kept, so that validate refuses it.
        token: args.token,
        read_token: args.read_token,
        public_reads: args.public_reads,
        allowed_hosts: args.allowed_hosts,
        body_limit: args.body_limit,
        header_timeout: args.header_timeout,
        body_timeout: args.body_timeout,
        write_timeout: args.write_timeout,
        max_connections: args.max_connections,
        spill_journal: Some(journal),
        ..counters_service::ServiceConfig::default()
    };
    // The defaults, then the file, then the options (and their variables).
    if let Some(path) = &args.config {
        counters_service::ConfigFile::load(path)?.apply(&mut config);
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(interval) = args.flush_interval {
        config.flush_interval = interval;
    }
    if let Some(sliced) = args.time_sliced {
        config.time_sliced = sliced;
    }
    if let Some(cells) = args.max_pending {
        config.max_pending = cells;
    }
    config.validate()?;
    let listener = counters_service::listen(config.listen).await?;
    let cache = counters::cache_from_url(cache).await?;
    let store = counters::store_from_url(store).await?;
    let service = counters_service::Service::new(cache, store, config)?;
    match service.serve(listener, counters_service::shutdown_signal()).await {
        Ok(_) => Ok(Outcome::Done),
        Err(e) if e.kind() == ErrorKind::Deferred => Ok(Outcome::Counted(e)),
        Err(e) => Err(e),
    }
}
