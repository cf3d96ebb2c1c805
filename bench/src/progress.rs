//! A progress bar per phase on standard error (hidden when asked, or when
//! standard error is not a terminal).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::driver::LoadSpec;
use crate::report::si;

/// The progress display of one phase.
#[derive(Debug)]
pub struct PhaseProgress {
    bar: ProgressBar,
    by_count: bool,
}

impl PhaseProgress {
    /// A bar for a phase named `name` that runs as `spec` says.
    pub fn new(name: &str, spec: &LoadSpec, visible: bool) -> PhaseProgress {
        let by_count = spec.increments.is_some();
        let length = match (spec.increments, spec.duration) {
            (Some(n), _) => n,
            (None, Some(d)) => d.as_millis() as u64,
            (None, None) => 0,
        };
        let bar = ProgressBar::with_draw_target(Some(length), target(visible));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>28} [{bar:30}] {percent:>3}% {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(name.to_string());
        PhaseProgress { bar, by_count }
    }

    /// A bar without a known length (a spinner with a message).
    pub fn spinner(name: &str, visible: bool) -> PhaseProgress {
        let bar = ProgressBar::with_draw_target(None, target(visible));
        bar.set_style(ProgressStyle::with_template("{prefix:>28} {spinner} {msg}").expect("a valid template"));
        bar.set_prefix(name.to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        PhaseProgress { bar, by_count: false }
    }

    /// Shows `done` increments after `elapsed`.
    pub fn update(&self, done: u64, elapsed: Duration) {
        self.bar.set_position(if self.by_count { done } else { elapsed.as_millis() as u64 });
        let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
        self.bar.set_message(format!("{} increments, {} ops/s", si(done as f64), si(rate)));
    }

    /// Shows a message.
    pub fn message(&self, text: impl Into<String>) {
        self.bar.set_message(text.into());
    }

    /// Ends the display.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn target(visible: bool) -> ProgressDrawTarget {
    if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() }
}
