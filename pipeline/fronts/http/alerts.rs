//! `/v1/projects/{id}/alerts…`: alert rules (session; the project's owner), a test notification, and each
//! rule's delivery log.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::extract::{JsonBody, SessionAuth};
use crate::alerts::rules::{Rule, RuleInput};
use crate::error::{ApiError, ErrorBody};
use crate::fronts::base::{AppState, path_id, timestamp};

fn rule_json(rule: &Rule) -> Value {
    json!({
        "id": rule.id.to_string(),
        "project_id": rule.project_id.to_string(),
        "name": rule.name,
        "kind": rule.condition.kind(),
        "params": rule.condition.params(),
        "channel": rule.channel,
        "cooldown_secs": rule.cooldown_secs,
        "enabled": rule.enabled,
        "created_at": timestamp(&rule.created_at),
        "state": if rule.firing { "firing" } else { "ok" },
        "last_fired_at": rule.last_fired_at.as_ref().map(timestamp),
    })
}

#[utoipa::path(post, path = "/v1/projects/{id}/alerts", tag = "alerts", security(("session" = [])),
    params(("id" = String, Path)), request_body = Value,
    responses((status = 201, body = Value, description = "The rule; for a webhook channel also its signing `secret`, shown in this answer only"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<RuleInput>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let created = state.alerts.create(&session, path_id(&id)?, input).await?;
    let mut body = rule_json(&created.rule);
    if let Some(secret) = created.secret {
        body["secret"] = json!(secret);
    }
    Ok((StatusCode::CREATED, Json(body)))
}

#[utoipa::path(get, path = "/v1/projects/{id}/alerts", tag = "alerts", security(("session" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Value, description = "{\"alerts\": [rule, ...]}"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let rules = state.alerts.list(&session, path_id(&id)?).await?;
    Ok(Json(json!({"alerts": rules.iter().map(rule_json).collect::<Vec<_>>()})))
}

#[utoipa::path(get, path = "/v1/projects/{id}/alerts/{alert_id}", tag = "alerts", security(("session" = [])),
    params(("id" = String, Path), ("alert_id" = String, Path)),
    responses((status = 200, body = Value), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    Path((id, alert_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(rule_json(&state.alerts.get(&session, path_id(&id)?, path_id(&alert_id)?).await?)))
}

#[utoipa::path(patch, path = "/v1/projects/{id}/alerts/{alert_id}", tag = "alerts", security(("session" = [])),
    params(("id" = String, Path), ("alert_id" = String, Path)), request_body = Value,
    responses((status = 200, body = Value), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    Path((id, alert_id)): Path<(String, String)>,
    JsonBody(input): JsonBody<RuleInput>,
) -> Result<Json<Value>, ApiError> {
    let rule = state.alerts.update(&session, path_id(&id)?, path_id(&alert_id)?, input).await?;
    Ok(Json(rule_json(&rule)))
}

#[utoipa::path(delete, path = "/v1/projects/{id}/alerts/{alert_id}", tag = "alerts", security(("session" = [])),
    params(("id" = String, Path), ("alert_id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    Path((id, alert_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.alerts.delete(&session, path_id(&id)?, path_id(&alert_id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/projects/{id}/alerts/{alert_id}/test", tag = "alerts", security(("session" = [])),
    params(("id" = String, Path), ("alert_id" = String, Path)),
    responses((status = 202, body = Value, description = "A test notification is on its way; its attempts appear in the deliveries"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn test(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    Path((id, alert_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let event = state.alerts.test(&session, path_id(&id)?, path_id(&alert_id)?).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"status": "test", "event": event}))))
}

#[utoipa::path(get, path = "/v1/projects/{id}/alerts/{alert_id}/deliveries", tag = "alerts", security(("session" = [])),
    params(("id" = String, Path), ("alert_id" = String, Path)),
    responses((status = 200, body = Value, description = "{\"deliveries\": [{at, status, attempts, response_status, delivered, event}]}, newest first"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn deliveries(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    Path((id, alert_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let deliveries = state.alerts.deliveries(&session, path_id(&id)?, path_id(&alert_id)?).await?;
    let deliveries: Vec<Value> = deliveries
        .iter()
        .map(|d| {
            json!({
                "at": timestamp(&d.at),
                "status": d.status,
                "attempts": d.attempts,
                "response_status": d.response_status,
                "delivered": d.delivered,
                "event": d.event_key,
            })
        })
        .collect();
    Ok(Json(json!({ "deliveries": deliveries })))
}
