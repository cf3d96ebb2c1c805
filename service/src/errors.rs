//! HTTP errors: one JSON shape for every failure, and the one mapping from
//! the library's [`ErrorKind`]s to status codes.
//!
//! ```json
//! {"error": {"status": 400, "kind": "invalid_key", "field": "key", "key": "clicks/",
//!            "message": "invalid key \"clicks/\": name is empty"}}
//! ```

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use counters::{Error, ErrorKind};
use serde::Serialize;

/// How long a client should wait before retrying after backpressure.
pub const RETRY_AFTER_BACKPRESSURE: Duration = Duration::from_secs(1);
/// How long a client should wait before retrying when a backend is unavailable
/// or the service is shutting down.
pub const RETRY_AFTER_UNAVAILABLE: Duration = Duration::from_secs(5);

/// An error response: a status, a machine-readable kind, a message, the field
/// of the request it concerns (if any) and, for transient failures, a
/// `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable kind (`invalid_key`, `backpressure`, ...).
    pub kind: &'static str,
    /// One line for people.
    pub message: String,
    /// The request field at fault (`key`, `delta`, `policy.threshold`, ...).
    pub field: Option<Box<str>>,
    /// The counter concerned, in its display form.
    pub key: Option<Box<str>>,
    /// Sent as `Retry-After` (whole seconds).
    pub retry_after: Option<Duration>,
    /// Sent as `WWW-Authenticate` (401 and 403).
    pub authenticate: Option<&'static str>,
}

/// The JSON body of an error response.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: ErrorFields<'a>,
}

#[derive(Debug, Serialize)]
struct ErrorFields<'a> {
    status: u16,
    kind: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
}

