//! The suite on a standalone Redis cache over DynamoDB (a local
//! DynamoDB-compatible server), each test on a fresh table.
#![cfg(all(feature = "dynamo", feature = "redis"))]

use std::sync::Arc;

use backend_dynamo::DynamoStore;
use backend_redis::RedisCache;
use conformance::Backends;

async fn setup() -> Option<Backends<RedisCache, DynamoStore>> {
    let cache = conformance::redis::redis_cache("COUNTERS_TEST_REDIS_URL").await?;
    let endpoint = conformance::service_url("COUNTERS_TEST_DYNAMODB_URL")?;
    let url = format!("dynamodb://t{:016x}?endpoint={endpoint}&region=us-east-1", rand::random::<u64>());
    let store = DynamoStore::connect(&url).await.expect("open DynamoDB store");
    Some(Backends::new(Arc::new(cache), Arc::new(store)))
}

conformance::conformance_suite!(setup, model_cases = 12);
