//! `/openapi.json`: the OpenAPI 3 document of every REST route, generated from the handlers' annotations so
//! it cannot drift from the code.

use axum::Json;
use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{accounts, alerts, analytics, health, ingest, keys, logs, projects, tail};
use crate::error::{ErrorBody, ErrorDetail, FieldProblem};

#[derive(OpenApi)]
#[openapi(
    info(title = "Ledger", description = "Log ingestion and query. The contract is API.md; errors have the body ErrorBody."),
    paths(
        accounts::register, accounts::login, accounts::logout, accounts::me,
        projects::create, projects::list, projects::get, projects::update, projects::delete,
        keys::create, keys::list, keys::revoke,
        ingest::ingest, logs::list, logs::get, tail::tail,
        alerts::create, alerts::list, alerts::get, alerts::update, alerts::delete, alerts::test, alerts::deliveries,
        analytics::error_rate, analytics::volume, analytics::top_errors, analytics::usage,
        health::health, health::deep,
    ),
    components(schemas(ErrorBody, ErrorDetail, FieldProblem, health::Check)),
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

/// The errors a route can answer by what it takes, beyond those its handler names: every status a client
/// can meet is documented (checked from outside by schemathesis in CI).
fn with_every_error(mut doc: Value) -> Value {
    let error = json!({"description": "See the error's `code` (API.md)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}});
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return doc };
    for (path, item) in paths.iter_mut() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let Some(item) = item.as_object_mut() else { continue };
        for operation in item.values_mut() {
            let security = operation.get("security").map(Value::to_string).unwrap_or_default();
            let has_body = operation.get("requestBody").is_some();
            let parameters = operation.get("parameters").map(Value::to_string).unwrap_or_default();
            let mut statuses = vec![
                ("400", "bad_request: a malformed body or parameter"),
                ("503", "unavailable: a dependency is down or the instance is busy; with Retry-After"),
            ];
            if !security.is_empty() {
                statuses.push(("401", "unauthorized: missing, malformed, unknown, expired or revoked credential"));
            }
            if security.contains("api_key") {
                statuses.push(("403", "insufficient_scope"));
                statuses.push(("404", "not_found: another tenant's or an unknown project"));
            }
            if parameters.contains("\"in\":\"path\"") {
                statuses.push(("404", "not_found"));
            }
            if has_body {
                statuses.extend([
                    ("408", "request_timeout: the body did not arrive in time"),
                    ("413", "payload_too_large"),
                    ("415", "unsupported_media_type"),
                    ("422", "validation_failed"),
                ]);
            }
            let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) else { continue };
            for (status, description) in statuses {
                if !responses.contains_key(status) {
                    let mut response = error.clone();
                    response["description"] = Value::String(description.to_owned());
                    responses.insert(status.to_owned(), response);
                }
            }
        }
    }
    doc
}

pub(crate) async fn document() -> Json<Value> {
    static DOCUMENT: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    Json(DOCUMENT.get_or_init(|| with_every_error(serde_json::to_value(ApiDoc::openapi()).unwrap_or_default())).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_documents_the_errors_it_can_answer() {
        let doc = with_every_error(serde_json::to_value(ApiDoc::openapi()).expect("serializes"));
        let login = &doc["paths"]["/v1/login"]["post"]["responses"];
        for status in ["400", "408", "413", "415", "422", "429", "503"] {
            assert!(login.get(status).is_some(), "login lacks {status}");
        }
        let ingest = &doc["paths"]["/v1/logs"]["post"]["responses"];
        for status in ["400", "401", "403", "408", "413", "415", "422", "429", "503"] {
            assert!(ingest.get(status).is_some(), "ingest lacks {status}");
        }
        assert!(doc["paths"]["/v1/projects/{id}"]["get"]["responses"].get("404").is_some());
    }

    #[test]
    fn every_reference_resolves() {
        fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        out.push(r);
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = with_every_error(serde_json::to_value(ApiDoc::openapi()).expect("serializes"));
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.iter().any(|r| r.ends_with("/ProjectSettings")), "{found:?}");
        for r in found {
            let name = r.trim_start_matches("#/components/schemas/");
            assert!(doc["components"]["schemas"].get(name).is_some(), "{r} does not resolve");
        }
    }

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
