//! Cases about what a shared cache remembers per process between
//! increments: a counter registered for a lease gets bare adds, which only
//! a sweep makes visible, and the lease ends while the counter
//! sits idle. Re-exported by [`cases`](crate::cases), stamped for every
//! combination (a cache without leases passes them trivially).

use std::time::Duration;

use counter_core::{CacheLayer, DurableStore};

use crate::cases::eventually;
use crate::harness::Backends;

/// Idle time between two rounds of increments: longer than the lease the
/// suite gives shared caches (one second, see [`crate::redis`]), so
/// registrations expire on both the client's side and the server's.
pub const LEASE_GAP: Duration = Duration::from_millis(2500);

/// Increments spread over a lease, and again after the lease ended while
/// the counter was idle: each is flushed by the background flusher, none
/// waits for another increment to be seen.
pub async fn counters_idle_beyond_a_lease_still_flush<C: CacheLayer + ?Sized, S: DurableStore + ?Sized>(
    b: &Backends<C, S>,
) {
    let c = b.flushing_every(50).build().unwrap();
    let k = b.key("leased");
    let mut expected = 0;
    for round in 0..3 {
        // The first increment of a round registers the counter; the next
        // ones, well within the lease, are bare adds.
        for step in 0..3 {
            expected += 1;
            assert_eq!(c.incr(&k, 1).await.unwrap(), expected);
            let flushed = eventually(Duration::from_secs(5), || async { b.durable(&k).await == Some(expected) }).await;
            assert!(
                flushed,
                "round {round}, increment {step}: the store has {:?}, not {expected}",
                b.durable(&k).await
            );
        }
        tokio::time::sleep(LEASE_GAP).await;
    }
    assert_eq!(c.get(&k).await.unwrap(), expected);
    c.shutdown().await.unwrap();
    assert_eq!(b.durable(&k).await, Some(expected));
}
