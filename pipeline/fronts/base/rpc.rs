//! gRPC's side of the base, shared by the gRPC fronts (`ledger.v1` and OTLP/gRPC).

use tonic::Code;
use tonic::metadata::MetadataValue;

use crate::error::ApiError;

/// API.md's mapping of errors to gRPC status codes; retryable ones carry `retry-after` (whole seconds).
pub(crate) fn status(error: &ApiError) -> tonic::Status {
    let code = match error {
        ApiError::BadRequest(_)
        | ApiError::BodyIncomplete
        | ApiError::Validation(_)
        | ApiError::PayloadTooLarge { .. }
        | ApiError::BatchTooLarge { .. } => Code::InvalidArgument,
        ApiError::UnsupportedMediaType(_) => Code::InvalidArgument,
        ApiError::Unauthorized => Code::Unauthenticated,
        ApiError::InsufficientScope(_) | ApiError::CsrfTokenInvalid => Code::PermissionDenied,
        ApiError::NotFound => Code::NotFound,
        ApiError::MethodNotAllowed => Code::Unimplemented,
        ApiError::EmailTaken => Code::AlreadyExists,
        ApiError::TooManyLoginAttempts { .. }
        | ApiError::RateLimited { .. }
        | ApiError::QuotaExceeded { .. }
        | ApiError::TooManySubscribers { .. } => Code::ResourceExhausted,
        ApiError::Unavailable { .. } | ApiError::QueueFull { .. } => Code::Unavailable,
        ApiError::RequestTimeout => Code::DeadlineExceeded,
        ApiError::Internal(_) => Code::Internal,
    };
    let mut status = tonic::Status::new(code, error.to_string());
    if let Some(secs) = error.retry_after_secs() {
        status.metadata_mut().insert("retry-after", MetadataValue::from(secs));
    }
    status
}

/// The project the gRPC guard ([`crate::fronts::serve::serve_grpc`]) authenticated an ingestion call for,
/// from its metadata alone, before tonic decoded a message.
#[derive(Clone)]
pub struct Admission(pub ledger_stages::ProjectContext);

/// The project of an ingestion call, as the guard admitted it.
pub(crate) fn admission(extensions: &tonic::Extensions) -> Result<&ledger_stages::ProjectContext, tonic::Status> {
    // Every ingestion call passes the guard; without its mark the call is not authenticated.
    extensions.get::<Admission>().map(|a| &a.0).ok_or_else(|| status(&ApiError::Unauthorized))
}

/// The project a query call may read, as the guard found it from the call's metadata.
#[derive(Clone, Copy)]
pub struct ReadAccess(pub uuid::Uuid);

/// The project a query call may read.
pub(crate) fn read_project(extensions: &tonic::Extensions) -> Result<uuid::Uuid, tonic::Status> {
    extensions
        .get::<ReadAccess>()
        .map(|access| access.0)
        .ok_or_else(|| tonic::Status::internal("no read access checked"))
}
