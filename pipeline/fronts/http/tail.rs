//! `GET /v1/logs/tail`: a project's logs as they are committed, as Server-Sent Events.
//!
//! Each event is one stored log: `id:` its id, `data:` the log as `GET /v1/logs` shows it. A reconnect with
//! `Last-Event-ID` (or `?after=<log id>`) resumes after that log. A subscriber too slow to keep up gets
//! `event: dropped` with `data: {"dropped": n}`; a resume point the feed no longer keeps gets
//! `{"dropped": null}`. A comment line (`: keep-alive`) comes every `tail.heartbeat_secs` on a quiet stream.
//! The stream ends when the daemon shuts down.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;

use super::logs::log_json;
use crate::error::ApiError;
use crate::fronts::base::AppState;
use crate::fronts::base::credential::read_access;
use crate::query::bad;
use crate::query::logs::{LogParams, NOT_FILTERS};
use crate::query::tail::{Subscription, TailEvent, resume_point};

/// The tail's filters as the query core's parameters, refusing those of a page.
pub(crate) fn tail_params(mut params: HashMap<String, String>) -> Result<LogParams, ApiError> {
    params.remove("after");
    if let Some(name) = NOT_FILTERS.iter().find(|n| params.contains_key(**n)) {
        return Err(bad(name, "is not a live-tail parameter (a tail has no range, page or cursor)"));
    }
    LogParams::from_query(&params)
}

fn event(e: TailEvent) -> Event {
    match e {
        TailEvent::Log(record) => Event::default().id(record.id.to_string()).data(log_json(&record).to_string()),
        TailEvent::Dropped(n) => Event::default().event("dropped").data(json!({"dropped": n}).to_string()),
        TailEvent::Gap => Event::default().event("dropped").data(
            json!({"dropped": null, "reason": "the resume point is older than what the live tail keeps"}).to_string(),
        ),
    }
}

#[utoipa::path(get, path = "/v1/logs/tail", tag = "query", security(("api_key" = []), ("session" = [])),
    params(
        ("project_id" = Option<String>, Query, description = "Required with a session token"),
        ("after" = Option<String>, Query, description = "Resume after this log id (as the Last-Event-ID header)"),
        ("level" = Option<String>, Query, description = "Comma list of levels"),
        ("min_level" = Option<String>, Query), ("service" = Option<String>, Query, description = "Comma list"),
        ("environment" = Option<String>, Query),
        ("q" = Option<String>, Query, description = "Every word must occur, case-insensitively; \"quoted phrases\" as phrases"),
        ("fingerprint" = Option<String>, Query), ("trace_id" = Option<String>, Query),
    ),
    responses(
        (status = 200, content_type = "text/event-stream", description = "Server-Sent Events: `id:` a log id, `data:` the stored log as JSON; `event: dropped` with `{\"dropped\": n}` when logs were lost for a slow subscriber; a comment line at least every 15 s"),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 429, body = crate::error::ErrorBody, description = "rate_limited: the project, its account or this instance has as many subscribers as it may"),
    ))]
pub(crate) async fn tail(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let project = read_access(&headers, &state.accounts, params.get("project_id").map(String::as_str)).await?;
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let after = resume_point(last_event_id, params.get("after").map(String::as_str))?;
    let query = tail_params(params)?.validate(project)?;
    let subscription = state.tail.subscribe(query, after).await?;
    let events = futures::stream::unfold(subscription, |mut s: Subscription| async move {
        s.next().await.map(|e| (Ok::<Event, Infallible>(event(e)), s))
    })
    .take_until(state.ingestion.draining.clone().cancelled_owned());
    let keep_alive = KeepAlive::new().interval(state.tail_heartbeat).text("keep-alive");
    // Proxies must pass events on as they come, not buffer them.
    Ok(([("x-accel-buffering", "no"), ("cache-control", "no-cache")], Sse::new(events).keep_alive(keep_alive))
        .into_response())
}
