//! `/v1/metrics/error-rate`, `/v1/metrics/volume`, `/v1/metrics/top-errors` (answered from the analytics
//! cache) and `/v1/usage` (from the account store): the query string into the query core's types, its
//! answer into API.md's JSON. Same credentials as `/v1/logs`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use chrono::{DateTime, NaiveDate};
use ledger_stages::Level;
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::fronts::base::credential::read_access;
use crate::fronts::base::{AppState, timestamp};
use crate::query::analytics::{ErrorStatus, TopErrors};
use crate::query::{Params, analytics, bad};
use crate::store::analytics::{Granularity, TopError};

fn start(bucket: i64) -> String {
    DateTime::from_timestamp(bucket, 0).map(|t| timestamp(&t)).unwrap_or_default()
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
pub(crate) async fn error_rate(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<ErrorRate>, ApiError> {
    let project = read_access(&headers, &state.accounts, params.get("project_id").map(String::as_str)).await?;
    let range = Params(&params).only(&["from", "to"])?.range()?;
    let buckets = analytics::error_rate(state.analytics.as_ref(), project, range)
        .await?
        .into_iter()
        .map(|b| ErrorRateBucket { start: start(b.start), total: b.total, errors: b.errors, error_rate: b.error_rate })
        .collect();
    Ok(Json(ErrorRate { bucket_seconds: analytics::ERROR_RATE_BUCKET.seconds(), buckets }))
}

#[utoipa::path(get, path = "/v1/metrics/volume", tag = "metrics", security(("api_key" = []), ("session" = [])),
    params(("from" = Option<String>, Query), ("to" = Option<String>, Query), ("interval" = Option<String>, Query, description = "5m, 1h (default) or 1d"),
        ("project_id" = Option<String>, Query)),
    responses((status = 200, body = Value, description = "{\"interval\", \"buckets\": [{\"start\", \"counts\": {level: n}}]}"), (status = 400, body = ErrorBody)))]
pub(crate) async fn volume(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let project = read_access(&headers, &state.accounts, params.get("project_id").map(String::as_str)).await?;
    let p = Params(&params);
    let range = p.only(&["from", "to", "interval"])?.range()?;
    let g = match p.text("interval") {
        None => Granularity::Hour,
        Some(i) => Granularity::parse(i).ok_or_else(|| bad("interval", "must be 5m, 1h or 1d"))?,
    };
    let buckets: Vec<Value> = analytics::volume(state.analytics.as_ref(), project, range, g)
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

fn top_error_json(top: &TopErrors, e: &TopError, status: ErrorStatus) -> Value {
    let time = |micros: i64| DateTime::from_timestamp_micros(micros).map(|t| timestamp(&t));
    json!({
        "fingerprint": ledger_stages::log::fingerprint_hex(e.fingerprint),
        "count": e.count,
        "first_seen": time(e.info.first_seen),
        "last_seen": time(e.info.last_seen),
        "level": Level::from_number(e.info.level).unwrap_or(Level::Error).as_str(),
        "service": e.info.service,
        "sample_message": e.info.sample_message,
        "exception_type": e.info.exception_type,
        "status": status.as_str(),
        "series": top.dense_series(e),
    })
}

#[utoipa::path(get, path = "/v1/metrics/top-errors", tag = "metrics", security(("api_key" = []), ("session" = [])),
    params(("from" = Option<String>, Query), ("to" = Option<String>, Query), ("limit" = Option<u32>, Query, description = "1 to 100, default 10"),
        ("project_id" = Option<String>, Query)),
    responses((status = 200, body = Value, description = "{\"bucket_seconds\": 3600 (86400 past 7 days), \"errors\": [{fingerprint, count, first_seen, last_seen, level, service, sample_message, exception_type, status: new|regressed|ongoing, series: [count per bucket of the range, oldest first]}]}. `new`: first seen in the range; `regressed`: seen before, then not for a day up to its first occurrence in the range."),
        (status = 400, body = ErrorBody)))]
pub(crate) async fn top_errors(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let project = read_access(&headers, &state.accounts, params.get("project_id").map(String::as_str)).await?;
    let p = Params(&params);
    let range = p.only(&["from", "to", "limit"])?.range()?;
    let top = analytics::top_errors(state.analytics.as_ref(), project, range, p.number("limit")?).await?;
    let errors: Vec<Value> = top.errors.iter().map(|(e, status)| top_error_json(&top, e, *status)).collect();
    Ok(Json(json!({"bucket_seconds": top.granularity.seconds(), "errors": errors})))
}

#[utoipa::path(get, path = "/v1/usage", tag = "metrics", security(("api_key" = []), ("session" = [])),
    params(("from" = Option<String>, Query, description = "YYYY-MM-DD, default 29 days before `to`"),
        ("to" = Option<String>, Query, description = "YYYY-MM-DD, default today (UTC)"), ("project_id" = Option<String>, Query)),
    responses((status = 200, body = Value, description = "{\"days\": [{day, accepted, rejected_rate_limited, rejected_quota, rejected_backpressure, rejected_invalid, dropped_by_rule, sampled_out, bytes}]}"),
        (status = 400, body = ErrorBody)))]
pub(crate) async fn usage(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let project = read_access(&headers, &state.accounts, params.get("project_id").map(String::as_str)).await?;
    let p = Params(&params);
    p.only(&["from", "to"])?;
    let day = |name: &str| -> Result<Option<NaiveDate>, ApiError> {
        p.text(name)
            .map(|v| NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| bad(name, "must be a date, YYYY-MM-DD")))
            .transpose()
    };
    let days = analytics::usage(state.backend.accounts.as_ref(), project, day("from")?, day("to")?).await?;
    let days: Vec<Value> = days
        .into_iter()
        .map(|(d, u)| {
            json!({
                "day": d.format("%Y-%m-%d").to_string(),
                "accepted": u.accepted,
                "rejected_rate_limited": u.rejected_rate_limited,
                "rejected_quota": u.rejected_quota,
                "rejected_backpressure": u.rejected_backpressure,
                "rejected_invalid": u.rejected_invalid,
                "dropped_by_rule": u.dropped_by_rule,
                "sampled_out": u.sampled_out,
                "bytes": u.bytes,
            })
        })
        .collect();
    Ok(Json(json!({ "days": days })))
}
