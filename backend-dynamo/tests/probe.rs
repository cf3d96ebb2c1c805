//! A store that cannot keep the protocol is refused when it opens: an
//! endpoint without TransactWriteItems (dynalite), tables whose keys have
//! the wrong types. moto, which has transactions, passes.

mod common;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use backend_dynamo::DynamoStore;
use common::*;
use counter_core::{ApplyOutcome, DurableStore, ErrorKind};

#[tokio::test]
async fn an_endpoint_without_transactions_is_refused_when_the_store_opens() {
    let Some(endpoint) = dynalite_endpoint() else { return };
    let e = DynamoStore::connect(&url(&endpoint, &random_table())).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent, "{e}");
    let text = e.to_string();
    eprintln!("refused as expected: {text}");
    assert!(
        text.contains(&format!("the DynamoDB endpoint {endpoint} does not support TransactWriteItems"))
            && text.contains("exactly once"),
        "{text}"
    );
    assert!(!text.contains('\n'), "{text}");
}

#[tokio::test]
async fn moto_passes_the_probe_and_the_probe_writes_nothing() {
    let Some(endpoint) = endpoint() else { return };
    let table = random_table();
    let store = DynamoStore::connect(&url(&endpoint, &table)).await.unwrap();
    store.probe().await.unwrap();
    let raw = raw_client(&endpoint).await;
    let markers = raw.scan().table_name(format!("{table}.batches")).send().await.unwrap();
    assert_eq!(markers.count(), 0, "the probe wrote nothing: {:?}", markers.items());
    let k = key("probed");
    assert_eq!(store.apply(&counter_batch(&[(&k, 1)])).await.unwrap(), ApplyOutcome::Applied);
    assert_eq!(store.get_many(&[k]).await.unwrap(), [Some(1)]);
}

/// Creates `name` with one hash key `attr` of type `kind`, and waits until
/// it is active.
async fn create_table(raw: &aws_sdk_dynamodb::Client, name: &str, attr: &str, kind: ScalarAttributeType) {
    raw.create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder().attribute_name(attr).attribute_type(kind).build().unwrap(),
        )
        .key_schema(KeySchemaElement::builder().attribute_name(attr).key_type(KeyType::Hash).build().unwrap())
        .send()
        .await
        .unwrap();
    for _ in 0..100 {
        let found = raw.describe_table().table_name(name).send().await.unwrap();
        if found.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("table {name} did not become active");
}

#[tokio::test]
async fn a_counters_table_whose_key_is_a_number_is_refused() {
    let Some(endpoint) = endpoint() else { return };
    let raw = raw_client(&endpoint).await;
    let table = random_table();
    create_table(&raw, &table, "key", ScalarAttributeType::N).await;
    let e = DynamoStore::connect(&url(&endpoint, &table)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent, "{e}");
    let text = e.to_string();
    eprintln!("refused as expected: {text}");
    assert!(text.contains(&format!("{table:?}")) && text.contains("\"key\""), "{text}");
    assert!(text.contains("type N") && text.contains("type S"), "{text}");
}

#[tokio::test]
async fn a_batches_table_whose_id_is_a_number_is_refused() {
    let Some(endpoint) = endpoint() else { return };
    let raw = raw_client(&endpoint).await;
    let table = random_table();
    create_table(&raw, &format!("{table}.batches"), "id", ScalarAttributeType::N).await;
    let e = DynamoStore::connect(&url(&endpoint, &table)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Permanent, "{e}");
    let text = e.to_string();
    eprintln!("refused as expected: {text}");
    assert!(text.contains(&format!("{table}.batches")) && text.contains("\"id\""), "{text}");
    assert!(text.contains("type N") && text.contains("type S"), "{text}");
}
