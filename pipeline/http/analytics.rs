//! `/v1/metrics/error-rate`, `/v1/metrics/volume`, `/v1/metrics/top-errors` (answered from the metrics
//! cache) and `/v1/usage` (from the account store). Same credentials as `/v1/logs`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use chrono::{DateTime, NaiveDate, Utc};
use ledger_stages::Level;
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::logs::ReadAccess;
use super::{AppState, timestamp};
use crate::analytics::{Granularity, LevelCounts, TopError};
use crate::error::{ApiError, ErrorBody};

/// Buckets per answer at most: a week of 5-minute buckets.
const MAX_BUCKETS: i64 = 2016;

fn bad(param: &str, reason: &str) -> ApiError {
    ApiError::BadRequest(format!("query parameter `{param}` {reason}"))
}

fn only(params: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    match params.keys().find(|k| !allowed.contains(&k.as_str()) && k.as_str() != "project_id") {
        Some(unknown) => Err(bad(unknown, "is unknown")),
        None => Ok(()),
    }
}

/// `from`/`to` as RFC 3339, default the last 24 hours.
fn range(params: &HashMap<String, String>) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let parse = |name: &str| -> Result<Option<DateTime<Utc>>, ApiError> {
        params
            .get(name)
            .filter(|v| !v.is_empty())
            .map(|v| {
                DateTime::parse_from_rfc3339(v).map(|t| t.to_utc()).map_err(|_| bad(name, "must be an RFC 3339 time"))
            })
            .transpose()
    };
    let to = parse("to")?.unwrap_or_else(Utc::now);
    let from = parse("from")?.unwrap_or(to - chrono::Duration::hours(24));
    if from > to {
        return Err(bad("from", "must not be after `to`"));
    }
    Ok((from, to))
}

/// The bucket starts from `from` to `to` in `g`, or 400 if there would be too many.
fn buckets(g: Granularity, from: &DateTime<Utc>, to: &DateTime<Utc>) -> Result<(i64, i64), ApiError> {
    let (first, last) = (g.bucket(from), g.bucket(to));
    if (last - first) / g.seconds() + 1 > MAX_BUCKETS {
        return Err(bad("from", &format!("is too far from `to` for {} buckets (at most {MAX_BUCKETS})", g.name())));
    }
    Ok((first, last))
}

fn start(bucket: i64) -> String {
    DateTime::from_timestamp(bucket, 0).map(|t| timestamp(&t)).unwrap_or_default()
}

async fn counts(
    state: &AppState,
    project: uuid::Uuid,
    g: Granularity,
    first: i64,
    last: i64,
) -> Result<Vec<(i64, LevelCounts)>, ApiError> {
    let known: HashMap<i64, LevelCounts> = state.metrics.volume(project, g, first, last).await?.into_iter().collect();
    let step = usize::try_from(g.seconds()).unwrap_or(300);
    Ok((first..=last).step_by(step).map(|b| (b, known.get(&b).copied().unwrap_or_default())).collect())
}

#[derive(Serialize, ToSchema)]
pub struct ErrorRateBucket {
    #[schema(format = DateTime)]
    start: String,
    total: u64,
    /// ERROR and CRITICAL logs.
    errors: u64,
    /// errors / total; 0 for an empty bucket.
    error_rate: f64,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorRate {
    bucket_seconds: i64,
    buckets: Vec<ErrorRateBucket>,
}

#[utoipa::path(get, path = "/v1/metrics/error-rate", tag = "metrics", security(("api_key" = []), ("session" = [])),
    params(("from" = Option<String>, Query), ("to" = Option<String>, Query), ("project_id" = Option<String>, Query)),
    responses((status = 200, body = ErrorRate), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn error_rate(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<ErrorRate>, ApiError> {
    let access = ReadAccess::check(&headers, &state, params.get("project_id").map(String::as_str)).await?;
    let buckets = error_rate_buckets(&state, access.project_id, &params)
        .await?
        .into_iter()
        .map(|(bucket, total, errors, error_rate)| ErrorRateBucket { start: start(bucket), total, errors, error_rate })
        .collect();
    Ok(Json(ErrorRate { bucket_seconds: Granularity::FiveMinutes.seconds(), buckets }))
}

/// The error rate's 5-minute buckets: (start, total, errors, errors / total). REST and gRPC answer from it.
pub async fn error_rate_buckets(
    state: &AppState,
    project: uuid::Uuid,
    params: &HashMap<String, String>,
) -> Result<Vec<(i64, u64, u64, f64)>, ApiError> {
    only(params, &["from", "to"])?;
    let (from, to) = range(params)?;
    let g = Granularity::FiveMinutes;
    let (first, last) = buckets(g, &from, &to)?;
    Ok(counts(state, project, g, first, last)
        .await?
        .into_iter()
        .map(|(bucket, c)| {
            let total: u64 = c.iter().sum();
            let errors = c[3] + c[4];
            let error_rate = if total == 0 { 0.0 } else { errors as f64 / total as f64 };
            (bucket, total, errors, error_rate)
        })
        .collect())
}

#[utoipa::path(get, path = "/v1/metrics/volume", tag = "metrics", security(("api_key" = []), ("session" = [])),
    params(("from" = Option<String>, Query), ("to" = Option<String>, Query), ("interval" = Option<String>, Query, description = "5m, 1h (default) or 1d"),
        ("project_id" = Option<String>, Query)),
    responses((status = 200, body = Value, description = "{\"interval\", \"buckets\": [{\"start\", \"counts\": {level: n}}]}"), (status = 400, body = ErrorBody)))]
pub async fn volume(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let access = ReadAccess::check(&headers, &state, params.get("project_id").map(String::as_str)).await?;
    only(&params, &["from", "to", "interval"])?;
    let (from, to) = range(&params)?;
    let g = match params.get("interval").map(String::as_str) {
        None | Some("") => Granularity::Hour,
        Some(i) => Granularity::parse(i).ok_or_else(|| bad("interval", "must be 5m, 1h or 1d"))?,
    };
    let (first, last) = buckets(g, &from, &to)?;
    let buckets: Vec<Value> = counts(&state, access.project_id, g, first, last)
        .await?
        .into_iter()
        .map(|(bucket, c)| {
            let counts: Map<String, Value> =
                Level::ALL.iter().zip(c).map(|(l, n)| (l.as_str().to_owned(), json!(n))).collect();
            json!({"start": start(bucket), "counts": counts})
        })
        .collect();
    Ok(Json(json!({"interval": g.name(), "buckets": buckets})))
}

fn top_error_json(e: &TopError) -> Value {
    let time = |micros: i64| DateTime::from_timestamp_micros(micros).map(|t| timestamp(&t));
    json!({
        "fingerprint": format!("{:016x}", e.fingerprint),
        "count": e.count,
        "first_seen": time(e.info.first_seen),
        "last_seen": time(e.info.last_seen),
        "level": Level::from_number(e.info.level).unwrap_or(Level::Error).as_str(),
        "service": e.info.service,
        "sample_message": e.info.sample_message,
        "exception_type": e.info.exception_type,
    })
}

#[utoipa::path(get, path = "/v1/metrics/top-errors", tag = "metrics", security(("api_key" = []), ("session" = [])),
    params(("from" = Option<String>, Query), ("to" = Option<String>, Query), ("limit" = Option<u32>, Query, description = "1 to 100, default 10"),
        ("project_id" = Option<String>, Query)),
    responses((status = 200, body = Value, description = "{\"errors\": [{fingerprint, count, first_seen, last_seen, level, service, sample_message, exception_type}]}"),
        (status = 400, body = ErrorBody)))]
