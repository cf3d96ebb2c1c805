//! Request input: JSON bodies and query strings, with errors that name the
//! field at fault.

use std::collections::HashMap;
use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::{Deserialize, DeserializeOwned, Deserializer};

use crate::errors::ApiError;
use crate::keys::{invalid_key, percent_decode};
use crate::state::AppState;

/// Extractor: a JSON body deserialized into `T`. An empty body counts as
/// `{}`. A body must be declared `Content-Type: application/json` (415
/// otherwise: no CORS-simple type such as `text/plain` or a form can carry
/// one); an empty body may come without a type. A malformed body is 400
/// naming the field (`delta`, `policy.threshold`, `keys[2]`, or `body` for
/// bad syntax); a body over the limit is 413; one that does not arrive
/// within the body timeout is 408.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let declared = declared_type(request.headers())?;
        let limit = state.info.body_limit;
        let length = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if length.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::too_large(limit));
        }
        let timeout = state.info.body_timeout;
        let read = tokio::time::timeout(timeout, Bytes::from_request(request, state));
        let bytes = read.await.map_err(|_| ApiError::body_timeout(timeout))?.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(limit)
            } else {
                ApiError::bad_field("body", format!("could not read the body: {rejection}"))
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return parse(b"{}").map(JsonBody);
        }
        if declared.is_none() {
            return Err(ApiError::unsupported_media_type("no Content-Type"));
        }
        parse(&bytes).map(JsonBody)
    }
}

/// The request's `Content-Type` when it is `application/json` (parameters
/// such as `charset=utf-8` allowed), `None` when absent; 415 for any other.
fn declared_type(headers: &HeaderMap) -> Result<Option<()>, ApiError> {
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    let Some(value) = types.next() else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("");
    let essence = text.split(';').next().unwrap_or("").trim();
    if types.next().is_some() || !essence.eq_ignore_ascii_case("application/json") {
        let shown: String = String::from_utf8_lossy(value.as_bytes()).chars().take(100).collect();
        return Err(ApiError::unsupported_media_type(&shown));
    }
    Ok(Some(()))
}

/// For `#[serde(default, deserialize_with = "present")]` on an `Option`
/// field: absent is `None`, but an explicit `null` is an error naming the
/// field (it is not "use the default").
pub(crate) fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Deserializes `bytes`, which must be one JSON object (an array would
/// fill the fields by position), naming the field at fault on error.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::bad_field("body", "the JSON body must be an object ({...})"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // A number too large even for a float is a syntax error of the
        // parser, but it is the field's value that is wrong.
        let in_value = inner.is_syntax() && inner.to_string().starts_with("number out of range");
        let syntax = (inner.is_syntax() && !in_value) || inner.is_eof();
        let message = inner.to_string();
        let duplicate = message.strip_prefix("duplicate field `").and_then(|m| m.split_once('`')).map(|(f, _)| f);
        let field = match duplicate {
            Some(name) if path == "." => name.to_string(),
            Some(name) => format!("{path}.{name}"),
            None if syntax || path == "." => "body".to_string(),
            None => path,
        };
        ApiError::bad_field(field, format!("the JSON body is not valid: {inner}"))
    })?;
    deserializer.end().map_err(|e| ApiError::bad_field("body", format!("the JSON body is not valid: {e}")))?;
    Ok(value)
}

/// Query parameters whose values are namespaces or name prefixes: a value
/// that does not decode is an invalid key, like a bad key in a path.
const KEY_PARAMS: [&str; 2] = ["namespace", "prefix"];

/// A query string's parameters, decoded strictly and each parsed on demand
/// with errors naming it.
#[derive(Debug)]
pub struct Params(HashMap<String, String>);

impl Params {
    /// The parameters of `query` (`a=1&b=2`; `+` is a space, `%XX` escapes
    /// must be well formed and decode to UTF-8), refusing any not in
    /// `allowed` (a typo would otherwise be silently ignored) and any given
    /// twice.
    pub fn new(query: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut params = HashMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(raw_name)
                .map_err(|why| ApiError::bad_field("query", format!("query parameter name {raw_name:?}: {why}")))?;
            if !allowed.contains(&name.as_str()) {
                let shown: String = name.chars().take(100).collect();
                return Err(ApiError::bad_field(
                    shown.clone(),
                    format!("unknown query parameter {shown:?} (known: {})", allowed.join(", ")),
                ));
            }
            let value = decode(raw_value).map_err(|why| match KEY_PARAMS.contains(&name.as_str()) {
                true => invalid_key(raw_value, &why, &name),
                false => ApiError::bad_field(name.clone(), format!("query parameter {name}={raw_value:?}: {why}")),
            })?;
            if params.contains_key(&name) {
                return Err(ApiError::bad_field(name.clone(), format!("query parameter {name} is given twice")));
            }
            params.insert(name, value);
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

/// One query component: `+` is a space, then strict percent-decoding.
fn decode(raw: &str) -> Result<String, String> {
    percent_decode(&raw.replace('+', " "))
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
        let e = Params::new(Some("limt=1"), &["limit"]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("limt"));
        let p = Params::new(Some("limit=x&top="), &["limit", "top"]).unwrap();
        assert_eq!(p.parsed::<usize>("limit").unwrap_err().field.as_deref(), Some("limit"));
        assert_eq!(p.parsed::<usize>("top").unwrap(), None);
        assert_eq!(p.text("nothing"), "");
        let p = Params::new(Some("prefix=a+b%2Bc&&namespace=%C3%A9"), &["prefix", "namespace"]).unwrap();
        assert_eq!((p.text("prefix"), p.text("namespace")), ("a b+c", "é"));
        let e = Params::new(Some("prefix=%FF"), &["prefix"]).unwrap_err();
        assert_eq!((e.kind, e.field.as_deref()), ("invalid_key", Some("prefix")));
        let e = Params::new(Some("limit=1&limit=2"), &["limit"]).unwrap_err();
        assert_eq!((e.kind, e.field.as_deref()), ("invalid_input", Some("limit")));
    }
}
