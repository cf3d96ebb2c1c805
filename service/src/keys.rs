//! Counter keys in paths, and epoch seconds in requests.

use std::time::SystemTime;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use counters::Key;

use crate::errors::ApiError;

/// The routes that end in a key, by their literal prefix.
const KEY_ROUTES: [&str; 3] = ["/v1/counters/", "/v1/series/", "/v1/inspect/"];

/// Extractor: the counter key of a `/{*key}` route, percent-decoded
/// strictly and validated by [`Key::parse`] (`namespace/name`, or `name` in
/// the default namespace). `clicks%2Fad42%3Aus` and `clicks/ad42:us` are the
/// same key. An invalid key, a `%` not followed by two hex digits, and bytes
/// that are not UTF-8 once decoded are all 400 `invalid_key` with field
/// `key`.
#[derive(Debug, Clone)]
pub struct KeyPath(pub Key);

impl<S: Send + Sync> FromRequestParts<S> for KeyPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let path = parts.uri.path();
        let raw = KEY_ROUTES.iter().find_map(|prefix| path.strip_prefix(prefix)).unwrap_or(path);
        let text = percent_decode(raw).map_err(|why| invalid_key(raw, &why, "key"))?;
        Key::parse(&text).map(KeyPath).map_err(|e| ApiError::from_counters(&e, "key"))
    }
}

/// 400 `invalid_key` naming `field`, for text that does not decode.
pub(crate) fn invalid_key(raw: &str, why: &str, field: &str) -> ApiError {
    let shown: String = raw.chars().take(100).collect();
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_key", format!("invalid {field} {shown:?}: {why}")).with_field(field)
}

/// Decodes `%XX` escapes strictly: every `%` must be followed by two hex
/// digits, and the bytes must be UTF-8. The error says what is wrong.
pub(crate) fn percent_decode(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
            match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                (Some(high), Some(low)) => out.push((high * 16 + low) as u8),
                _ => return Err(format!("bad percent-encoding at byte {i} (a % needs two hex digits)")),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|e| format!("not UTF-8 once percent-decoded (at byte {})", e.utf8_error().valid_up_to()))
}

/// A time `secs` seconds from the epoch (negative: before it), or a 400
/// naming `field` outside years 1 to 9999: the library's
/// [`counters::epoch_time`], so that the CLI and the library refuse the
/// same times.
pub fn epoch(secs: i64, field: &str) -> Result<SystemTime, ApiError> {
    counters::epoch_time(secs)
        .map_err(|_| ApiError::bad_field(field, format!("{field}={secs} is out of range (years 1 to 9999)")))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn percent_decoding_is_strict() {
        assert_eq!(percent_decode("clicks%2Fad42%3aus").unwrap(), "clicks/ad42:us");
        assert_eq!(percent_decode("caf%C3%A9+x").unwrap(), "café+x");
        for bad in ["%zz", "%", "a%2", "%G0x", "x%", "%FF", "%C3%28", "%C0%AF", "%ED%A0%80"] {
            assert!(percent_decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn epoch_seconds_in_and_out_of_range() {
        assert_eq!(epoch(5, "at").unwrap(), UNIX_EPOCH + Duration::from_secs(5));
        assert_eq!(epoch(-5, "at").unwrap(), UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(epoch(i64::MAX, "at").unwrap_err().field.as_deref(), Some("at"));
    }
}
