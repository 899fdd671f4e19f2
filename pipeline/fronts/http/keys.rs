//! `/v1/projects/{id}/keys`: create (the key is shown once), list (never the key), revoke.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use ledger_stages::Scope;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{OptionalJsonBody, SessionAuth};
use crate::error::{ApiError, ErrorBody, FieldProblem};
use crate::fronts::base::{AppState, path_id, timestamp};
use crate::store::KeyRecord;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Up to 128 bytes; default `default`.
    name: Option<String>,
    /// Any of `ingest`, `query`; default `["ingest"]`.
    #[schema(example = json!(["ingest"]))]
    scopes: Option<Vec<String>>,
}

impl CreateKey {
    fn checked(self) -> Result<(String, Vec<Scope>), ApiError> {
        let mut problems = Vec::new();
        let name = self.name.map(|n| n.trim().to_owned()).unwrap_or_else(|| "default".into());
        if name.is_empty() || name.len() > 128 {
            problems.push(FieldProblem::new("name", "must be 1 to 128 bytes"));
        }
        let mut scopes = Vec::new();
        for (i, raw) in self.scopes.unwrap_or_else(|| vec!["ingest".into()]).iter().enumerate() {
            match Scope::parse(raw) {
                Some(scope) => scopes.push(scope),
                None => problems.push(FieldProblem::new(format!("scopes[{i}]"), "must be `ingest` or `query`")),
            }
        }
        scopes.sort();
        scopes.dedup();
        if scopes.is_empty() && problems.is_empty() {
            problems.push(FieldProblem::new("scopes", "must name at least one scope"));
        }
        if problems.is_empty() { Ok((name, scopes)) } else { Err(ApiError::Validation(problems)) }
    }
}

fn scope_names(scopes: &[Scope]) -> Vec<&'static str> {
    scopes.iter().map(|s| s.as_str()).collect()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    id: String,
    name: String,
    /// The full key. It appears in this answer only: the server keeps a hash.
    #[schema(example = "ledger_AbCdEfGhIjKlMnOpQrStUvWxYz012345")]
    key: String,
    /// `ledger_` and the key's first 8 characters, shown in listings.
    prefix: String,
    scopes: Vec<&'static str>,
    #[schema(format = DateTime)]
    created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyBody {
    id: String,
    name: String,
    prefix: String,
    scopes: Vec<&'static str>,
    #[schema(format = DateTime)]
    created_at: String,
    /// Exact to within the key cache's lifetime (5 minutes by default).
    #[schema(format = DateTime)]
    last_used_at: Option<String>,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
}

impl From<&KeyRecord> for KeyBody {
    fn from(k: &KeyRecord) -> Self {
        KeyBody {
            id: k.id.to_string(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            scopes: scope_names(&k.scopes),
            created_at: timestamp(&k.created_at),
            last_used_at: k.last_used_at.as_ref().map(timestamp),
            revoked_at: k.revoked_at.as_ref().map(timestamp),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    keys: Vec<KeyBody>,
}

#[utoipa::path(post, path = "/v1/projects/{id}/keys", tag = "keys", security(("session" = [])), params(("id" = String, Path)),
    request_body(content = CreateKey, description = "Optional"),
    responses((status = 201, body = CreatedKey), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let project_id = path_id(&id)?;
    let (name, scopes) = body.checked()?;
    let new = state.accounts.create_key(session.user_id, project_id, name, scopes).await?;
    let r = &new.record;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            id: r.id.to_string(),
            name: r.name.clone(),
            key: new.key.expose_secret().to_owned(),
            prefix: r.prefix.clone(),
            scopes: scope_names(&r.scopes),
            created_at: timestamp(&r.created_at),
        }),
    ))
}

#[utoipa::path(get, path = "/v1/projects/{id}/keys", tag = "keys", security(("session" = [])), params(("id" = String, Path)),
    responses((status = 200, body = KeyList), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    Path(id): Path<String>,
) -> Result<Json<KeyList>, ApiError> {
    let keys = state.accounts.keys(session.user_id, path_id(&id)?).await?;
    Ok(Json(KeyList { keys: keys.iter().map(KeyBody::from).collect() }))
}

#[utoipa::path(delete, path = "/v1/projects/{id}/keys/{key_id}", tag = "keys", security(("session" = [])),
    params(("id" = String, Path), ("key_id" = String, Path)),
    responses((status = 204, description = "Revoked: refused from the next request on, on every instance"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    SessionAuth(session): SessionAuth,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.accounts.revoke_key(session.user_id, path_id(&id)?, path_id(&key_id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_scope_is_ingest_and_unknown_scopes_are_named() {
        let (name, scopes) = CreateKey::default().checked().expect("valid");
        assert_eq!((name.as_str(), scopes), ("default", vec![Scope::Ingest]));
        let err = CreateKey { name: None, scopes: Some(vec!["query".into(), "admin".into()]) }
            .checked()
            .expect_err("bad scope");
        let ApiError::Validation(problems) = err else { panic!("not a validation error") };
        assert_eq!(problems[0].field, "scopes[1]");
        assert!(CreateKey { name: None, scopes: Some(vec![]) }.checked().is_err());
    }
}
