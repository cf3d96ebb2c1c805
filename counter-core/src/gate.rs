//! The admission gate: every call of a `Counters` handle passes it, so that
//! `shutdown` can stop admitting calls and wait for the ones in flight
//! before its final drain. Without it, an increment that was admitted just
//! before the drain's last look at the cache would be acknowledged and
//! never flushed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::metrics::stripe;

const STRIPES: usize = 16;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// Calls in flight, counted on striped cache lines (the hot path must not
/// bounce one shared line between cores), and whether the gate is closed.
///
/// A call adds one to its thread's stripe, then reads `closing`; `close`
/// sets `closing`, then sums the stripes. Both sides use sequentially
/// consistent operations, so either the call sees the gate closed (and
/// leaves), or `close` sees the call (and waits for it). A task may leave on
/// another thread than it entered on, so one stripe may wrap below zero;
/// only the wrapping sum means anything.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    calls: [Padded; STRIPES],
    closing: AtomicBool,
}

/// One admitted call; leaving the scope lets the gate forget it.
#[must_use]
pub(crate) struct Admitted<'a> {
    gate: &'a Gate,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.gate.calls[stripe() % STRIPES].0.fetch_sub(1, SeqCst);
    }
}

impl Gate {
    /// Admits a call, or refuses it with [`ErrorKind::ShutDown`] once the
    /// gate is closing.
    pub(crate) fn enter(&self) -> Result<Admitted<'_>> {
        self.calls[stripe() % STRIPES].0.fetch_add(1, SeqCst);
        let admitted = Admitted { gate: self };
        if self.closing.load(SeqCst) {
            return Err(Error::new(ErrorKind::ShutDown, "the counters handle is shut down"));
        }
        Ok(admitted)
    }

    /// Calls admitted and not finished.
    pub(crate) fn in_flight(&self) -> u64 {
        self.calls.iter().fold(0u64, |sum, c| sum.wrapping_add(c.0.load(SeqCst)))
    }

    /// Stops admitting calls and waits until every admitted call finished.
    pub(crate) async fn close(&self) {
        self.closing.store(true, SeqCst);
        // Shutdown is rare and calls are short: polling is simpler than a
        // wake-up on every call's exit.
        while self.in_flight() != 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn close_waits_for_admitted_calls_and_refuses_new_ones() {
        let gate = Arc::new(Gate::default());
        let done = Arc::new(AtomicU64::new(0));
        let admitted = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (gate, done, admitted) = (gate.clone(), done.clone(), admitted.clone());
                tokio::spawn(async move {
                    loop {
                        let Ok(_call) = gate.enter() else { return };
                        admitted.fetch_add(1, SeqCst);
                        tokio::task::yield_now().await;
                        done.fetch_add(1, SeqCst);
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.close().await;
        // Every call admitted before close returned has finished.
        assert_eq!(done.load(SeqCst), admitted.load(SeqCst));
        assert_eq!(gate.enter().err().map(|e| e.kind()), Some(ErrorKind::ShutDown));
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(gate.in_flight(), 0);
    }
}
