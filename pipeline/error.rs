//! The one error type every route answers with: API.md's status and code of each. The fronts encode it:
//! `fronts/http/error.rs` as the JSON error body, `fronts/grpc.rs` as a gRPC status.
//!
//! Clients get API.md's body: `{"error": {"code", "message", "request_id", "details"?}}`. Internal errors
//! are logged with their cause and answered with a generic message: nothing internal is echoed.

use std::time::Duration;

use axum::http::StatusCode;
use serde::Serialize;

/// One problem with one field of a request, for 422 `validation_failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldProblem {
    /// Position of the log in a batch; absent for single-object bodies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub field: String,
    pub reason: String,
}

impl FieldProblem {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> FieldProblem {
        FieldProblem { index: None, field: field.into(), reason: reason.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing, malformed, unknown, expired or revoked credential")]
    Unauthorized,
    #[error("this credential lacks the `{0}` scope")]
    InsufficientScope(&'static str),
    /// A browser session's state-changing request without its CSRF token (the console's `X-CSRF-Token`).
    #[error("this request needs the session's CSRF token in X-CSRF-Token")]
    CsrfTokenInvalid,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("an account with this e-mail exists")]
    EmailTaken,
    #[error("the request body is larger than {limit_bytes} bytes")]
    PayloadTooLarge { limit_bytes: usize },
    #[error("a batch holds at most {max} logs")]
    BatchTooLarge { max: usize },
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// The connection ended before the body did: the client went away.
    #[error("the request body ended early")]
    BodyIncomplete,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the request has invalid fields")]
    Validation(Vec<FieldProblem>),
    #[error("too many failed logins for this e-mail; try again later")]
    TooManyLoginAttempts { retry_after: Duration },
    #[error("too many requests for this project; retry later")]
    RateLimited { retry_after: Duration },
    #[error("this project has as many live-tail subscribers on this instance as it may; retry later")]
    TooManySubscribers { retry_after: Duration },
    #[error("the project's daily quota is used up; it resets at midnight UTC")]
    QuotaExceeded { retry_after: Duration },
    #[error("the project's queue is full; retry later")]
    QueueFull { retry_after: Duration },
    #[error("{what} is unavailable; try again later")]
    Unavailable { what: &'static str, retry_after: Duration },
    /// A bug or an unexpected failure: logged in full, answered as 500 without detail.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub(crate) fn internal(cause: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(cause.to_string())
    }

    pub(crate) fn validation(field: impl Into<String>, reason: impl Into<String>) -> ApiError {
        ApiError::Validation(vec![FieldProblem::new(field, reason)])
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::BodyIncomplete => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::InsufficientScope(_) | ApiError::CsrfTokenInvalid => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::EmailTaken => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } | ApiError::BatchTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyLoginAttempts { .. }
            | ApiError::RateLimited { .. }
            | ApiError::QuotaExceeded { .. }
            | ApiError::TooManySubscribers { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } | ApiError::QueueFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// API.md's `code`.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) | ApiError::BodyIncomplete => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::InsufficientScope(_) => "insufficient_scope",
            ApiError::CsrfTokenInvalid => "csrf_token_invalid",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::EmailTaken => "email_taken",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::BatchTooLarge { .. } => "batch_too_large",
            ApiError::RateLimited { .. } | ApiError::TooManySubscribers { .. } => "rate_limited",
            ApiError::QuotaExceeded { .. } => "quota_exceeded",
            ApiError::QueueFull { .. } => "queue_full",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::Validation(_) => "validation_failed",
            ApiError::TooManyLoginAttempts { .. } => "too_many_login_attempts",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// Retry-After in whole seconds, rounded up and at least 1: a client that waits exactly this long must
    /// not be refused again. HTTP's header and gRPC's metadata both carry this.
    pub(crate) fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after().map(|d| (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1))
    }

    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::TooManyLoginAttempts { retry_after }
            | ApiError::RateLimited { retry_after }
            | ApiError::TooManySubscribers { retry_after }
            | ApiError::QuotaExceeded { retry_after }
            | ApiError::QueueFull { retry_after }
            | ApiError::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// API.md's error body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: &'static str,
    pub message: String,
    pub request_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<FieldProblem>>,
}

/// The ingestion stack's outcomes as API.md's errors.
impl From<ledger_stages::IngestError> for ApiError {
    fn from(e: ledger_stages::IngestError) -> Self {
        use ledger_stages::IngestError as E;
        match e {
            E::Unauthorized => ApiError::Unauthorized,
            E::InsufficientScope(scope) => ApiError::InsufficientScope(scope.as_str()),
            E::RateLimited { retry_after } => ApiError::RateLimited { retry_after },
            E::QuotaExceeded { retry_after } => ApiError::QuotaExceeded { retry_after },
            E::Invalid(problems) => ApiError::Validation(
                problems
                    .into_iter()
                    .map(|p| FieldProblem { index: p.index, field: p.field, reason: p.reason })
                    .collect(),
            ),
            E::BatchTooLarge { max } => ApiError::BatchTooLarge { max },
            E::QueueFull { retry_after } => ApiError::QueueFull { retry_after },
            E::Unavailable { what, retry_after } => ApiError::Unavailable { what, retry_after },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_the_status_and_code_of_api_md() {
        let cases = [
            (ApiError::BadRequest("x".into()), 400, "bad_request"),
            (ApiError::Unauthorized, 401, "unauthorized"),
            (ApiError::InsufficientScope("query"), 403, "insufficient_scope"),
            (ApiError::NotFound, 404, "not_found"),
            (ApiError::CsrfTokenInvalid, 403, "csrf_token_invalid"),
            (ApiError::EmailTaken, 409, "email_taken"),
            (ApiError::PayloadTooLarge { limit_bytes: 1 }, 413, "payload_too_large"),
            (ApiError::UnsupportedMediaType("x".into()), 415, "unsupported_media_type"),
            (ApiError::Validation(vec![]), 422, "validation_failed"),
            (ApiError::TooManyLoginAttempts { retry_after: Duration::from_secs(1) }, 429, "too_many_login_attempts"),
            (ApiError::Unavailable { what: "x", retry_after: Duration::from_secs(1) }, 503, "unavailable"),
            (ApiError::BatchTooLarge { max: 1000 }, 413, "batch_too_large"),
            (ApiError::RequestTimeout, 408, "request_timeout"),
            (ApiError::RateLimited { retry_after: Duration::from_secs(1) }, 429, "rate_limited"),
            (ApiError::QuotaExceeded { retry_after: Duration::from_secs(1) }, 429, "quota_exceeded"),
            (ApiError::QueueFull { retry_after: Duration::from_secs(1) }, 503, "queue_full"),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status().as_u16(), status);
            assert_eq!(error.code(), code);
        }
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let error = ApiError::internal("password column missing");
        assert_eq!(error.to_string(), "internal error");
    }
}
