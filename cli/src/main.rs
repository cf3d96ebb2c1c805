//! The `counters` command.
//!
//! Exit codes: 0 success (for `serve`: stopped by SIGINT/SIGTERM and
//! drained); 2 bad input (invalid key, namespace or prefix; a value or time
//! out of range; a series over `counters::MAX_SERIES_BUCKETS` buckets; an
//! event older than every retention; a malformed URL; overflow; arguments
//! clap refuses; for `serve`, bad settings or an address it cannot listen
//! on; an idempotency key reused with another increment); 3 a backend is
//! unavailable (retrying may help); 4 a backend failed for good; 5 (for
//! `serve`) the drain did not land everything: what is left is held in the
//! spill journal or the shared cache and lands later, exactly once.
//!
//! A one-shot command whose work was done (an increment counted, a value
//! set) exits 0 even when not all of it reached the store yet: it is held
//! and lands later, exactly once, and a warning on stderr says where.
//! Retrying it would count twice (unless it has an idempotency key).

mod args;
mod run;

use std::process::ExitCode;

use clap::Parser;
use counters::ErrorKind;

/// Exit code for bad input.
const EXIT_BAD_INPUT: u8 = 2;
/// Exit code for a transient backend failure.
const EXIT_UNAVAILABLE: u8 = 3;
/// Exit code for a permanent backend failure.
const EXIT_FAILED: u8 = 4;
/// Exit code of `serve` for "drained, but not all in the store yet: held,
/// lands later".
const EXIT_SERVE_HELD: u8 = 5;

/// Log levels when `COUNTERS_LOG` is unset: warnings for one-shot commands;
/// for `serve`, also the service's and the engine's info lines (listening,
/// shutdown, what was flushed).
const LOG_DEFAULT: &str = "warn";
const LOG_DEFAULT_SERVE: &str = "warn,counters_service=info,counter_core=info";

#[tokio::main]
async fn main() -> ExitCode {
    let args = args::Args::parse();
    let serving = matches!(args.command, args::Command::Serve(_));
    let default = if serving { LOG_DEFAULT_SERVE } else { LOG_DEFAULT };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COUNTERS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run::run(args).await {
        Ok(run::Outcome::Done) => ExitCode::SUCCESS,
        Ok(run::Outcome::Counted(e)) if serving => {
            eprintln!("counters: drained, but not all of it is in the store yet: {e}");
            ExitCode::from(EXIT_SERVE_HELD)
        }
        Ok(run::Outcome::Counted(e)) => counted(&e),
        Err(e) if e.kind() == ErrorKind::Deferred && !serving => counted(&e),
        Err(e) => {
            eprintln!("counters: {e}");
            ExitCode::from(match e.kind() {
                ErrorKind::InvalidKey
                | ErrorKind::InvalidInput
                | ErrorKind::Overflow
                | ErrorKind::Config
                | ErrorKind::Conflict => EXIT_BAD_INPUT,
                ErrorKind::Deferred => EXIT_SERVE_HELD,
                kind if kind.is_transient() => EXIT_UNAVAILABLE,
                _ => EXIT_FAILED,
            })
        }
    }
}

/// A one-shot command that counted but could not land everything: exit 0,
/// with a warning saying where it is held.
fn counted(e: &counters::Error) -> ExitCode {
    eprintln!("counters: warning: counted, but not all of it is in the store yet (do not retry): {e}");
    ExitCode::SUCCESS
}
