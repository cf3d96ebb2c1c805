//! How SDK errors map onto the library's kinds: throttling, server errors
//! and anything about reaching the endpoint are transient; a missing table,
//! refused credentials and validation errors are permanent and surface at
//! once.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use counter_core::{Error, ErrorKind};

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

/// Maps an SDK error from `operation` on `table`.
pub(crate) fn map_sdk<E, R>(err: SdkError<E, R>, operation: &str, table: &str) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&err).to_string();
    let kind = match &err {
        SdkError::ServiceError(service) => match service.err().code() {
            Some(code) if is_transient_code(code) => ErrorKind::Unavailable,
            _ => ErrorKind::Permanent,
        },
        SdkError::ConstructionFailure(_) => ErrorKind::Config,
        // Timeouts, connection failures, unreadable responses.
        _ => ErrorKind::Unavailable,
    };
    let code = err.code().map(|c| format!(" ({c})")).unwrap_or_default();
    Error::new(kind, format!("DynamoDB {operation} on table {table:?} failed{code}: {detail}"))
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
