//! The one error type of the library: a kind, the key it concerns, and
//! whether retrying can help.

use std::fmt;
use std::sync::Arc;

use crate::redact::redact_urls_in;

/// What went wrong, in terms a caller can act on.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A key (or a namespace or prefix) is empty, too long, or contains a
    /// control character or a Unicode format character.
    InvalidKey,
    /// Some other argument is invalid (an unknown precision, a bad range, a malformed URL).
    InvalidInput,
    /// The operation would take a value or a delta outside the signed 64-bit range.
    Overflow,
    /// Too many deltas are pending because the store is not keeping up; retry later.
    Backpressure,
    /// A backend cannot be reached right now (connection refused, timeout, throttled).
    Unavailable,
    /// A backend refused the operation and will keep refusing it (bad credentials,
    /// missing table, a file that is not ours, data of an unexpected type).
    Permanent,
    /// The configuration is wrong (bad URL, unsupported combination of options).
    Config,
    /// The counters handle was shut down.
    ShutDown,
    /// The call **was counted**, but its delta is not in the store yet: a
    /// write-through that did not complete, or a shutdown that could not
    /// drain. The delta is held (in the shared cache, in the spill journal,
    /// or in this process, as the message says) under its batch identity and
    /// lands exactly once later. Do not retry the call: it would count twice.
    Deferred,
    /// The idempotency key was used before for this counter with another
    /// request (another delta or other options): nothing was counted.
    Conflict,
}

impl ErrorKind {
    /// Whether an operation that failed with this kind may succeed if retried.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Backpressure | ErrorKind::Unavailable)
    }

    fn describe(self) -> &'static str {
        match self {
            ErrorKind::InvalidKey => "invalid key",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Overflow => "overflow",
            ErrorKind::Backpressure => "backpressure",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Permanent => "permanent failure",
            ErrorKind::Config => "configuration error",
            ErrorKind::ShutDown => "shut down",
            ErrorKind::Deferred => "counted, not yet durable",
            ErrorKind::Conflict => "idempotency key reused",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Type alias for results of this library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from the counters library.
///
/// It carries a [`kind`](Error::kind), the key it concerns where there is one
/// (in its display form `namespace/name`, so that even an invalid key can be
/// named), a one-line message and, for backend errors, the underlying cause.
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    key: Option<String>,
    message: String,
    value: Option<i64>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// A new error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, key: None, message: message.into(), value: None, source: None }
    }

    /// Shorthand for an [`ErrorKind::Unavailable`] error with a cause.
    pub fn unavailable(message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::new(ErrorKind::Unavailable, message).with_source(source)
    }

    /// Shorthand for an [`ErrorKind::Permanent`] error with a cause.
    pub fn permanent(message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::new(ErrorKind::Permanent, message).with_source(source)
    }

    /// Attaches the key this error concerns (display form).
    pub fn with_key(mut self, key: impl fmt::Display) -> Self {
        self.key = Some(key.to_string());
        self
    }

    /// Attaches `key` unless the error already names one.
    pub fn or_key(self, key: impl fmt::Display) -> Self {
        if self.key.is_some() { self } else { self.with_key(key) }
    }

    /// Attaches the counter's new total, for a [`Deferred`](ErrorKind::Deferred)
    /// error: the call was counted, and this is what it returned.
    pub fn with_value(mut self, total: i64) -> Self {
        self.value = Some(total);
        self
    }

    /// The counter's new total after a call that was counted although it
    /// failed ([`Deferred`](ErrorKind::Deferred)).
    pub fn value(&self) -> Option<i64> {
        self.value
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The key this error concerns, as `namespace/name` (or just `name` in the
    /// default namespace), if it concerns one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The message, without kind or key, as given (the display form
    /// redacts credentials in URLs; see [`redact_url`](crate::redact_url)).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the operation may succeed if retried. The engine retries only
    /// transient errors.
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        match (&self.key, self.kind) {
            (Some(key), ErrorKind::InvalidKey) => write!(f, " {key:?}")?,
            (Some(key), _) => write!(f, " for key {key:?}")?,
            (None, _) => {}
        }
        // Credentials never reach a terminal or a log: any URL a message
        // or a driver's cause names is shown redacted.
        write!(f, ": {}", redact_urls_in(&self.message))?;
        if let Some(source) = &self.source {
            // One line: causes are joined, never printed on lines of their own.
            // An `Error` of ours already prints its own causes.
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
            while let Some(c) = cause {
                write!(f, ": {}", redact_urls_in(&c.to_string().replace('\n', " ")))?;
                cause = if c.is::<Error>() { None } else { c.source() };
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("key", &self.key)
            .field("message", &redact_urls_in(&self.message))
            .field("value", &self.value)
            .field("source", &self.source.as_ref().map(|s| redact_urls_in(&s.to_string())))
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_debug_redact_credentials_in_urls() {
        let cause = std::io::Error::other("cannot reach redis://:hunter2@h:1");
        let e = Error::new(ErrorKind::Config, "bad Redis URL \"redis://user:hunter2@h:1/x\": no").with_source(cause);
        for shown in [e.to_string(), format!("{e:?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("redis://user:***@h:1/x") && shown.contains("redis://:***@h:1"), "{shown}");
        }
    }

    #[test]
    fn display_is_one_line_with_kind_key_and_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused\nagain");
        let e = Error::unavailable("store did not answer", io).with_key("clicks/ad42");
        let text = e.to_string();
        assert_eq!(text, "unavailable for key \"clicks/ad42\": store did not answer: refused again");
        assert!(e.is_transient());
        assert!(!Error::new(ErrorKind::Permanent, "x").is_transient());
        assert!(!Error::new(ErrorKind::InvalidKey, "x").is_transient());
        let nested = Error::new(ErrorKind::Permanent, "outer").with_source(e);
        assert_eq!(
            nested.to_string(),
            "permanent failure: outer: unavailable for key \"clicks/ad42\": store did not answer: refused again"
        );
    }
}
