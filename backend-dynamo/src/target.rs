//! Where the store lives: `dynamodb://TABLE?endpoint=...&region=...`, and
//! the SDK client built for it.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{Credentials, Region};
use counter_core::{Error, ErrorKind, Result, UrlParams, redact_url};

/// A parsed `dynamodb://` URL.
///
/// `dynamodb://TABLE[?options]`: without an endpoint the SDK's usual
/// configuration applies (the `AWS_*` environment variables, profiles,
/// instance roles); with one (a local server), the region defaults to
/// `us-east-1` and, when the environment has no `AWS_ACCESS_KEY_ID`,
/// static placeholder credentials are used, which local servers accept.
///
/// Options (URL query parameters; an unknown or repeated one is a
/// [`Config`](ErrorKind::Config) error):
///
/// | parameter | meaning | default |
/// |---|---|---|
/// | `endpoint` | `http://HOST:PORT` of a local or compatible server | AWS |
/// | `region` | the AWS region | the SDK's configuration |
/// | `create` | create missing tables (`true`/`false`) | `true` |
/// | `connect_timeout` | bound on opening a connection | `3s` |
/// | `response_timeout` | bound on each attempt of a request | `10s` |
///
/// Durations take a unit: `250ms`, `2s`, `1m`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DynamoTarget {
    /// The counters table (`key` string hash key, `counter_value` number).
    pub table: String,
    /// A custom endpoint (a local server), if any.
    pub endpoint: Option<String>,
    /// The region, if given.
    pub region: Option<String>,
    /// Whether missing tables are created (default true).
    pub create: bool,
    /// The `connect_timeout` parameter, or its default.
    pub connect_timeout: Duration,
    /// The `response_timeout` parameter, or its default.
    pub response_timeout: Duration,
}

impl DynamoTarget {
    /// Parses a `dynamodb://` URL; anything malformed is a
    /// [`Config`](ErrorKind::Config) error naming the URL.
    pub fn parse(url: &str) -> Result<DynamoTarget> {
        let bad = |why: &str| Error::new(ErrorKind::Config, format!("bad DynamoDB URL {:?}: {why}", redact_url(url)));
        let rest = url.strip_prefix("dynamodb://").ok_or_else(|| bad("expected dynamodb://TABLE"))?;
        let table = rest.split(['?', '#']).next().unwrap_or(rest);
        check_table_name(table).map_err(|why| bad(&why))?;
        let mut params = UrlParams::parse("DynamoDB", url)?;
        let endpoint = params.text("endpoint");
        if let Some(endpoint) = &endpoint {
            check_endpoint(endpoint).map_err(|why| bad(&why))?;
        }
        let region = params.text("region");
        if let Some(region) = &region {
            if region.is_empty() || !region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(bad("the region may only hold letters, digits and '-'"));
            }
        }
        let create = params.flag("create")?.unwrap_or(true);
        let connect_timeout = params.duration("connect_timeout")?.unwrap_or(Duration::from_secs(3));
        let response_timeout = params.duration("response_timeout")?.unwrap_or(Duration::from_secs(10));
        params.finish()?;
        Ok(DynamoTarget { table: table.to_string(), endpoint, region, create, connect_timeout, response_timeout })
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

/// An endpoint is `http(s)://HOST[:PORT][/PATH]`: a host of letters,
/// digits, `.` and `-` (or a bracketed IPv6 address), a port of 1 to 65535,
/// no credentials (the SDK takes them from `AWS_*`, never from a URL, and
/// would log them), no space, query or fragment. Anything else is a
/// malformed URL, refused before the SDK tries to reach it.
fn check_endpoint(value: &str) -> std::result::Result<(), String> {
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or("the endpoint must be an http:// or https:// URL")?;
    if value.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err("the endpoint contains a space or a control character".into());
    }
    if rest.contains(['?', '#']) {
        return Err("the endpoint may not have a query or a fragment".into());
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err("the endpoint may not carry credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (inside, after) = v6.split_once(']').ok_or("the endpoint's IPv6 address lacks its ']'")?;
        if inside.is_empty() || !inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return Err("the endpoint's IPv6 address is malformed".into());
        }
        match after {
            "" => (inside, None),
            _ => (inside, Some(after.strip_prefix(':').ok_or("the endpoint has text after its IPv6 address")?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the endpoint has no host".into());
    }
    if !authority.starts_with('[') && !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') {
        return Err(format!("the endpoint's host {host:?} may only hold letters, digits, '.' and '-'"));
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => {}
            _ => return Err(format!("the endpoint's port {port:?} is not a number from 1 to 65535")),
        }
    }
    Ok(())
}

/// An SDK client for `target`.
pub(crate) async fn client(target: &DynamoTarget) -> aws_sdk_dynamodb::Client {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(target.connect_timeout)
        .operation_attempt_timeout(target.response_timeout)
        .operation_timeout(Duration::from_secs(30).max(target.response_timeout))
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
        assert_eq!(t.connect_timeout, Duration::from_secs(3));
        let t = DynamoTarget::parse("dynamodb://abc?connect_timeout=500ms&response_timeout=2s").unwrap();
        assert_eq!((t.connect_timeout, t.response_timeout), (Duration::from_millis(500), Duration::from_secs(2)));
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
            "dynamodb://tab?endpoint=http://",
            "dynamodb://tab?endpoint=https://",
            "dynamodb://tab?endpoint=http://bad host:1",
            "dynamodb://tab?endpoint=http://:8000",
            "dynamodb://tab?endpoint=http://h:0",
            "dynamodb://tab?endpoint=http://h:65536",
            "dynamodb://tab?endpoint=http://h:99999",
            "dynamodb://tab?endpoint=http://h:+80",
            "dynamodb://tab?endpoint=http://h:",
            "dynamodb://tab?endpoint=http://h_x:1",
            "dynamodb://tab?endpoint=http://[::1:1",
            "dynamodb://tab?endpoint=http://[]:1",
            "dynamodb://tab?endpoint=http://[::1]x",
            "dynamodb://tab?endpoint=http://h:1?x",
            "dynamodb://tab?endpoint=ftp://h:1",
            "dynamodb://tab?region=a&region=b",
            "dynamodb://tab?create=true&create=false",
            "dynamodb://tab?endpoint=http://h:1&endpoint=http://h:2",
            "dynamodb://tab?region=us east",
            "dynamodb://tab?region=a/b",
            "dynamodb://tab?connect_timeout=3",
            "dynamodb://tab?response_timeout=0s",
        ] {
            let e = DynamoTarget::parse(url).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{url}");
            assert!(e.to_string().contains(url), "{e}");
        }
        let e = DynamoTarget::parse("dynamodb://tab?endpoint=http://u:hunter2@h:1").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains("credentials") && !e.to_string().contains("hunter2"), "{e}");
        for good in
            ["http://127.0.0.1:8011", "https://dynamodb.eu-west-1.amazonaws.com", "http://[::1]:8000/", "http://h"]
        {
            let url = format!("dynamodb://tab?endpoint={good}");
            assert_eq!(DynamoTarget::parse(&url).unwrap().endpoint.as_deref(), Some(good));
        }
    }
}
