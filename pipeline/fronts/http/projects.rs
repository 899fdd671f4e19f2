//! `/v1/projects` and `/v1/projects/{id}`. Another user's project is a 404 on every route.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use ledger_stages::ProjectSettings;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{JsonBody, SessionAuth};
use super::{AppState, path_id, timestamp};
use crate::accounts::SettingsPatch;
use crate::error::{ApiError, ErrorBody, FieldProblem};
use crate::store::Project;

/// Project settings; on PATCH, any subset.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsInput {
    /// Ingestion requests per sliding minute, 1 to 4,294,967,295.
    rate_limit_per_minute: Option<u64>,
    /// Ingestion requests per sliding hour, 1 to 4,294,967,295.
    rate_limit_per_hour: Option<u64>,
    /// Logs per UTC day, at least 1.
    daily_quota: Option<u64>,
    /// Days logs are kept, 1 to 3,650.
    retention_days: Option<u64>,
    /// Logs waiting in the queue before 503 `queue_full`, at least 1.
    max_queue_depth: Option<u64>,
}

/// Upper bound of the 64-bit settings: what both databases store in a signed 64-bit column.
const MAX_I64: u64 = i64::MAX as u64;

impl SettingsInput {
    fn checked(self, problems: &mut Vec<FieldProblem>) -> SettingsPatch {
        let mut check = |name: &str, value: Option<u64>, max: u64| -> Option<u64> {
            let v = value?;
            if (1..=max).contains(&v) {
                Some(v)
            } else {
                problems.push(FieldProblem::new(format!("settings.{name}"), format!("must be 1 to {max}")));
                None
            }
        };
        let small = |v: Option<u64>| v.and_then(|v| u32::try_from(v).ok());
        SettingsPatch {
            rate_limit_per_minute: small(check(
                "rate_limit_per_minute",
                self.rate_limit_per_minute,
                u64::from(u32::MAX),
            )),
            rate_limit_per_hour: small(check("rate_limit_per_hour", self.rate_limit_per_hour, u64::from(u32::MAX))),
            daily_quota: check("daily_quota", self.daily_quota, MAX_I64),
            retention_days: small(check("retention_days", self.retention_days, 3650)),
            max_queue_depth: check("max_queue_depth", self.max_queue_depth, MAX_I64),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// 1 to 128 bytes.
    #[schema(required = true, example = "checkout-service")]
    name: Option<String>,
    settings: Option<SettingsInput>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProject {
    name: Option<String>,
    settings: Option<SettingsInput>,
}

fn checked_name(name: Option<String>, required: bool, problems: &mut Vec<FieldProblem>) -> Option<String> {
    match name.map(|n| n.trim().to_owned()) {
        None if required => {
            problems.push(FieldProblem::new("name", "is required"));
            None
        }
        Some(n) if n.is_empty() || n.len() > 128 => {
            problems.push(FieldProblem::new("name", "must be 1 to 128 bytes"));
            None
        }
        other => other,
    }
}

fn checked(
    name: Option<String>,
    settings: Option<SettingsInput>,
    name_required: bool,
) -> Result<(Option<String>, SettingsPatch), ApiError> {
    let mut problems = Vec::new();
    let name = checked_name(name, name_required, &mut problems);
    let patch = settings.unwrap_or_default().checked(&mut problems);
    if problems.is_empty() { Ok((name, patch)) } else { Err(ApiError::Validation(problems)) }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SettingsBody {
    rate_limit_per_minute: u32,
    rate_limit_per_hour: u32,
    daily_quota: u64,
    retention_days: u32,
    max_queue_depth: u64,
}

impl From<&ProjectSettings> for SettingsBody {
    fn from(s: &ProjectSettings) -> Self {
        SettingsBody {
            rate_limit_per_minute: s.rate_limit_per_minute,
            rate_limit_per_hour: s.rate_limit_per_hour,
            daily_quota: s.daily_quota,
            retention_days: s.retention_days,
            max_queue_depth: s.max_queue_depth,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectBody {
    id: String,
    name: String,
    #[schema(format = DateTime)]
    created_at: String,
    settings: SettingsBody,
}

impl From<&Project> for ProjectBody {
    fn from(p: &Project) -> Self {
        ProjectBody {
            id: p.id.to_string(),
            name: p.name.clone(),
            created_at: timestamp(&p.created_at),
            settings: SettingsBody::from(&p.settings),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectList {
    projects: Vec<ProjectBody>,
}

#[utoipa::path(post, path = "/v1/projects", tag = "projects", security(("session" = [])), request_body = CreateProject,
    responses((status = 201, body = ProjectBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    JsonBody(body): JsonBody<CreateProject>,
) -> Result<(StatusCode, Json<ProjectBody>), ApiError> {
    let (name, patch) = checked(body.name, body.settings, true)?;
    let name = name.ok_or_else(|| ApiError::validation("name", "is required"))?;
    let project = state.accounts.create_project(session.user_id, name, patch).await?;
    Ok((StatusCode::CREATED, Json(ProjectBody::from(&project))))
}

#[utoipa::path(get, path = "/v1/projects", tag = "projects", security(("session" = [])),
    responses((status = 200, body = ProjectList, description = "The caller's projects, oldest first"), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
) -> Result<Json<ProjectList>, ApiError> {
    let projects = state.accounts.projects(session.user_id).await?;
    Ok(Json(ProjectList { projects: projects.iter().map(ProjectBody::from).collect() }))
}

#[utoipa::path(get, path = "/v1/projects/{id}", tag = "projects", security(("session" = [])), params(("id" = String, Path)),
    responses((status = 200, body = ProjectBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    Path(id): Path<String>,
) -> Result<Json<ProjectBody>, ApiError> {
    let project = state.accounts.project(session.user_id, path_id(&id)?).await?;
    Ok(Json(ProjectBody::from(&project)))
}

#[utoipa::path(patch, path = "/v1/projects/{id}", tag = "projects", security(("session" = [])), params(("id" = String, Path)),
    request_body = UpdateProject,
    responses((status = 200, body = ProjectBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateProject>,
) -> Result<Json<ProjectBody>, ApiError> {
    let id = path_id(&id)?;
    let (name, patch) = checked(body.name, body.settings, false)?;
    let project = state.accounts.update_project(session.user_id, id, name, patch).await?;
    Ok(Json(ProjectBody::from(&project)))
}

#[utoipa::path(delete, path = "/v1/projects/{id}", tag = "projects", security(("session" = [])), params(("id" = String, Path)),
    responses((status = 204, description = "Deleted; its keys stop working at once"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.accounts.delete_project(session.user_id, path_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
