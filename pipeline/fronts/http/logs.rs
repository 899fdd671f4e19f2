//! `GET /v1/logs` and `GET /v1/logs/{id}`: an API key with the `query` scope, or a session plus
//! `project_id` (its owner only; any other project is a 404). The query string becomes the query core's
//! [`LogParams`]; the answer is rendered as API.md's stored log.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use ledger_stages::LogRecord;
use ledger_stages::log::fingerprint_hex;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::fronts::base::credential::read_access;
use crate::fronts::base::{AppState, path_id, timestamp};
use crate::query::logs::{self as core, LogParams};

/// API.md's stored log.
pub(crate) fn log_json(record: &LogRecord) -> Value {
    json!({
        "id": record.id.to_string(),
        "timestamp": timestamp(&record.timestamp),
        "received_at": timestamp(&record.received_at),
        "level": record.level.as_str(),
        "message": record.message,
        "service": record.service,
        "environment": record.environment,
        "host": record.host,
        "trace_id": record.trace_id,
        "span_id": record.span_id,
        "attributes": record.attributes,
        "exception": record.exception,
        "fingerprint": fingerprint_hex(record.fingerprint),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogPage {
    logs: Vec<Value>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/logs", tag = "query", security(("api_key" = []), ("session" = [])),
    params(
        ("project_id" = Option<String>, Query, description = "Required with a session token"),
        ("from" = Option<String>, Query, description = "RFC 3339; default 24 h before `to`"),
        ("to" = Option<String>, Query, description = "RFC 3339; default now"),
        ("level" = Option<String>, Query, description = "Comma list of levels"),
        ("min_level" = Option<String>, Query), ("service" = Option<String>, Query, description = "Comma list"),
        ("environment" = Option<String>, Query),
        ("q" = Option<String>, Query, description = "Every word must occur, case-insensitively; \"quoted phrases\" as phrases"),
        ("fingerprint" = Option<String>, Query), ("trace_id" = Option<String>, Query),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 100"), ("cursor" = Option<String>, Query),
    ),
    responses((status = 200, body = LogPage, description = "Newest first"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<LogPage>, ApiError> {
    let project = read_access(&headers, &state.accounts, params.get("project_id").map(String::as_str)).await?;
    let query = LogParams::from_query(&params)?.validate(project)?;
    let page = core::page(state.logs.as_ref(), query).await?;
    Ok(Json(LogPage { logs: page.logs.iter().map(log_json).collect(), next_cursor: page.next_cursor }))
}

#[utoipa::path(get, path = "/v1/logs/{id}", tag = "query", security(("api_key" = []), ("session" = [])),
    params(("id" = String, Path), ("project_id" = Option<String>, Query, description = "Required with a session token")),
    responses((status = 200, body = Value, description = "The stored log"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let project = read_access(&headers, &state.accounts, params.get("project_id").map(String::as_str)).await?;
    let record = core::one(state.logs.as_ref(), project, path_id(&id)?).await?;
    Ok(Json(log_json(&record)))
}
