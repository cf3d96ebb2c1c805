//! Convergence across the whole i64 range: a drift of more than i64::MAX
//! (the cache at i64::MIN, the store back at 0) still converges.

use std::sync::Arc;

use counter_core::{Counters, DurableStore, Key, MemoryCache, MemoryStore};

fn handle(store: &Arc<MemoryStore>) -> Counters<MemoryCache, MemoryStore> {
    Counters::builder(Arc::new(MemoryCache::new()), store.clone()).background(false).build().unwrap()
}

#[tokio::test]
async fn a_drift_beyond_i64_converges_in_steps() {
    let store = Arc::new(MemoryStore::new());
    let (a, b) = (handle(&store), handle(&store));
    let key = Key::new("ns", "wide").unwrap();
    for (start, external) in [(i64::MIN, 0), (i64::MIN, i64::MAX), (i64::MAX, i64::MIN), (i64::MIN + 5, 7)] {
        a.put(&key, start).await.unwrap();
        a.flush().await.unwrap();
        assert_eq!(a.get(&key).await.unwrap(), start);
        // Another writer of the store moves the counter by more than i64::MAX.
        b.put(&key, external).await.unwrap();
        b.flush().await.unwrap();
        a.converge().await.unwrap();
        assert_eq!(a.get(&key).await.unwrap(), external, "from {start} to {external}");
        // And it counts on from there.
        let step = if external == i64::MIN { 1 } else { -1 };
        assert_eq!(a.incr(&key, step).await.unwrap(), external + step);
        a.flush().await.unwrap();
        assert_eq!(store.get_many(std::slice::from_ref(&key)).await.unwrap(), [Some(external + step)]);
    }
}
