//! `POST /v1/logs`: decode, run the ingestion stack, answer 202 with the ids, or API.md's error. Every
//! answer after the rate_limit stage carries `X-RateLimit-Limit`, `-Remaining` and `-Reset`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ledger_stages::{Ingest, Protocol, RateLimitStatus};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::fronts::base::body::{admit, header_text, read_body};
use crate::fronts::base::credential::credential;
use crate::fronts::base::{AppState, request_id};
use crate::ingest::outcome::Outcome;
use crate::ingest::{decode, idempotency_key_ok};

#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedBody {
    accepted: usize,
    /// The logs' ids, in request order.
    ids: Vec<String>,
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
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 128 printable ASCII characters: a repeat for the same project within 10 minutes gets the first answer again (with `Idempotent-Replayed: true`) and stores nothing more")),
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
pub(crate) async fn ingest(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let ingestion = &state.ingestion;
    let key = match headers.get("idempotency-key").map(|v| v.to_str().ok().filter(|k| idempotency_key_ok(k))) {
        None => None,
        Some(Some(key)) => Some(key.to_owned()),
        Some(None) => {
            let reason = "Idempotency-Key must be 1 to 128 printable ASCII characters";
            return ApiError::BadRequest(reason.into()).into_response();
        }
    };
    let (admitted, mut room) = match admit(ingestion, Protocol::Http, credential(&headers)).await {
        Ok(admitted) => admitted,
        Err(e) => return e.into_response(),
    };
    let (limit, max_logs) = (ingestion.max_body_bytes, ingestion.max_request_logs);
    let format = decode::format(header_text(&headers, header::CONTENT_TYPE));
    let decoded = match format {
        Ok(format) => {
            read_body(&headers, body, limit, &mut room, move |bytes| decode::logs(bytes, format, max_logs)).await
        }
        Err(e) => Err(e),
    };
    let (logs, size) = match decoded {
        Ok(decoded) => decoded,
        Err(e) => {
            admitted.refuse(Outcome::of_refusal(&e));
            return e.into_response();
        }
    };
    let mut request = Ingest::new(request_id::current().unwrap_or_default(), Protocol::Http, None, logs);
    request.body_bytes = size as u64;
    let (result, report, replayed) = ingestion.run_once(admitted, request, key.as_deref()).await;
    let response = match result {
        Ok(accepted) => {
            let ids: Vec<String> = accepted.ids.iter().map(ToString::to_string).collect();
            let mut response = (StatusCode::ACCEPTED, Json(AcceptedBody { accepted: ids.len(), ids })).into_response();
            if replayed {
                response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            response
        }
        Err(e) => ApiError::from(e).into_response(),
    };
    with_rate_limit(response, report.rate_limit.get())
}
