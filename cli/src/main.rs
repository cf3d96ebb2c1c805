//! The `counters` command.
//!
//! Exit codes: 0 success; 2 bad input (invalid key, value, range or URL;
//! overflow); 3 a backend is unavailable (retrying may help); 4 a backend
//! failed for good.

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

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COUNTERS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = args::Args::parse();
    match run::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("counters: {e}");
            ExitCode::from(match e.kind() {
                ErrorKind::InvalidKey | ErrorKind::InvalidInput | ErrorKind::Overflow | ErrorKind::Config => {
                    EXIT_BAD_INPUT
                }
                kind if kind.is_transient() => EXIT_UNAVAILABLE,
                _ => EXIT_FAILED,
            })
        }
    }
}
