//! The suite on the in-process cache over DynamoDB (a local
//! DynamoDB-compatible server), each test on a fresh table.
#![cfg(feature = "dynamo")]

use std::sync::Arc;

use backend_dynamo::DynamoStore;
use conformance::Backends;
use counter_core::MemoryCache;

async fn setup() -> Option<Backends<MemoryCache, DynamoStore>> {
    let endpoint = conformance::service_url("COUNTERS_TEST_DYNAMODB_URL")?;
    let url = format!("dynamodb://t{:016x}?endpoint={endpoint}&region=us-east-1", rand::random::<u64>());
    let store = DynamoStore::connect(&url).await.expect("open DynamoDB store");
    Some(Backends::new(Arc::new(MemoryCache::new()), Arc::new(store)))
}

conformance::conformance_suite!(setup, model_cases = 12);