pub async fn top_errors(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let access = ReadAccess::check(&headers, &state, params.get("project_id").map(String::as_str)).await?;
    let errors = top_error_list(&state, access.project_id, &params).await?;
    Ok(Json(json!({"errors": errors.iter().map(top_error_json).collect::<Vec<_>>()})))
}

/// The top errors, most frequent first. REST and gRPC answer from it.
pub async fn top_error_list(
    state: &AppState,
    project: uuid::Uuid,
    params: &HashMap<String, String>,
) -> Result<Vec<TopError>, ApiError> {
    only(params, &["from", "to", "limit"])?;
    let (from, to) = range(params)?;
    let limit = match params.get("limit").filter(|l| !l.is_empty()) {
        Some(l) => {
            l.parse::<usize>().ok().filter(|l| (1..=100).contains(l)).ok_or_else(|| bad("limit", "must be 1 to 100"))?
        }
        None => 10,
    };
    // Hourly buckets up to a week, daily beyond: the answer is by whole buckets.
    let g = if to - from <= chrono::Duration::days(7) { Granularity::Hour } else { Granularity::Day };
    let (first, last) = buckets(g, &from, &to)?;
    let mut errors = state.metrics.errors(project, g, first, last).await?;
    errors.sort_by(|a, b| b.count.cmp(&a.count).then(a.fingerprint.cmp(&b.fingerprint)));
    errors.truncate(limit);
    Ok(errors)
}

#[utoipa::path(get, path = "/v1/usage", tag = "metrics", security(("api_key" = []), ("session" = [])),
    params(("from" = Option<String>, Query, description = "YYYY-MM-DD, default 29 days before `to`"),
        ("to" = Option<String>, Query, description = "YYYY-MM-DD, default today (UTC)"), ("project_id" = Option<String>, Query)),
    responses((status = 200, body = Value, description = "{\"days\": [{day, accepted, rejected_rate_limited, rejected_quota, rejected_backpressure, rejected_invalid, bytes}]}"),
        (status = 400, body = ErrorBody)))]
pub async fn usage(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let access = ReadAccess::check(&headers, &state, params.get("project_id").map(String::as_str)).await?;
    only(&params, &["from", "to"])?;
    let day = |name: &str| -> Result<Option<NaiveDate>, ApiError> {
        params
            .get(name)
            .filter(|v| !v.is_empty())
            .map(|v| NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| bad(name, "must be a date, YYYY-MM-DD")))
            .transpose()
    };
    let to = day("to")?.unwrap_or_else(|| Utc::now().date_naive());
    let from = day("from")?.unwrap_or(to - chrono::Duration::days(29));
    if from > to {
        return Err(bad("from", "must not be after `to`"));
    }
    if (to - from).num_days() > 366 {
        return Err(bad("from", "may be at most 366 days before `to`"));
    }
    let known: HashMap<NaiveDate, crate::backend::Usage> =
        state.backend.accounts.usage(access.project_id, from, to).await?.into_iter().collect();
    let days: Vec<Value> = from
        .iter_days()
        .take_while(|d| *d <= to)
        .map(|d| {
            let u = known.get(&d).copied().unwrap_or_default();
            json!({
                "day": d.format("%Y-%m-%d").to_string(),
                "accepted": u.accepted,
                "rejected_rate_limited": u.rejected_rate_limited,
                "rejected_quota": u.rejected_quota,
                "rejected_backpressure": u.rejected_backpressure,
                "rejected_invalid": u.rejected_invalid,
                "bytes": u.bytes,
            })
        })
        .collect();
    Ok(Json(json!({ "days": days })))
}
