//! How SDK errors map onto the library's kinds: throttling, server errors
//! and anything about reaching the endpoint are transient; a missing table,
//! refused credentials and validation errors are permanent and surface at
//! once.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use counter_core::{Error, ErrorKind, redact_urls_in};
use tracing::debug;

/// Error codes a retry can cure.
const TRANSIENT_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "TransactionInProgressException",
    "TransactionConflict",
    "LimitExceededException",
];

/// Whether a DynamoDB error code (or a transaction cancellation reason)
/// is worth retrying.
pub(crate) fn is_transient_code(code: &str) -> bool {
    TRANSIENT_CODES.contains(&code) || code.contains("Throttl") || code.contains("ThroughputExceeded")
}

/// Longest service message or cause quoted in an error (the full detail
/// goes to the debug log).
const MAX_QUOTED: usize = 160;

/// Maps an SDK error from `operation` on `table` to one readable sentence:
/// the operation, the table, and the service's error code and message
/// (or, for a request that got no answer, the innermost cause: a refused
/// connection, a timeout). The SDK's full detail (request, response,
/// headers: 1-2 KB) is logged at debug level (`COUNTERS_LOG=debug`), with
/// any credentials in URLs redacted.
pub(crate) fn map_sdk<E, R>(err: SdkError<E, R>, operation: &str, table: &str) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    debug!(operation, table, detail = %redact_urls_in(&DisplayErrorContext(&err).to_string()), "DynamoDB error");
    let (kind, what) = match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let kind = match e.code() {
                Some(code) if is_transient_code(code) => ErrorKind::Unavailable,
                _ => ErrorKind::Permanent,
            };
            let what = match (e.code(), e.message()) {
                (Some(code), Some(message)) if !message.is_empty() => format!("{code}: {}", quote(message)),
                (Some(code), _) => code.to_string(),
                (None, _) => format!("the service refused it: {}", quote(&innermost(e))),
            };
            (kind, what)
        }
        SdkError::ConstructionFailure(_) => {
            (ErrorKind::Config, format!("the request could not be built: {}", cause(&err)))
        }
        SdkError::TimeoutError(_) => (ErrorKind::Unavailable, "no answer in time".to_string()),
        SdkError::DispatchFailure(d) if d.is_timeout() => {
            (ErrorKind::Unavailable, format!("no answer in time: {}", cause(&err)))
        }
        SdkError::DispatchFailure(_) => (ErrorKind::Unavailable, format!("cannot reach the endpoint: {}", cause(&err))),
        SdkError::ResponseError(_) => (ErrorKind::Unavailable, format!("unreadable answer: {}", cause(&err))),
        _ => (ErrorKind::Unavailable, cause(&err)),
    };
    Error::new(kind, format!("DynamoDB {operation} on table {table:?} failed: {what}"))
}

/// The innermost cause of `err`, shortened.
fn cause(err: &(dyn std::error::Error + 'static)) -> String {
    quote(&innermost(err))
}

fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// One line of at most [`MAX_QUOTED`] characters.
fn quote(text: &str) -> String {
    let line = redact_urls_in(&text.replace(['\n', '\r'], " "));
    match line.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::is_transient_code;

    #[test]
    fn throttling_and_conflicts_are_transient_the_rest_permanent() {
        for code in [
            "ProvisionedThroughputExceededException",
            "ThrottlingException",
            "RequestLimitExceeded",
            "TransactionConflict",
            "ThrottlingError",
            "InternalServerError",
        ] {
            assert!(is_transient_code(code), "{code}");
        }
        for code in [
            "ResourceNotFoundException",
            "UnrecognizedClientException",
            "ValidationException",
            "AccessDeniedException",
            "ConditionalCheckFailed",
        ] {
            assert!(!is_transient_code(code), "{code}");
        }
    }
}
