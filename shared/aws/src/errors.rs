//! AWS errors sorted by what the caller must do, from the SDK's error kind,
//! the service's error code (compared whole, never by substring) and the HTTP
//! status:
//!
//! - the request may pass later (throttling, a server error, a timeout, a
//!   connection that failed): [`StoreError::Unavailable`], retried;
//! - the caller lacks permission (perhaps while an IAM change propagates):
//!   [`StoreError::Denied`]: retried by redelivery, dead-lettered by the
//!   queue's redrive policy if it persists;
//! - AWS refused the request as made (a missing resource, an invalid
//!   parameter): [`StoreError::Rejected`], which no retry can fix.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use baton_runtime::ports::StoreError;

/// Codes of a request that may pass if sent again later.
const TRANSIENT_CODES: &[&str] = &[
    // Throttling, by service.
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "SlowDown",
    "EC2ThrottledException",
    "KMSThrottlingException",
    // The service's own trouble.
    "InternalFailure",
    "InternalError",
    "InternalServerError",
    "InternalServerException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "ServiceException",
    "RequestTimeout",
    "RequestTimeoutException",
    // A write racing another (DynamoDB), a function being updated (Lambda).
    "TransactionConflictException",
    "TransactionInProgressException",
    "ResourceConflictException",
    "ResourceNotReadyException",
];

/// Codes of a caller without permission.
const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "KMSAccessDeniedException",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
];

/// How a failed request is to be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Transient,
    Denied,
    Rejected,
}

/// The disposition of a service error by its code, else its HTTP status.
pub fn disposition(code: Option<&str>, status: Option<u16>) -> Disposition {
    if let Some(code) = code {
        if TRANSIENT_CODES.contains(&code) {
            return Disposition::Transient;
        }
        if DENIED_CODES.contains(&code) {
            return Disposition::Denied;
        }
    }
    match status {
        Some(429) | Some(500..=599) => Disposition::Transient,
        Some(401) | Some(403) => Disposition::Denied,
        _ => Disposition::Rejected,
    }
}

/// Maps an SDK error to the backend's error.
pub fn sdk_error<E>(e: SdkError<E, HttpResponse>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let text = || aws_smithy_types::error::display::DisplayErrorContext(&e).to_string();
    match &e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let code = err.code();
            let status = service.raw().status().as_u16();
            let message = format!(
                "{}: {}",
                code.unwrap_or("ServiceError"),
                err.message().map(str::to_string).unwrap_or_else(text)
            );
            match disposition(code, Some(status)) {
                Disposition::Transient => StoreError::Unavailable(message),
                Disposition::Denied => StoreError::Denied(message),
                Disposition::Rejected => StoreError::Rejected {
                    code: code.unwrap_or("ServiceError").to_string(),
                    message,
                },
            }
        }
        // Timeouts, connections that failed, responses that did not parse:
        // sending again may work.
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreError::Unavailable(text())
        }
        // The request could not even be built: the same request never will be.
        _ => StoreError::Rejected {
            code: "ConstructionFailure".into(),
            message: text(),
        },
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::operation::send_message::SendMessageError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;

    fn service_error(code: &str, status: u16) -> StoreError {
        let err = SendMessageError::generic(
            ErrorMetadata::builder()
                .code(code)
                .message("from the service")
                .build(),
        );
        let raw = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        sdk_error(SdkError::service_error(err, raw))
    }

    #[test]
    fn throttling_and_server_errors_are_retried() {
        for (code, status) in [
            ("ThrottlingException", 400),
            ("ProvisionedThroughputExceededException", 400),
            ("TooManyRequestsException", 429),
            ("InternalServerError", 500),
            ("SomethingNew", 503),
        ] {
            assert!(
                matches!(service_error(code, status), StoreError::Unavailable(_)),
                "{code}"
            );
        }
    }

    #[test]
    fn permission_errors_are_denied_not_corrupt() {
        assert!(matches!(
            service_error("AccessDeniedException", 400),
            StoreError::Denied(_)
        ));
        assert!(matches!(
            service_error("Whatever", 403),
            StoreError::Denied(_)
        ));
    }

    #[test]
    fn refusals_keep_their_code() {
        for code in [
            "ResourceNotFoundException",
            "AWS.SimpleQueueService.NonExistentQueue",
            "ValidationException",
        ] {
            match service_error(code, 400) {
                StoreError::Rejected { code: got, message } => {
                    assert_eq!(got, code);
                    assert!(message.contains("from the service"), "{message}");
                }
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_code_is_matched_whole() {
        // A substring match would have called this throttling.
        assert_eq!(
            disposition(Some("NotThrottlingAtAllError"), Some(400)),
            Disposition::Rejected
        );
    }
}
