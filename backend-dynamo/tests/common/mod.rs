//! What the DynamoDB tests share: the local server's endpoint (a missing
//! one fails under CI and skips loudly elsewhere), fresh tables, batches.
#![allow(dead_code)]

use backend_dynamo::{DynamoOptions, DynamoStore, DynamoTarget};
use counter_core::{Batch, BatchEntry, BatchId, Cell, Key, Precision, SliceId};

pub fn endpoint() -> Option<String> {
    match std::env::var("COUNTERS_TEST_DYNAMODB_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let ci = matches!(std::env::var("CI").as_deref(), Ok("true" | "1"));
            assert!(!ci, "COUNTERS_TEST_DYNAMODB_URL is not set and CI=true: a missing service is a failure");
            eprintln!("\n*** SKIPPING: COUNTERS_TEST_DYNAMODB_URL is not set; run ./scripts/test to start it. ***\n");
            None
        }
    }
}

pub fn random_table() -> String {
    format!("t{:016x}", rand::random::<u64>())
}

pub fn url(endpoint: &str, table: &str) -> String {
    format!("dynamodb://{table}?endpoint={endpoint}&region=us-east-1")
}

/// A store on a fresh table of the local server.
pub async fn fresh_store(endpoint: &str) -> DynamoStore {
    DynamoStore::connect(&url(endpoint, &random_table())).await.expect("open DynamoDB store")
}

pub async fn store_on(endpoint: &str, table: &str) -> DynamoStore {
    let target = DynamoTarget::parse(&url(endpoint, table)).unwrap();
    DynamoStore::connect_with(target, DynamoOptions::default()).await.expect("open DynamoDB store")
}

pub fn key(name: &str) -> Key {
    Key::named(name).unwrap()
}

pub fn counter_batch(entries: &[(&Key, i64)]) -> Batch {
    Batch::claimed(
        BatchId::new(),
        entries.iter().map(|(k, d)| BatchEntry { cell: Cell::Counter((*k).clone()), delta: *d }).collect(),
    )
}

pub fn slice_entry(k: &Key, precision: u32, start: i64, delta: i64) -> BatchEntry {
    let precision = Precision::from_secs(precision).unwrap();
    BatchEntry { cell: Cell::Slice(SliceId { key: k.clone(), precision, start }), delta }
}
