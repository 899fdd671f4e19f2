//! [`ApiError`] as an HTTP answer: API.md's error body with the request's id, `Retry-After` where the error
//! has one, and `Connection: close` where the body was not read to its end.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ErrorBody, ErrorDetail};
use crate::fronts::base::request_id;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = %cause, "internal error");
        }
        let retry_after = self.retry_after_secs();
        // The body was not read to its end: the connection cannot carry another request, and a client
        // must be told before it tries.
        let close =
            matches!(self, ApiError::PayloadTooLarge { .. } | ApiError::RequestTimeout | ApiError::BodyIncomplete);
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
                request_id: request_id::current().unwrap_or_default(),
                details: match self {
                    ApiError::Validation(details) => Some(details),
                    _ => None,
                },
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if close {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn retry_after_is_rounded_up_to_whole_seconds() {
        let response = ApiError::TooManyLoginAttempts { retry_after: Duration::from_millis(1500) }.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }
}
