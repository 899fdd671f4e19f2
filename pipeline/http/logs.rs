//! `GET /v1/logs` and `GET /v1/logs/{id}`: an API key with the `query` scope, or a session plus
//! `project_id` (its owner only; any other project is a 404).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use ledger_stages::auth::{ApiKey, AuthError};
use ledger_stages::{Level, Scope};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::bearer;
use super::{AppState, path_id};
use crate::error::{ApiError, ErrorBody};
use crate::logs::{Cursor, LogQuery, search_terms, to_json};

const PARAMS: [&str; 12] = [
    "project_id",
    "from",
    "to",
    "level",
    "min_level",
    "service",
    "environment",
    "q",
    "fingerprint",
    "trace_id",
    "limit",
    "cursor",
];

/// The project a read is for, and how the caller proved access.
pub struct ReadAccess {
    pub project_id: Uuid,
}

impl ReadAccess {
    /// From an API key with the `query` scope, or a session and the owner's `project_id`.
    pub async fn check(
        headers: &HeaderMap,
        state: &AppState,
        project_param: Option<&str>,
    ) -> Result<ReadAccess, ApiError> {
        let key = bearer(headers)
            .filter(|c| ApiKey::looks_like_key(c))
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
            .map(str::trim);
        if let Some(key) = key {
            let project = state.accounts.validator().validate(key).await.map_err(|e| match e {
                AuthError::Malformed(_) | AuthError::Unknown => ApiError::Unauthorized,
                AuthError::Unavailable(_) => {
                    ApiError::Unavailable { what: "the account store", retry_after: std::time::Duration::from_secs(1) }
                }
            })?;
            if !project.has_scope(Scope::Query) {
                return Err(ApiError::InsufficientScope(Scope::Query.as_str()));
            }
            // A key reads its own project; naming another is asking for something that is not there.
            if project_param.is_some_and(|p| Uuid::parse_str(p).ok() != Some(project.project_id)) {
                return Err(ApiError::NotFound);
            }
            return Ok(ReadAccess { project_id: project.project_id });
        }
        let token = bearer(headers).ok_or(ApiError::Unauthorized)?;
        let session = state.accounts.session(token).await?;
        let project = project_param
            .ok_or_else(|| ApiError::BadRequest("`project_id` is required with a session token".into()))?;
        let project = state.accounts.project(session.user_id, path_id(project)?).await?;
        Ok(ReadAccess { project_id: project.id })
    }
}

fn bad(param: &str, reason: &str) -> ApiError {
    ApiError::BadRequest(format!("query parameter `{param}` {reason}"))
}

fn parse_time(param: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value).map(|t| t.to_utc()).map_err(|_| bad(param, "must be an RFC 3339 time"))
}

fn parse_level(param: &str, value: &str) -> Result<Level, ApiError> {
    Level::parse(value.trim()).ok_or_else(|| bad(param, "must be DEBUG, INFO, WARNING, ERROR or CRITICAL"))
}

/// Turns query parameters into a [`LogQuery`]; every bad parameter is a 400 naming it.
pub fn parse_query(project_id: Uuid, params: &HashMap<String, String>) -> Result<LogQuery, ApiError> {
    if let Some(unknown) = params.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(bad(unknown, "is unknown"));
    }
    let get = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let to = get("to").map(|v| parse_time("to", v)).transpose()?.unwrap_or_else(Utc::now);
    let from = get("from").map(|v| parse_time("from", v)).transpose()?.unwrap_or(to - chrono::Duration::hours(24));
    if from > to {
        return Err(bad("from", "must not be after `to`"));
    }
    let levels = match get("level") {
        Some(list) => list.split(',').map(|l| parse_level("level", l)).collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let min_level = get("min_level").map(|v| parse_level("min_level", v)).transpose()?;
    let services =
        get("service").map(|list| list.split(',').map(|s| s.trim().to_owned()).collect()).unwrap_or_default();
    let terms = get("q").map(search_terms).unwrap_or_default();
    if terms.len() > 16 || terms.iter().any(|t| t.len() > 256) {
        return Err(bad("q", "may hold at most 16 terms of at most 256 bytes"));
    }
    let fingerprint = match get("fingerprint") {
        Some(f) if f.len() == 16 => {
            Some(u64::from_str_radix(f, 16).map_err(|_| bad("fingerprint", "must be 16 hex characters"))?)
        }
        Some(_) => return Err(bad("fingerprint", "must be 16 hex characters")),
        None => None,
    };
    let limit = match get("limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| bad("limit", "must be 1 to 1000"))?,
        None => 100,
    };
    let cursor = get("cursor")
        .map(|c| Cursor::decode(c).ok_or_else(|| bad("cursor", "is not a cursor this API gave")))
        .transpose()?;
    Ok(LogQuery {
        project_id,
        from,
        to,
        levels,
        min_level,
        services,
        environment: get("environment").map(str::to_owned),
        terms,
        fingerprint,
        trace_id: get("trace_id").map(str::to_owned),
        limit,
        cursor,
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
pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<LogPage>, ApiError> {
    let access = ReadAccess::check(&headers, &state, params.get("project_id").map(String::as_str)).await?;
    let (records, next_cursor) = page(&state, access.project_id, &params).await?;
    Ok(Json(LogPage { logs: records.iter().map(to_json).collect(), next_cursor }))
}

/// One page of logs and the cursor of the next, if there is one. REST and gRPC answer from it.
pub async fn page(
    state: &AppState,
    project: Uuid,
    params: &HashMap<String, String>,
) -> Result<(Vec<ledger_stages::LogRecord>, Option<String>), ApiError> {
    let mut query = parse_query(project, params)?;
    let limit = query.limit;
    // One more than asked tells whether there is a next page.
    query.limit += 1;
    let mut records = state.logs.query(&query).await?;
    let next_cursor = (records.len() > limit).then(|| {
        records.truncate(limit);
        records.last().map(|r| Cursor::after(r).encode())
    });
    Ok((records, next_cursor.flatten()))
}

#[utoipa::path(get, path = "/v1/logs/{id}", tag = "query", security(("api_key" = []), ("session" = [])),
    params(("id" = String, Path), ("project_id" = Option<String>, Query, description = "Required with a session token")),
    responses((status = 200, body = Value, description = "The stored log"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let access = ReadAccess::check(&headers, &state, params.get("project_id").map(String::as_str)).await?;
    let record = state.logs.get(access.project_id, path_id(&id)?).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(to_json(&record)))
}
