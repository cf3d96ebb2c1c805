//! Where the store lives: `dynamodb://TABLE?endpoint=...&region=...`, and
//! the SDK client built for it.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{Credentials, Region};
use counter_core::{Error, ErrorKind, Result};

/// A parsed `dynamodb://` URL.
///
/// `dynamodb://TABLE[?endpoint=http://HOST:PORT][&region=REGION][&create=false]`:
/// without an endpoint the SDK's usual configuration applies (the
/// `AWS_*` environment variables, profiles, instance roles); with one (a
/// local server), the region defaults to `us-east-1` and, when the
/// environment has no `AWS_ACCESS_KEY_ID`, static placeholder credentials
/// are used, which local servers accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoTarget {
    /// The counters table (`key` string hash key, `counter_value` number).
    pub table: String,
    /// A custom endpoint (a local server), if any.
    pub endpoint: Option<String>,
    /// The region, if given.
    pub region: Option<String>,
    /// Whether missing tables are created (default true).
    pub create: bool,
}

impl DynamoTarget {
    /// Parses a `dynamodb://` URL; anything malformed is a
    /// [`Config`](ErrorKind::Config) error naming the URL.
    pub fn parse(url: &str) -> Result<DynamoTarget> {
        let bad = |why: &str| Error::new(ErrorKind::Config, format!("bad DynamoDB URL {url:?}: {why}"));
        let rest = url.strip_prefix("dynamodb://").ok_or_else(|| bad("expected dynamodb://TABLE"))?;
        let (table, query) = rest.split_once('?').unwrap_or((rest, ""));
        check_table_name(table).map_err(|why| bad(&why))?;
        let mut target = DynamoTarget { table: table.to_string(), endpoint: None, region: None, create: true };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "endpoint" => {
                    if !(value.starts_with("http://") || value.starts_with("https://")) {
                        return Err(bad("endpoint must be an http:// or https:// URL"));
                    }
                    target.endpoint = Some(value.to_string());
                }
                "region" if !value.is_empty() => target.region = Some(value.to_string()),
                "create" => {
                    target.create = value.parse().map_err(|_| bad("create must be true or false"))?;
                }
                _ => {
                    return Err(bad(&format!("unknown or empty parameter {name:?} (known: endpoint, region, create)")));
                }
            }
        }
        Ok(target)
    }
}

/// DynamoDB table names: 3 to 255 of `a-z A-Z 0-9 _ - .`. Our two side
/// tables append up to 8 characters.
fn check_table_name(table: &str) -> std::result::Result<(), String> {
    if !(3..=247).contains(&table.len()) {
        return Err("the table name must have 3 to 247 characters".into());
    }
    if !table.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
        return Err("the table name may only hold letters, digits, '_', '-' and '.'".into());
    }
    Ok(())
}

/// An SDK client for `target`.
pub(crate) async fn client(target: &DynamoTarget) -> aws_sdk_dynamodb::Client {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(30))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
    if let Some(region) = &target.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &target.endpoint {
        loader = loader.endpoint_url(endpoint);
        if target.region.is_none() && std::env::var_os("AWS_REGION").is_none() {
            loader = loader.region(Region::new("us-east-1"));
        }
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            loader = loader.credentials_provider(Credentials::new("local", "local", None, None, "counters-local"));
        }
    }
    aws_sdk_dynamodb::Client::new(&loader.load().await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let t = DynamoTarget::parse("dynamodb://counters?endpoint=http://127.0.0.1:8011&region=eu-west-1").unwrap();
        assert_eq!(t.table, "counters");
        assert_eq!(t.endpoint.as_deref(), Some("http://127.0.0.1:8011"));
        assert_eq!(t.region.as_deref(), Some("eu-west-1"));
        assert!(t.create);
        assert!(!DynamoTarget::parse("dynamodb://abc?create=false").unwrap().create);
    }

    #[test]
    fn malformed_urls_are_config_errors() {
        for url in [
            "dynamo://t",
            "dynamodb://",
            "dynamodb://ab",
            "dynamodb://a b c",
            "dynamodb://t/x",
            "dynamodb://tab?endpoint=127.0.0.1:1",
            "dynamodb://tab?color=red",
            "dynamodb://tab?region=",
            "dynamodb://tab?create=maybe",
        ] {
            let e = DynamoTarget::parse(url).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{url}");
            assert!(e.to_string().contains(url), "{e}");
        }
    }
}
