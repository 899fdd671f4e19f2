//! `/openapi.json`: the OpenAPI 3 document of every REST route, generated from the handlers' annotations so
//! it cannot drift from the code.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{accounts, analytics, health, ingest, keys, logs, projects};
use crate::error::{ErrorBody, ErrorDetail, FieldProblem};

#[derive(OpenApi)]
#[openapi(
    info(title = "Ledger", description = "Log ingestion and query. The contract is API.md; errors have the body ErrorBody."),
    paths(
        accounts::register, accounts::login, accounts::logout, accounts::me,
        projects::create, projects::list, projects::get, projects::update, projects::delete,
        keys::create, keys::list, keys::revoke,
        ingest::ingest, logs::list, logs::get,
        analytics::error_rate, analytics::volume, analytics::top_errors, analytics::usage,
        health::health, health::deep,
    ),
    components(schemas(ErrorBody, ErrorDetail, FieldProblem)),
    modifiers(&SecuritySchemes),
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |format: &str, description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format(format)
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme("session", bearer("JWT", "A session token from /v1/register or /v1/login"));
        components
            .add_security_scheme("api_key", bearer("ledger_...", "A project's API key (also accepted as X-API-Key)"));
    }
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_every_account_route() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("serializes");
        for path in [
            "/v1/register",
            "/v1/login",
            "/v1/logout",
            "/v1/me",
            "/v1/projects",
            "/v1/projects/{id}",
            "/v1/projects/{id}/keys",
            "/v1/projects/{id}/keys/{key_id}",
            "/health",
            "/health/deep",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
    }
}
