//! The gRPC front (tonic): `grpc.health.v1.Health`, server reflection for `ledger.v1` and the health
//! service, and (as the stages land) `ledger.v1.IngestService` and `QueryService` over the same stack as
//! REST. Errors map from [`ApiError`] in one place, [`status`].

use std::future::Future;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic_health::ServingStatus;

use crate::error::ApiError;

/// API.md's mapping of errors to gRPC status codes; retryable ones carry `retry-after` (whole seconds).
pub fn status(error: &ApiError) -> tonic::Status {
    let code = match error {
        ApiError::BadRequest(_) | ApiError::Validation(_) | ApiError::PayloadTooLarge { .. } => Code::InvalidArgument,
        ApiError::UnsupportedMediaType(_) => Code::InvalidArgument,
        ApiError::Unauthorized => Code::Unauthenticated,
        ApiError::InsufficientScope(_) => Code::PermissionDenied,
        ApiError::NotFound => Code::NotFound,
        ApiError::MethodNotAllowed => Code::Unimplemented,
        ApiError::EmailTaken => Code::AlreadyExists,
        ApiError::TooManyLoginAttempts { .. } => Code::ResourceExhausted,
        ApiError::Unavailable { .. } => Code::Unavailable,
        ApiError::Internal(_) => Code::Internal,
    };
    let mut status = tonic::Status::new(code, error.to_string());
    if let Some(retry_after) = error.retry_after() {
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        status.metadata_mut().insert("retry-after", MetadataValue::from(secs.max(1)));
    }
    status
}

/// Serves gRPC on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), String> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ledger_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("cannot build gRPC reflection: {e}"))?;
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| format!("gRPC server failed: {e}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn retryable_errors_carry_retry_after() {
        let s = status(&ApiError::Unavailable { what: "database", retry_after: Duration::from_secs(3) });
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.metadata().get("retry-after").and_then(|v| v.to_str().ok()), Some("3"));
        assert_eq!(status(&ApiError::Unauthorized).code(), Code::Unauthenticated);
        assert_eq!(status(&ApiError::Validation(vec![])).code(), Code::InvalidArgument);
    }
}
