//! The three tables of a store, created on demand (on-demand billing) and
//! checked when they exist.
//!
//! | table | keys | attributes |
//! |---|---|---|
//! | `TABLE` | `key` (S, hash) | `counter_value` (N): the layout of Python's `distributed_counter` |
//! | `TABLE.slices` | `series` (S, hash) = `<precision>:<key>`, `start` (N, range) | `count` (N), `expires` (N, TTL) |
//! | `TABLE.batches` | `id` (S, hash) = batch identity, or a split marker | `expires` (N, TTL) |

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification,
};
use counter_core::{Error, ErrorKind, Result};
use tracing::{info, warn};

use crate::errors::map_sdk;

/// Attribute names of the layout.
pub(crate) mod attr {
    /// Hash key of the counters table (distributed_counter's `KEY_COLUMN_NAME`).
    pub(crate) const KEY: &str = "key";
    /// Value of a counter (distributed_counter's `VALUE_COLUMN_NAME`).
    pub(crate) const VALUE: &str = "counter_value";
    /// Hash key of the slices table.
    pub(crate) const SERIES: &str = "series";
    /// Range key of the slices table: bucket start, epoch seconds.
    pub(crate) const START: &str = "start";
    /// A bucket's count.
    pub(crate) const COUNT: &str = "count";
    /// Hash key of the batches table.
    pub(crate) const ID: &str = "id";
    /// Expiry for DynamoDB's TTL, epoch seconds.
    pub(crate) const EXPIRES: &str = "expires";
}

/// The names of one store's tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tables {
    pub(crate) counters: String,
    pub(crate) slices: String,
    pub(crate) batches: String,
}

impl Tables {
    pub(crate) fn new(base: &str) -> Tables {
        Tables { counters: base.to_string(), slices: format!("{base}.slices"), batches: format!("{base}.batches") }
    }
}

struct Shape {
    keys: Vec<(&'static str, ScalarAttributeType, KeyType)>,
    ttl: bool,
}

fn shapes(tables: &Tables) -> [(String, Shape); 3] {
    use attr::*;
    [
        (tables.counters.clone(), Shape { keys: vec![(KEY, ScalarAttributeType::S, KeyType::Hash)], ttl: false }),
        (
            tables.slices.clone(),
            Shape {
                keys: vec![
                    (SERIES, ScalarAttributeType::S, KeyType::Hash),
                    (START, ScalarAttributeType::N, KeyType::Range),
                ],
                ttl: true,
            },
        ),
        (tables.batches.clone(), Shape { keys: vec![(ID, ScalarAttributeType::S, KeyType::Hash)], ttl: true }),
    ]
}

/// Makes sure every table exists with the expected keys (names, roles and
/// types: a `key` of type N would take no counter), creating missing ones
/// when `create` (and waiting until they are active). An existing table
/// with the expected keys is used as it is.
pub(crate) async fn ensure(client: &Client, tables: &Tables, create: bool) -> Result<()> {
    for (name, shape) in shapes(tables) {
        match client.describe_table().table_name(&name).send().await {
            Ok(found) => {
                let schema = found.table().map(|t| t.key_schema()).unwrap_or_default();
                let matches = schema.len() == shape.keys.len()
                    && shape.keys.iter().all(|(attr, _, kind)| {
                        schema.iter().any(|k| k.attribute_name() == *attr && k.key_type() == kind)
                    });
                if !matches {
                    return Err(Error::new(
                        ErrorKind::Permanent,
                        format!("DynamoDB table {name:?} exists with other keys than this store's layout needs"),
                    ));
                }
                let definitions = found.table().map(|t| t.attribute_definitions()).unwrap_or_default();
                for (attr, kind, _) in &shape.keys {
                    let found = definitions.iter().find(|d| d.attribute_name() == *attr).map(|d| d.attribute_type());
                    if found != Some(kind) {
                        let found = found.map_or("an undeclared type", |t| t.as_str());
                        return Err(Error::new(
                            ErrorKind::Permanent,
                            format!(
                                "DynamoDB table {name:?} has its key attribute {attr:?} of type {found}, but this \
                                 store's layout needs type {}; refusing to use it",
                                kind.as_str()
                            ),
                        ));
                    }
                }
                wait_active(client, &name).await?;
            }
            Err(e) if e.code() == Some("ResourceNotFoundException") && create => {
                create_table(client, &name, &shape).await?;
            }
            Err(e) => return Err(map_sdk(e, "DescribeTable", &name)),
        }
    }
    Ok(())
}

async fn create_table(client: &Client, name: &str, shape: &Shape) -> Result<()> {
    let mut request = client.create_table().table_name(name).billing_mode(BillingMode::PayPerRequest);
    for (attr, kind, key) in &shape.keys {
        request = request
            .attribute_definitions(
                AttributeDefinition::builder().attribute_name(*attr).attribute_type(kind.clone()).build().expect("set"),
            )
            .key_schema(KeySchemaElement::builder().attribute_name(*attr).key_type(key.clone()).build().expect("set"));
    }
    match request.send().await {
        Ok(_) => info!(table = name, "created DynamoDB table (on-demand billing)"),
        // Another process created it meanwhile: use it.
        Err(e) if e.code() == Some("ResourceInUseException") => {}
        Err(e) => return Err(map_sdk(e, "CreateTable", name)),
    }
    wait_active(client, name).await?;
    if shape.ttl {
        let spec = TimeToLiveSpecification::builder().enabled(true).attribute_name(attr::EXPIRES).build().expect("set");
        if let Err(e) = client.update_time_to_live().table_name(name).time_to_live_specification(spec).send().await {
            // TTL is a backstop; the cleaner and batch markers do not depend on it.
            warn!(table = name, error = %map_sdk(e, "UpdateTimeToLive", name), "could not enable TTL");
        }
    }
    Ok(())
}

async fn wait_active(client: &Client, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let found =
            client.describe_table().table_name(name).send().await.map_err(|e| map_sdk(e, "DescribeTable", name))?;
        if found.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::new(ErrorKind::Unavailable, format!("DynamoDB table {name:?} did not become active")));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
