//! What the DynamoDB tests share: the local server's endpoint (a missing
//! one fails under CI and skips loudly elsewhere), fresh tables, batches.
#![allow(dead_code)]

use backend_dynamo::{DynamoOptions, DynamoStore, DynamoTarget};
use counter_core::{Batch, BatchEntry, BatchId, Cell, Key, Precision, SliceId};

/// The endpoint of the moto server (`COUNTERS_TEST_DYNAMODB_URL`).
pub fn endpoint() -> Option<String> {
    service("COUNTERS_TEST_DYNAMODB_URL")
}

/// The endpoint of the dynalite server, a DynamoDB without transactions
/// (`COUNTERS_TEST_DYNALITE_URL`, started by `scripts/services/dynalite.sh`).
pub fn dynalite_endpoint() -> Option<String> {
    service("COUNTERS_TEST_DYNALITE_URL")
}

/// A service's URL from `variable`; a missing one fails under CI and skips
/// loudly elsewhere.
fn service(variable: &str) -> Option<String> {
    conformance::service_url(variable)
}

/// A raw SDK client for the local server at `endpoint`.
pub async fn raw_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    use aws_config::BehaviorVersion;
    use aws_sdk_dynamodb::config::{Credentials, Region};
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "counters-test"))
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&config)
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
