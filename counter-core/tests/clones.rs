//! `Counters` clones: one engine and one flusher behind every clone, a
//! shutdown through any of them closes all, and the flusher runs in a span
//! named for its backends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use counter_core::{Counters, DurableStore, ErrorKind, Family, Key, MemoryCache, MemoryStore, Policy};
use tracing::span::{Attributes, Id};
use tracing::{Subscriber, field};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

#[tokio::test]
async fn clones_share_one_engine_and_one_shutdown() {
    let store = Arc::new(MemoryStore::new());
    let counters = Counters::builder(Arc::new(MemoryCache::new()), store.clone()).background(false).build().unwrap();
    let key = Key::new("clicks", "ad42").unwrap();
    let clones: Vec<_> = (0..4).map(|_| counters.clone()).collect();
    let tasks: Vec<_> = clones
        .into_iter()
        .map(|c| {
            let key = key.clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    c.incr(&key, 1).await.unwrap();
                }
                c
            })
        })
        .collect();
    let mut clones = Vec::new();
    for t in tasks {
        clones.push(t.await.unwrap());
    }
    assert_eq!(counters.get(&key).await.unwrap(), 400, "every clone counts into the same counter");
    assert_eq!(clones[0].metrics().increments, 400, "and the same metrics");
    clones[1].shutdown().await.unwrap();
    assert_eq!(store.get_many(std::slice::from_ref(&key)).await.unwrap(), vec![Some(400)], "one shutdown drains all");
    for c in clones.iter().chain(std::iter::once(&counters)) {
        assert_eq!(c.incr(&key, 1).await.unwrap_err().kind(), ErrorKind::ShutDown);
    }
}

#[tokio::test]
async fn the_flusher_outlives_dropped_clones_until_the_last() {
    let store = Arc::new(MemoryStore::new());
    let every = Policy::interval(Duration::from_millis(50)).unwrap();
    let counters = Counters::builder(Arc::new(MemoryCache::new()), store.clone())
        .default_family(Family::new(every))
        .tick(Duration::from_millis(10))
        .build()
        .unwrap();
    let key = Key::new("clicks", "ad42").unwrap();
    let clone = counters.clone();
    drop(counters);
    clone.incr(&key, 3).await.unwrap();
    // The background flusher of the dropped handle still runs for the clone.
    let mut stored = None;
    for _ in 0..200 {
        stored = store.get_many(std::slice::from_ref(&key)).await.unwrap()[0];
        if stored.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stored, Some(3));
    clone.shutdown().await.unwrap();
}

/// Records the spans opened and the fields they carry.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<String>>>);

impl<S: Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        struct Fields(String);
        impl field::Visit for Fields {
            fn record_debug(&mut self, f: &field::Field, v: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={v:?}", f.name()));
            }
            fn record_str(&mut self, f: &field::Field, v: &str) {
                self.0.push_str(&format!(" {}={v}", f.name()));
            }
        }
        let mut fields = Fields(attrs.metadata().name().to_string());
        attrs.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
}

#[test]
fn the_flusher_runs_in_a_span_named_for_its_backends() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    tracing::subscriber::with_default(subscriber, || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let counters =
                Counters::builder(Arc::new(MemoryCache::new()), Arc::new(MemoryStore::new())).build().unwrap();
            counters.shutdown().await.unwrap();
        });
    });
    let spans = spans.0.lock().unwrap();
    assert!(spans.iter().any(|s| s == "counters_flusher cache=memory store=memory"), "{spans:?}");
}
