//! `POST /v1/logs`: decode, run the ingestion stack, answer 202 with the ids, or API.md's error. Every
//! answer after the rate_limit stage carries `X-RateLimit-Limit`, `-Remaining` and `-Reset`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ledger_stages::{Ingest, Protocol, RateLimitStatus};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::extract::credential;
use super::{AppState, request_id};
use crate::error::{ApiError, ErrorBody};
use crate::ingest::decode;
use crate::ingest::outcome::Outcome;

/// Uncompressed bodies at least this large, and every compressed one, are decoded off the async workers.
const DECODE_INLINE_MAX: usize = 256 * 1024;

#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedBody {
    accepted: usize,
    /// The logs' ids, in request order.
    ids: Vec<String>,
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// What the body may decode to at most: its length when sent uncompressed with one, else the limit.
fn may_decode_to(headers: &HeaderMap, limit: usize) -> usize {
    let compressed = header_text(headers, header::CONTENT_ENCODING)
        .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity") && !e.trim().is_empty());
    let length = header_text(headers, header::CONTENT_LENGTH).and_then(|l| l.parse::<usize>().ok());
    match length {
        Some(length) if !compressed => length.min(limit),
        _ => limit,
    }
}

/// Why a body could not be read: too large, too slow, or cut off (the client went away: nobody reads this
/// answer, but its outcome is `cancelled`).
fn body_error(error: &axum::Error, limit: usize) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return ApiError::PayloadTooLarge { limit_bytes: limit };
        }
        source = e.source();
    }
    if super::serve::is_body_timeout(error) { ApiError::RequestTimeout } else { ApiError::BodyIncomplete }
}

/// Reads and decodes the body: within the size limit (before and after decompression), within the body
/// read timeout, and stopping one log past the batch limit.
async fn decode_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    max_logs: usize,
) -> Result<(Vec<Value>, usize), ApiError> {
    let format = decode::format(header_text(headers, header::CONTENT_TYPE))?;
    let encoding = decode::encoding(header_text(headers, header::CONTENT_ENCODING))?;
    let raw = axum::body::to_bytes(body, limit).await.map_err(|e| body_error(&e, limit))?;
    let inline = encoding == decode::Encoding::Identity && raw.len() < DECODE_INLINE_MAX;
    let work = move || {
        let decoded = decode::decompress(&raw, encoding, limit)?;
        let size = decoded.len();
        decode::logs(&decoded, format, max_logs).map(|logs| (logs, size))
    };
    // Decided by the body as read, not by what Content-Length claims; a compressed body may inflate up to
    // the limit, so only a small uncompressed one is decoded on the async worker.
    if inline { work() } else { tokio::task::spawn_blocking(work).await.map_err(ApiError::internal)? }
}

fn with_rate_limit(mut response: Response, status: Option<&RateLimitStatus>) -> Response {
    if let Some(s) = status {
        let headers = response.headers_mut();
        headers.insert("x-ratelimit-limit", HeaderValue::from(s.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(s.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(s.reset_secs));
    }
    response
}

#[utoipa::path(post, path = "/v1/logs", tag = "ingestion", security(("api_key" = [])),
    request_body(content = Value, description = "One log object, or {\"logs\": [log, ...]} with 1 to 1,000 logs; JSON or MessagePack; optionally gzip or zstd", content_type = "application/json"),
    responses(
        (status = 202, body = AcceptedBody, description = "Durable in the queue; stored exactly once"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 408, body = ErrorBody, description = "request_timeout: the body did not arrive in time"),
        (status = 413, body = ErrorBody, description = "payload_too_large or batch_too_large"),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody, description = "validation_failed; nothing stored"),
        (status = 429, body = ErrorBody, description = "rate_limited or quota_exceeded, with Retry-After"),
        (status = 503, body = ErrorBody, description = "queue_full or unavailable, with Retry-After"),
    ))]
pub async fn ingest(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let ingestion = &state.ingestion;
    // The credential first, from the headers alone: an unknown key never makes the daemon read the body.
    let admitted = match ingestion.admit(credential(&headers)).await {
        Ok(admitted) => admitted,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let _room = match ingestion.reserve(may_decode_to(&headers, ingestion.max_body_bytes)) {
        Ok(room) => room,
        Err(e) => {
            admitted.refuse(Outcome::Unavailable);
            return ApiError::from(e).into_response();
        }
    };
    let (logs, size) = match decode_body(&headers, body, ingestion.max_body_bytes, ingestion.max_request_logs).await {
        Ok(decoded) => decoded,
        Err(e) => {
            admitted.refuse(Outcome::of_refusal(&e));
            return e.into_response();
        }
    };
    let mut request = Ingest::new(request_id::current().unwrap_or_default(), Protocol::Http, None, logs);
    request.body_bytes = size as u64;
    let (result, report) = ingestion.run(admitted, request).await;
    let response = match result {
        Ok(accepted) => {
            let ids: Vec<String> = accepted.ids.iter().map(ToString::to_string).collect();
            (StatusCode::ACCEPTED, Json(AcceptedBody { accepted: ids.len(), ids })).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    };
    with_rate_limit(response, report.rate_limit.get())
}