impl ApiError {
    /// An error with `status`, `kind` and `message`.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            field: None,
            key: None,
            retry_after: None,
            authenticate: None,
        }
    }

    /// 400: the request field `field` is invalid.
    pub fn bad_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message).with_field(field)
    }

    /// 404: no such route.
    pub fn not_found(path: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {path} (routes: /v1/..., /metrics, /healthz, /readyz, /admin)"),
        )
    }

    /// 405: the route exists but not with this method.
    pub fn method_not_allowed() -> Self {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take this method")
    }

    /// 413: the request body is over the limit.
    pub fn too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is over the limit of {limit} bytes"),
        )
        .with_field("body")
    }

    /// 403: a write from a web page of another origin (or `Origin: null`).
    pub fn cross_origin(origin: &str) -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            format!(
                "writes from another origin ({origin}) are refused: only the service's own pages may write \
                 (add the name it is reached by with --allowed-host)"
            ),
        )
        .with_field("origin")
    }

    /// 421: the request names a host the service does not answer to
    /// (DNS rebinding, or a name missing from `--allowed-host`).
    pub fn unknown_host(host: &str) -> Self {
        ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "unknown_host",
            format!("this service does not answer to host {host} (add it with --allowed-host)"),
        )
        .with_field("host")
    }

    /// 415: a body that is not declared `application/json`.
    pub fn unsupported_media_type(given: &str) -> Self {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("request bodies must be sent as Content-Type: application/json (got {given})"),
        )
        .with_field("content-type")
    }

    /// 408: the body did not arrive within the body timeout.
    pub fn body_timeout(timeout: Duration) -> Self {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request body did not arrive within {} ms", timeout.as_millis()),
        )
        .with_field("body")
    }

    /// The JSON body of this error, as sent.
    pub fn body_json(&self) -> String {
        let body = ErrorBody {
            error: ErrorFields {
                status: self.status.as_u16(),
                kind: self.kind,
                message: &self.message,
                field: self.field.as_deref(),
                key: self.key.as_deref(),
            },
        };
        serde_json::to_string(&body).expect("an error body serializes")
    }

    /// 503 while the service drains on shutdown.
    pub fn shutting_down() -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shut_down", "the service is shutting down")
            .with_retry_after(RETRY_AFTER_UNAVAILABLE)
    }

    /// Names the request field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into().into_boxed_str());
        self
    }

    /// Sets `Retry-After`.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Maps a library error. `field` names the request field that fed the
    /// operation's input, for the input kinds (an invalid key is always the
    /// `key` field).
    ///
    /// | kind | status |
    /// |---|---|
    /// | `InvalidKey` | 400, field `key` |
    /// | `InvalidInput`, `Overflow` | 400, field `field` |
    /// | `Backpressure` | 503, `Retry-After: 1` |
    /// | `Unavailable`, `ShutDown` | 503, `Retry-After: 5` |
    /// | `Permanent` | 502 (the backend refused for good) |
    /// | `Deferred` | 202 (counted; not in the store yet, lands once later: do not retry) |
    /// | `Conflict` | 422 (the `Idempotency-Key` was used with another body) |
    /// | `Config` and anything newer | 500 |
    pub fn from_counters(error: &Error, field: &str) -> Self {
        let (status, kind, field, retry) = match error.kind() {
            ErrorKind::InvalidKey => (StatusCode::BAD_REQUEST, "invalid_key", Some("key"), None),
            ErrorKind::InvalidInput => (StatusCode::BAD_REQUEST, "invalid_input", Some(field), None),
            ErrorKind::Overflow => (StatusCode::BAD_REQUEST, "overflow", Some(field), None),
            ErrorKind::Backpressure => {
                (StatusCode::SERVICE_UNAVAILABLE, "backpressure", None, Some(RETRY_AFTER_BACKPRESSURE))
            }
            ErrorKind::Unavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None, Some(RETRY_AFTER_UNAVAILABLE))
            }
            ErrorKind::ShutDown => (StatusCode::SERVICE_UNAVAILABLE, "shut_down", None, Some(RETRY_AFTER_UNAVAILABLE)),
            ErrorKind::Permanent => (StatusCode::BAD_GATEWAY, "backend_failed", None, None),
            ErrorKind::Deferred => (StatusCode::ACCEPTED, "deferred", None, None),
            ErrorKind::Conflict => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused", Some("Idempotency-Key"), None)
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None, None),
        };
        let mut api = ApiError::new(status, kind, error.to_string());
        api.field = field.map(Box::from);
        api.key = error.key().map(Box::from);
        api.retry_after = retry;
        api
    }

    /// Maps an error of a write that may have counted: a
    /// [`Deferred`](ErrorKind::Deferred) one is a success that is not
    /// durable yet (202, with the value), anything else an error.
    pub fn from_write(error: &Error, field: &str, key: &counters::Key) -> Response {
        if error.kind() == ErrorKind::Deferred {
            let body = serde_json::json!({
                "key": key.to_string(),
                "value": error.value(),
                "durable": false,
                "deferred": error.to_string(),
            });
            return (StatusCode::ACCEPTED, Json(body)).into_response();
        }
        ApiError::from_counters(error, field).into_response()
    }
}

impl From<Error> for ApiError {
    /// Maps a library error whose input field is not known more precisely
    /// than "the request".
    fn from(error: Error) -> Self {
        ApiError::from_counters(&error, "body")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), kind = self.kind, "{}", self.message);
        }
        let body = self.body_json();
        let mut response = (self.status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        let headers = response.headers_mut();
        if let Some(after) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
        }
        if let Some(challenge) = self.authenticate {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may still arrive: do not read it as a request.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_a_meaningful_status() {
        let cases = [
            (ErrorKind::InvalidKey, 400, Some("key"), None),
            (ErrorKind::InvalidInput, 400, Some("precision"), None),
            (ErrorKind::Overflow, 400, Some("precision"), None),
            (ErrorKind::Backpressure, 503, None, Some(1)),
            (ErrorKind::Unavailable, 503, None, Some(5)),
            (ErrorKind::ShutDown, 503, None, Some(5)),
            (ErrorKind::Permanent, 502, None, None),
            (ErrorKind::Deferred, 202, None, None),
            (ErrorKind::Config, 500, None, None),
        ];
        for (kind, status, field, retry) in cases {
            let e = ApiError::from_counters(&Error::new(kind, "x").with_key("ns/k"), "precision");
            assert_eq!(e.status.as_u16(), status, "{kind:?}");
            assert_eq!(e.field.as_deref(), field, "{kind:?}");
            assert_eq!(e.retry_after.map(|d| d.as_secs()), retry, "{kind:?}");
            assert_eq!(e.key.as_deref(), Some("ns/k"));
        }
    }
}
