//! `/v1/projects/{id}/alerts…`: alert rules (session; the project's owner), a test notification, and each
//! rule's delivery log.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use super::extract::{JsonBody, SessionAuth};
use crate::alerts::rules::{self, Checked, RuleInput};
use crate::error::{ApiError, ErrorBody};
use crate::fronts::base::{AppState, path_id, timestamp};
use crate::store::alerts::AlertRule;

/// The project, if the session's user owns it (else 404, as for any project).
async fn owned(state: &AppState, session: &crate::accounts::Session, id: &str) -> Result<Uuid, ApiError> {
    let project = path_id(id)?;
    state.accounts.project(session.user_id, project).await.map(|p| p.id)
}

async fn rule_of(state: &AppState, project: Uuid, id: &str) -> Result<AlertRule, ApiError> {
    state.backend.alerts.rule(project, path_id(id)?).await?.ok_or(ApiError::NotFound)
}

fn rule_json(rule: &AlertRule) -> Value {
    json!({
        "id": rule.id.to_string(),
        "project_id": rule.project_id.to_string(),
        "name": rule.name,
        "kind": rule.kind,
        "params": rule.params,
        "channel": rule.channel,
        "cooldown_secs": rule.cooldown_secs,
        "enabled": rule.enabled,
        "created_at": timestamp(&rule.created_at),
        "state": if rule.firing { "firing" } else { "ok" },
        "last_fired_at": rule.last_fired_at.as_ref().map(timestamp),
    })
}

fn checked_of(rule: &AlertRule) -> Checked {
    Checked {
        name: rule.name.clone(),
        kind: rule.kind.clone(),
        params: rule.params.clone(),
        channel: rule.channel.clone(),
        cooldown_secs: rule.cooldown_secs,
        enabled: rule.enabled,
    }
}

/// A webhook's signing secret: 32 random bytes, hex.
fn new_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[utoipa::path(post, path = "/v1/projects/{id}/alerts", tag = "alerts", security(("session" = [])),
    params(("id" = String, Path)), request_body = Value,
    responses((status = 201, body = Value, description = "The rule; for a webhook channel also its signing `secret`, shown in this answer only"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<RuleInput>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let project = owned(&state, &session, &id).await?;
    let checked = rules::check(input, None, state.alerts.allow_private_targets).await?;
    let limits = state.accounts.limits();
    let existing = state.backend.alerts.rules(project).await?;
    let queries = existing.iter().filter(|r| r.kind == "query_count").count();
    let refused = if existing.len() >= limits.max_alert_rules_per_project {
        Some((
            "name",
            format!("a project has at most {} alert rules on this server", limits.max_alert_rules_per_project),
        ))
    } else if checked.kind == "query_count" && queries >= limits.max_query_rules_per_project {
        let max = limits.max_query_rules_per_project;
        Some(("kind", format!("a project has at most {max} query_count rules on this server")))
    } else {
        None
    };
    if let Some((field, reason)) = refused {
        return Err(ApiError::Validation(vec![crate::error::FieldProblem::new(field, reason)]));
    }
    let webhook = checked.channel["type"] == "webhook";
    let now = chrono::Utc::now();
    let rule = AlertRule {
        id: Uuid::now_v7(),
        project_id: project,
        name: checked.name,
        kind: checked.kind,
        params: checked.params,
        channel: checked.channel,
        secret: if webhook { new_secret() } else { String::new() },
        cooldown_secs: checked.cooldown_secs,
        enabled: checked.enabled,
        created_at: now,
        firing: false,
        episode: 0,
        last_fired_at: None,
        checked_until: now,
    };
    state.backend.alerts.create_rule(&rule).await?;
    let mut body = rule_json(&rule);
    if webhook {
        body["secret"] = json!(rule.secret);
    }
    Ok((StatusCode::CREATED, Json(body)))
}

#[utoipa::path(get, path = "/v1/projects/{id}/alerts", tag = "alerts", security(("session" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Value, description = "{\"alerts\": [rule, ...]}"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let project = owned(&state, &session, &id).await?;
    let rules = state.backend.alerts.rules(project).await?;
    Ok(Json(json!({"alerts": rules.iter().map(rule_json).collect::<Vec<_>>()})))
}

#[utoipa::path(get, path = "/v1/projects/{id}/alerts/{alert_id}", tag = "alerts", security(("session" = [])),
    params(("id" = String, Path), ("alert_id" = String, Path)),
    responses((status = 200, body = Value), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    Path((id, alert_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let project = owned(&state, &session, &id).await?;
    Ok(Json(rule_json(&rule_of(&state, project, &alert_id).await?)))
}

#[utoipa::path(patch, path = "/v1/projects/{id}/alerts/{alert_id}", tag = "alerts", security(("session" = [])),
    params(("id" = String, Path), ("alert_id" = String, Path)), request_body = Value,
    responses((status = 200, body = Value), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    Path((id, alert_id)): Path<(String, String)>,
    JsonBody(input): JsonBody<RuleInput>,
) -> Result<Json<Value>, ApiError> {
    let project = owned(&state, &session, &id).await?;
    let mut rule = rule_of(&state, project, &alert_id).await?;
    let channel_changed = input.channel.is_some();
    let checked = rules::check(input, Some(&checked_of(&rule)), state.alerts.allow_private_targets).await?;
    let webhook = checked.channel["type"] == "webhook";
    rule.name = checked.name;
    rule.params = checked.params;
    rule.channel = checked.channel;
    rule.cooldown_secs = checked.cooldown_secs;
    rule.enabled = checked.enabled;
    if channel_changed && webhook && rule.secret.is_empty() {
        return Err(ApiError::validation("channel", "a rule cannot become a webhook: create a webhook rule"));
    }
    if !state.backend.alerts.update_rule(&rule).await? {
        return Err(ApiError::NotFound);
    }
    Ok(Json(rule_json(&rule)))
}

#[utoipa::path(delete, path = "/v1/projects/{id}/alerts/{alert_id}", tag = "alerts", security(("session" = [])),
    params(("id" = String, Path), ("alert_id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    Path((id, alert_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let project = owned(&state, &session, &id).await?;
    if state.backend.alerts.delete_rule(project, path_id(&alert_id)?).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

#[utoipa::path(post, path = "/v1/projects/{id}/alerts/{alert_id}/test", tag = "alerts", security(("session" = [])),
    params(("id" = String, Path), ("alert_id" = String, Path)),
    responses((status = 202, body = Value, description = "A test notification is on its way; its attempts appear in the deliveries"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn test(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    Path((id, alert_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let project = owned(&state, &session, &id).await?;
    let rule = rule_of(&state, project, &alert_id).await?;
    let notice = crate::alerts::notify::test_notice(rule.id);
    let event = notice.event_key.clone();
    state.alerts.notify(&rule, notice).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"status": "test", "event": event}))))
}

#[utoipa::path(get, path = "/v1/projects/{id}/alerts/{alert_id}/deliveries", tag = "alerts", security(("session" = [])),
    params(("id" = String, Path), ("alert_id" = String, Path)),
    responses((status = 200, body = Value, description = "{\"deliveries\": [{at, status, attempts, response_status, delivered, event}]}, newest first"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn deliveries(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    Path((id, alert_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let project = owned(&state, &session, &id).await?;
    let rule = rule_of(&state, project, &alert_id).await?;
    let deliveries = state.backend.alerts.deliveries(rule.id, 100).await?;
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
