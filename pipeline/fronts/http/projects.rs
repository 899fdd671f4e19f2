//! `/v1/projects` and `/v1/projects/{id}`. Another user's project is a 404 on every route.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use ledger_stages::rules::StageRules;
use ledger_stages::{ProjectSettings, SettingsPatch};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{JsonBody, SessionAuth};
use crate::error::{ApiError, ErrorBody, FieldProblem};
use crate::fronts::base::{AppState, path_id, timestamp};
use crate::store::Project;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// 1 to 128 bytes.
    #[schema(required = true, example = "checkout-service")]
    name: Option<String>,
    /// Any subset of the settings.
    settings: Option<SettingsPatch>,
    /// The project's own rules for the parse, redact and sample stages.
    stages: Option<StageRules>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProject {
    name: Option<String>,
    /// Any subset of the settings.
    settings: Option<SettingsPatch>,
    /// The project's own stage rules, replacing its current ones whole (`{}` clears them).
    stages: Option<StageRules>,
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

async fn checked(
    state: &AppState,
    name: Option<String>,
    settings: Option<SettingsPatch>,
    stages: Option<&StageRules>,
    name_required: bool,
) -> Result<(Option<String>, SettingsPatch), ApiError> {
    let mut problems = Vec::new();
    let name = checked_name(name, name_required, &mut problems);
    let patch = settings.unwrap_or_default();
    for (setting, reason) in state.accounts.settings_problems(&patch) {
        problems.push(FieldProblem::new(format!("settings.{setting}"), reason));
    }
    if let Some(stages) = stages {
        // Checked against the project budget and by compiling them as the stages will, with the daemon's
        // hash key, off the async workers.
        let key = state.ingestion.rules.hash_key();
        for problem in stages.clone().check(key).await {
            problems.push(FieldProblem::new(problem.field, problem.reason));
        }
    }
    if problems.is_empty() { Ok((name, patch)) } else { Err(ApiError::Validation(problems)) }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectBody {
    id: String,
    name: String,
    #[schema(format = DateTime)]
    created_at: String,
    settings: ProjectSettings,
    /// The project's own stage rules (empty lists when it has none).
    stages: StageRules,
}

impl From<&Project> for ProjectBody {
    fn from(p: &Project) -> Self {
        ProjectBody {
            id: p.id.to_string(),
            name: p.name.clone(),
            created_at: timestamp(&p.created_at),
            settings: p.settings.clone(),
            stages: p.stages.as_deref().cloned().unwrap_or_default(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectList {
    projects: Vec<ProjectBody>,
}

#[utoipa::path(post, path = "/v1/projects", tag = "projects", security(("session" = [])), request_body = CreateProject,
    responses((status = 201, body = ProjectBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    JsonBody(body): JsonBody<CreateProject>,
) -> Result<(StatusCode, Json<ProjectBody>), ApiError> {
    let (name, patch) = checked(&state, body.name, body.settings, body.stages.as_ref(), true).await?;
    let name = name.ok_or_else(|| ApiError::validation("name", "is required"))?;
    let project = state.accounts.create_project(session.user_id, name, patch, body.stages).await?;
    Ok((StatusCode::CREATED, Json(ProjectBody::from(&project))))
}

#[utoipa::path(get, path = "/v1/projects", tag = "projects", security(("session" = [])),
    responses((status = 200, body = ProjectList, description = "The caller's projects, oldest first"), (status = 401, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
) -> Result<Json<ProjectList>, ApiError> {
    let projects = state.accounts.projects(session.user_id).await?;
    Ok(Json(ProjectList { projects: projects.iter().map(ProjectBody::from).collect() }))
}

#[utoipa::path(get, path = "/v1/projects/{id}", tag = "projects", security(("session" = [])), params(("id" = String, Path)),
    responses((status = 200, body = ProjectBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get(
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
pub(crate) async fn update(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateProject>,
) -> Result<Json<ProjectBody>, ApiError> {
    let id = path_id(&id)?;
    let (name, patch) = checked(&state, body.name, body.settings, body.stages.as_ref(), false).await?;
    let project = state.accounts.update_project(session.user_id, id, name, patch, body.stages).await?;
    Ok(Json(ProjectBody::from(&project)))
}

#[utoipa::path(delete, path = "/v1/projects/{id}", tag = "projects", security(("session" = [])), params(("id" = String, Path)),
    responses((status = 204, description = "Deleted; its keys stop working at once"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.accounts.delete_project(session.user_id, path_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
