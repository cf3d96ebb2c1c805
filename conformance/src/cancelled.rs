//! Callers that give up: an increment whose future is dropped part way
//! (a request cancelled, a caller's own timeout) must fail no one else and
//! count at most once. Shared caches send concurrent callers' commands
//! together (memcached's shared writes, Redis's multiplexed connection),
//! so one caller giving up must not take the others' answers with it.
//! Re-exported by [`cases`](crate::cases), stamped for every combination.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::SeqCst};
use std::time::Duration;

use counter_core::{CacheLayer, DurableStore};

use crate::harness::Backends;

/// Tasks incrementing one counter.
const TASKS: usize = 300;

/// Increments each task makes, one after the other.
const EACH: usize = 20;

/// Tasks incrementing one counter, a third of them aborted at staggered
/// moments over the wave (before they start, between increments, and with
/// an increment in flight): every task not aborted makes all its
/// increments, and the total lies between the increments acknowledged and
/// those plus one per aborted task (the one it had in flight, if any); the
/// store ends with it.
pub async fn cancelled_increments_fail_no_one_else_and_count_at_most_once<
    C: CacheLayer + ?Sized,
    S: DurableStore + ?Sized,
>(
    b: &Backends<C, S>,
) {
    let c = Arc::new(b.counters());
    let k = b.key("cancelled");
    c.incr(&k, 1).await.unwrap();
    let acknowledged = Arc::new(AtomicI64::new(1));
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let (c, k, acknowledged) = (c.clone(), k.clone(), acknowledged.clone());
            tokio::spawn(async move {
                for n in 0..EACH {
                    if let Err(e) = c.incr(&k, 1).await {
                        panic!("task {i}, increment {n}: {e}");
                    }
                    acknowledged.fetch_add(1, SeqCst);
                }
            })
        })
        .collect();
    for (i, task) in tasks.iter().enumerate().step_by(3) {
        let handle = task.abort_handle();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros(400 * (i as u64 % 50))).await;
            handle.abort();
        });
    }
    let mut aborted = 0i64;
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok(()) => {}
            Err(e) if e.is_cancelled() => aborted += 1,
            Err(e) => panic!("task {i} failed although it was not aborted: {e}"),
        }
    }
    let acknowledged = acknowledged.load(SeqCst);
    c.flush().await.unwrap();
    let total = c.get(&k).await.unwrap();
    assert!(
        (acknowledged..=acknowledged + aborted).contains(&total),
        "total {total}: {acknowledged} increments acknowledged, {aborted} tasks aborted"
    );
    assert_eq!(b.durable(&k).await, Some(total), "the store has the total");
    c.shutdown().await.unwrap();
}
