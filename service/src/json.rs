//! Request input: JSON bodies and query strings, with errors that name the
//! field at fault.

use std::collections::HashMap;
use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::errors::ApiError;
use crate::state::AppState;

/// Extractor: a JSON body deserialized into `T`. An empty body counts as
/// `{}`. A malformed body is 400 naming the field (`delta`,
/// `policy.threshold`, `keys[2]`, or `body` for bad syntax); a body over the
/// limit is 413.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(state.info.body_limit)
            } else {
                ApiError::bad_field("body", format!("could not read the body: {rejection}"))
            }
        })?;
        parse(if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes }).map(JsonBody)
    }
}

/// Deserializes `bytes`, naming the field at fault on error.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if inner.is_syntax() || inner.is_eof() || path == "." { "body".to_string() } else { path };
        ApiError::bad_field(field, format!("the JSON body is not valid: {inner}"))
    })?;
    deserializer.end().map_err(|e| ApiError::bad_field("body", format!("the JSON body is not valid: {e}")))?;
    Ok(value)
}

/// A query string's parameters, each parsed on demand with errors naming it.
#[derive(Debug)]
pub struct Params(HashMap<String, String>);

impl Params {
    /// The parameters, refusing any not in `allowed` (a typo would otherwise
    /// be silently ignored).
    pub fn new(params: HashMap<String, String>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut unknown: Vec<&String> = params.keys().filter(|k| !allowed.contains(&k.as_str())).collect();
        unknown.sort();
        if let Some(first) = unknown.first() {
            return Err(ApiError::bad_field(
                first.as_str(),
                format!("unknown query parameter {first:?} (known: {})", allowed.join(", ")),
            ));
        }
        Ok(Params(params))
    }

    /// A text parameter, `""` when absent.
    pub fn text(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }

    /// A parsed parameter, `None` when absent or empty.
    pub fn parsed<T: FromStr>(&self, name: &str) -> Result<Option<T>, ApiError>
    where
        T::Err: std::fmt::Display,
    {
        match self.0.get(name).map(|v| v.trim()) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|e| ApiError::bad_field(name, format!("query parameter {name}={v:?} is not valid: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        delta: Option<i64>,
        inner: Option<Inner>,
        keys: Option<Vec<String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        threshold: Option<u64>,
    }

    fn field(json: &str) -> String {
        parse::<Body>(json.as_bytes()).unwrap_err().field.unwrap().into()
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field(r#"{"delta": "x"}"#), "delta");
        assert_eq!(field(r#"{"delta": 9223372036854775808}"#), "delta");
        assert_eq!(field(r#"{"inner": {"threshold": -1}}"#), "inner.threshold");
        assert_eq!(field(r#"{"keys": ["a", 1]}"#), "keys[1]");
        assert_eq!(field(r#"{"detla": 1}"#), "detla");
        assert_eq!(field(r#"{"delta": 1"#), "body");
        assert_eq!(field(r#"{"delta": 1} trailing"#), "body");
        assert_eq!(field("[1]"), "body");
        assert_eq!(parse::<Body>(b"{}").unwrap().delta, None);
    }

    #[test]
    fn params_refuse_unknown_names_and_name_bad_values() {
        let map = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let e = Params::new(map(&[("limt", "1")]), &["limit"]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("limt"));
        let p = Params::new(map(&[("limit", "x"), ("top", "")]), &["limit", "top"]).unwrap();
        assert_eq!(p.parsed::<usize>("limit").unwrap_err().field.as_deref(), Some("limit"));
        assert_eq!(p.parsed::<usize>("top").unwrap(), None);
        assert_eq!(p.text("nothing"), "");
    }
}
