//! Counter keys in paths, and epoch seconds in requests.

use std::time::SystemTime;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use counters::Key;

use crate::errors::ApiError;

/// Extractor: the counter key of a `/{*key}` route, percent-decoded and
/// validated by [`Key::parse`] (`namespace/name`, or `name` in the default
/// namespace). `clicks%2Fad42%3Aus` and `clicks/ad42:us` are the same key.
/// An invalid key is 400 with field `key`.
#[derive(Debug, Clone)]
pub struct KeyPath(pub Key);

impl<S: Send + Sync> FromRequestParts<S> for KeyPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_field("key", format!("the key in the path is not valid: {e}")))?;
        Key::parse(&raw).map(KeyPath).map_err(|e| ApiError::from_counters(&e, "key"))
    }
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
    fn epoch_seconds_in_and_out_of_range() {
        assert_eq!(epoch(5, "at").unwrap(), UNIX_EPOCH + Duration::from_secs(5));
        assert_eq!(epoch(-5, "at").unwrap(), UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(epoch(i64::MAX, "at").unwrap_err().field.as_deref(), Some("at"));
    }
}
